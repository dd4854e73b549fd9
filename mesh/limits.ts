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
  maxTrackedPeers: 10_000,
  /**
   * Peers whose announced addresses a node remembers, to dial them again when the connection is
   * lost (a partition that heals: gossip cannot carry announcements across it); the peer heard
   * from longest ago goes first.
   */
  maxRememberedPeers: 1024,
  /** Remembered peers dialled again per announcement period (the rest wait for later periods). */
  redialsPerPeriod: 8,
  /** The longest wait between two redials of one unreachable peer (ms); it doubles from the announcement period. */
  maxRedialBackoffMs: 10_000
})
