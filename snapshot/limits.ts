/**
 * Caps and defaults of snapshot/. Each cap is checked before anything sized by it is allocated
 * and is listed, with the test that exceeds it, in docs/LIMITS.md.
 */
export const SNAPSHOT_LIMITS = Object.freeze({
  /** Largest serialized rank state (bytes): header + rng + 3 f32 buffers (weights, Adam m, v). */
  maxStateBytes: 16 * 1024 * 1024 * 1024,
  /**
   * Most bytes a capture copies in one turn of the trainer's event loop (capture.ts): a larger
   * state is copied in pieces of this size with a turn between them, so a 1.5 GB state never
   * holds the loop (and the heartbeats it sends) for more than one piece, page faults of a
   * fresh buffer included.
   */
  captureChunkBytes: 32 * 1024 * 1024,
  /** Largest opaque rng state carried in a snapshot (bytes). */
  maxRngBytes: 4096,
  /** Longest owner peer id carried in a fragment label (bytes of UTF-8). */
  maxPeerIdBytes: 256,
  /**
   * Payload bytes per erasure stripe segment. A state is cut into segments of at most this
   * size, each Reed-Solomon coded on its own, so the coder never holds more than
   * (k+m)/k × this (codec's maxStripeBytes is 1 GiB and the wasm coder's memory never shrinks).
   * 8 MiB keeps every fragment frame (8 MiB / k + 48 bytes) within one stream write for k >= 2,
   * so an in-process receiver gets it as one chunk and stores a view instead of a copy.
   */
  segmentBytes: 8 * 1024 * 1024,
  /** Most segments in one snapshot (maxStateBytes / smallest segment size is far below this). */
  maxSegments: 4096,
  /** Largest stored fragment (label excluded), all segments together (bytes). */
  maxFragmentBytes: 8 * 1024 * 1024 * 1024,
  /** Default memory cap of one node's FragmentStore (bytes of fragments held). */
  defaultStoreBytes: 4 * 1024 * 1024 * 1024,
  /** Versions of one owner a store holds at once (the recovery point, newer complete ones, one in flight). */
  maxVersionsPerOwner: 3,
  /** Owners a store holds fragments for at once. */
  maxOwnersPerStore: 4096,
  /** Epochs a departed owner's fragments outlive the recovery point before they are dropped (unless forgotten sooner). */
  maxDepartedEpochs: 4,
  /** Manifests remembered per owner (newest first). */
  maxManifestsPerOwner: 3,
  /** Owners whose manifests are remembered. */
  maxManifestOwners: 4096,
  /** Entries in a LIST reply (versions × indices a holder reports for one owner). */
  maxListEntries: 64,
  /** Bytes of a fetch/put request or reply header read before the body (label, error text). */
  maxControlBytes: 4096,
  /** Largest stream write used for fragment bodies (bytes; mesh's maxStreamChunkBytes). */
  streamChunkBytes: 8 * 1024 * 1024,
  /** Default: a fragment transfer with no bytes moving for this long is abandoned (ms). */
  defaultIdleTimeoutMs: 5000,
  /** Default: times a put refused as FUTURE_EPOCH (the holder has not installed the view yet) is retried. */
  defaultPutRetries: 5,
  /** Default: wait between put retries (ms). */
  defaultPutRetryMs: 200,
  /** Most coder threads one node may run (createThreadCoder's `threads`). */
  maxCoderThreads: 8,
  /**
   * Jobs (a seal, a segment to code, a state to rebuild) waiting for or running on a node's
   * coder threads at once. A placement keeps at most two per thread in flight, so only callers
   * piling up placements and recoveries reach it; past it a job is refused with
   * LimitExceededError before anything is copied for it.
   */
  maxCoderJobs: 64
})

export type SnapshotLimits = typeof SNAPSHOT_LIMITS

/** Caps of the safetensors reader and writer (snapshot/safetensors.ts), checked before allocating. */
export const SAFETENSORS_LIMITS = Object.freeze({
  /** Largest JSON header read or written (bytes; the format's own readers refuse more than 100 MB). */
  maxHeaderBytes: 100_000_000,
  /** Most tensors one file may declare (GPT-2 XL has 582 with its attention buffers). */
  maxTensors: 65_536,
  /** Most dimensions of one tensor. */
  maxDims: 8,
  /** Largest tensor read into memory at once (elements; converted to f32, 4 bytes each). */
  maxTensorElements: 2 ** 31
})

/** Caps of GPT checkpoints read for `--init-from` and `zeromesh sample` (snapshot/checkpoint.ts). */
export const CHECKPOINT_LIMITS = Object.freeze({
  /** Largest config.json read (bytes). */
  maxConfigBytes: 1 << 20,
  /** Most parameters of a checkpoint's model (f32 in memory: 8 GiB; GPT-2 XL has 1.6 billion). */
  maxParameters: 2 ** 31
})
