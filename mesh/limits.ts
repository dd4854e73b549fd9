import { CODEC_LIMITS } from '../codec/index.ts'

/** Caps and defaults of mesh/. Listed with their tests in docs/LIMITS.md. */
export const MESH_LIMITS = Object.freeze({
  /** Largest gossip message (bytes of data, before any framing); js gossipsub refuses > 4 MB. */
  maxGossipBytes: CODEC_LIMITS.maxEnvelopeBytes,
  /**
   * Bytes a stream accepts from its writer before write() waits: libp2p's own send() kept
   * returning true while gigabytes queued, so we cap the queue ourselves.
   */
  maxStreamWriteBufferBytes: 8 * 1024 * 1024,
  /** Largest single write() (bytes); bigger buffers are split by the caller. */
  maxStreamChunkBytes: 8 * 1024 * 1024,
  /** Bytes an in-memory stream buffers for a reader that is not reading. */
  maxStreamReadBufferBytes: 8 * 1024 * 1024,
  /** Longest protocol or topic name. */
  maxNameBytes: 256,
  /** Peers remembered in per-peer bookkeeping of strangers (refused peers, rejection counts); the oldest entry goes first. */
  maxTrackedPeers: 10_000
})
