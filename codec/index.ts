/**
 * codec: wire envelopes (msgpack + strict schemas), tensor frames, checksums, blockwise
 * quantization (int8 / int4), erasure coding and checksummed stripes. Depends on core/.
 */
export { CODEC_LIMITS, type CodecLimits } from './limits.ts'
export { CodecErrorCode, type CodecErrorCodeT, codecError, NonFiniteError, TooFewFragmentsError } from './errors.ts'
export { checksum64 } from './checksum.ts'
export { type DType, DTYPE_CODES, DTYPE_BITS, dtypeFromCode, isDType, byteLength, shapeElements, f32ToBf16, bf16ToF32 } from './dtype.ts'
export {
  type QuantBits,
  type Quantized,
  type QuantOptions,
  quantize,
  dequantize,
  dequantizeAccumulate,
  quantizedSize,
  validateQuantOptions,
  validateQuantized
} from './quant.ts'
export {
  FRAME_MAGIC,
  FRAME_VERSION,
  type TensorView,
  type FrameHeader,
  type Frame,
  type DecodedFrame,
  type EncodeFrameOptions,
  type AssemblerInit,
  encodeTensorFrames,
  encodeQuantizedFrames,
  concatFrame,
  frameHeaderBytes,
  peekHeaderBytes,
  decodeFrameHeader,
  decodeFrame,
  quantizedChunk,
  FrameReader,
  TensorAssembler
} from './frame.ts'
export {
  ENVELOPE_VERSION,
  type EnvelopeSchemas,
  type Envelope,
  type EnvelopeCodec,
  type EnvelopeCodecInit,
  createEnvelopeCodec,
  zBytes
} from './envelope.ts'
export { scanMsgpack } from './msgpack-scan.ts'
export {
  type ErasureCoder,
  type ErasureCoderName,
  ErasureCoderError,
  validateErasureParams,
  createWasmErasureCoder
} from './erasure.ts'
export { createSimdErasureCoder, simdAvailable, type SimdErasureCoder, type SimdStripe } from './erasure-simd.ts'
export { rsGeneratorMatrix, reconstructionRows, type GfMatrix } from './gf256.ts'
export { createErasureCoder, erasureCoderCache } from './erasure-factory.ts'
export {
  FRAGMENT_MAGIC,
  FRAGMENT_VERSION,
  FRAGMENT_HEADER_BYTES,
  type StripeFragment,
  type StripeExpectation,
  type DecodedStripe,
  fragmentSize,
  encodeStripe,
  encodeFragment,
  decodeFragment,
  decodeStripe
} from './stripe.ts'
