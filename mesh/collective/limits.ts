import { CODEC_LIMITS } from '../../codec/index.ts'
import { MESH_LIMITS } from '../limits.ts'

/**
 * Caps and defaults of the collectives. Every cap is checked before anything sized by it is
 * allocated; each is listed with its test in docs/LIMITS.md.
 */
export const COLLECTIVE_LIMITS = Object.freeze({
  /** Header bytes of one collective message (fixed). */
  headerBytes: 64,
  /**
   * Largest message body accepted from a peer: header + body must fit one stream write
   * (MESH_LIMITS.maxStreamChunkBytes).
   */
  maxMessageBodyBytes: MESH_LIMITS.maxStreamChunkBytes - 64,
  /** Largest `chunkBytes` a collective may be configured with (one pipelined message). */
  maxChunkBytes: CODEC_LIMITS.maxFrameBodyBytes,
  /** Smallest `chunkBytes` (tests use small chunks to exercise pipelining). */
  minChunkBytes: 64,
  /** Most elements in one collective call (and in its output buffer). */
  maxElements: 1 << 30,
  /** Most members in one view a collective runs over. */
  maxGroupSize: 4096,
  /** Most tier label keys (nesting levels). */
  maxTiers: 4,
  /**
   * Bytes of messages for operations this node has not started yet, buffered per peer; past
   * it the reader stops reading that peer's stream (backpressure), it never drops or grows.
   */
  maxPendingBytesPerPeer: 32 * 1024 * 1024,
  /** How far ahead (in operations) a peer's message may be before it is a protocol error. */
  maxOpsAhead: 1 << 16,
  /**
   * Bytes of reused body and partial-sum buffers a collective instance keeps while they are
   * not in use (pool.ts); a buffer given back past it is dropped for the garbage collector.
   */
  maxPoolIdleBytes: 32 * 1024 * 1024,
  /** Largest pooled buffer (an f32 partial sum of a bf16 chunk of `maxChunkBytes`); larger ones are plain allocations. */
  maxPooledBufferBytes: 2 * CODEC_LIMITS.maxFrameBodyBytes
})

/** Defaults of the options of {@link createCollective}. */
export const COLLECTIVE_DEFAULTS = Object.freeze({
  /** Bytes of payload per pipelined message. */
  chunkBytes: 1024 * 1024,
  /**
   * No-progress bound (ms) when the caller passes none. Production passes one derived from the
   * failure detector (membership `detectionBoundMs` plus a transfer allowance).
   */
  timeoutMs: 10_000,
  /** qwZ weight block (elements): ZeRO++'s ~4096. */
  weightBlockSize: 4096,
  /** qgZ gradient block (elements): smaller blocks bound int4 error more tightly. */
  gradBlockSize: 512,
  /**
   * How long (ms) a member listens for failure notices before it settles on who failed, so
   * every survivor names where a failure started, not a member that passed it on: after its
   * stream was reset (the resetter's notice, sent first, travels on another path), and after
   * a no-progress timeout (here or announced by another member: on a ring every member
   * downstream of a stall times out, and the chain of "timed out waiting on" leads to it).
   */
  noticeGraceMs: 250,
  /** First retry delay (ms) when a peer has not registered the protocol yet. */
  openRetryMs: 5
})
