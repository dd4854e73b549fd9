/**
 * Caps for the CUDA backend, checked before allocating or launching (LimitExceededError /
 * InvalidArgumentError). Listed in docs/LIMITS.md.
 */
export const CUDA_LIMITS = Object.freeze({
  /** Largest single tensor (bytes). */
  maxTensorBytes: 2 ** 38,
  /** Highest tensor rank. */
  maxRank: 8,
  /** Most elements an elementwise / quantizer op takes: error flags pack an element index in 32 bits. */
  maxOpElements: 2 ** 32 - 1,
  /** Attention head size supported by the generic kernels (the flash path is D = 64). */
  maxHeadSize: 256,
  /** Largest layernorm row the register-resident path takes; longer rows use the looped path. */
  lnMaxRegisterChunks: 8,
  /** cuBLAS / cuBLASLt workspace (bytes). */
  blasWorkspaceBytes: 32 * 2 ** 20,
  /** Allocation granularity of the caching allocator: small and large rounding (bytes). */
  smallRoundBytes: 512,
  largeRoundBytes: 2 * 2 ** 20,
  /** Sizes up to this go to the small pool's rounding. */
  smallPoolMaxBytes: 2 ** 20,
  /** Page-locked host memory one backend holds (hostAlloc): pinned pages cannot be swapped, so a runaway caller must not take the host's memory. */
  maxPinnedBytes: 64 * 2 ** 30,
  /** Events (fences) one backend has created: unpolled fences keep theirs until dispose. */
  maxEvents: 4096
})
