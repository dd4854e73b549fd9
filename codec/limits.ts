/**
 * Caps for everything codec/ decodes. Each is checked before allocating and listed, with the
 * test that exceeds it, in docs/LIMITS.md.
 */
export const CODEC_LIMITS = Object.freeze({
  /** Largest msgpack control envelope accepted (bytes, before unpacking). Gossip carries only these. */
  maxEnvelopeBytes: 256 * 1024,
  /** Deepest nesting of arrays/maps inside an envelope. */
  maxEnvelopeDepth: 16,
  /** Most items (array elements + map entries) in one envelope, all levels together. */
  maxEnvelopeItems: 16_384,
  /** Largest tensor-frame body (bytes): msgpackr and the transports slow down past ~4 MiB. */
  maxFrameBodyBytes: 4 * 1024 * 1024,
  /** Highest tensor rank (number of dimensions) in a frame header. */
  maxTensorRank: 8,
  /** Largest whole tensor a TensorAssembler will allocate (bytes). */
  maxTensorBytes: 1024 * 1024 * 1024,
  /** Most frames one tensor may be cut into. */
  maxChunksPerTensor: 1 << 20,
  /** Largest quantization block (elements); DeepSpeed's hard limit is 16k. */
  maxQuantBlockSize: 1 << 16,
  /** Reed-Solomon over GF(2^8): data + parity fragments. */
  maxErasureTotal: 255,
  /** Largest single fragment handed to the erasure coder (bytes). */
  maxFragmentBytes: 256 * 1024 * 1024,
  /** Largest whole stripe, k + m fragments (bytes): the wasm coder's memory never shrinks. */
  maxStripeBytes: 1024 * 1024 * 1024
})

export type CodecLimits = typeof CODEC_LIMITS
