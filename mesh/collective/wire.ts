import { InvalidArgumentError, ProtocolError } from '../../core/index.ts'
import {
  bf16ToF32,
  dequantize,
  dequantizeAccumulate,
  f32ToBf16,
  quantize,
  quantizedSize,
  validateQuantOptions,
  type QuantBits,
  type Quantized
} from '../../codec/index.ts'
import { ENCODINGS, type EncodingCode, type MessageHeader } from './message.ts'

/**
 * How f32 values travel: raw f32, bf16 (rounded to nearest even), or blockwise-quantized
 * int8 / int4 in the codec/quant.ts format (per-block f32 scales, then codes).
 */
export type Wire = { kind: 'f32' } | { kind: 'bf16' } | { kind: 'quant'; bits: QuantBits; blockSize: number }

export const F32_WIRE: Wire = Object.freeze({ kind: 'f32' })
export const BF16_WIRE: Wire = Object.freeze({ kind: 'bf16' })

if (new Uint8Array(new Uint16Array([1]).buffer)[0] !== 1) {
  // Bodies are the host's typed-array bytes; the wire format is little-endian.
  throw new InvalidArgumentError('zeromesh collectives need a little-endian host')
}

/** Checks a wire description given by a caller. */
export function validateWire(w: Wire): void {
  if (w.kind === 'quant') validateQuantOptions({ bits: w.bits, blockSize: w.blockSize })
  else if (w.kind !== 'f32' && w.kind !== 'bf16') throw new InvalidArgumentError(`unknown wire encoding ${String((w as { kind: unknown }).kind)}`)
}

export function encodingOf(w: Wire): EncodingCode {
  if (w.kind === 'f32') return ENCODINGS.f32
  if (w.kind === 'bf16') return ENCODINGS.bf16
  return w.bits === 8 ? ENCODINGS.q8 : ENCODINGS.q4
}

export function blockSizeOf(w: Wire): number {
  return w.kind === 'quant' ? w.blockSize : 0
}

/** Body bytes of `n` elements. */
export function bodyBytesOf(w: Wire, n: number): number {
  if (w.kind === 'f32') return 4 * n
  if (w.kind === 'bf16') return 2 * n
  const s = quantizedSize(n, { bits: w.bits, blockSize: w.blockSize })
  return s.scaleBytes + s.dataBytes
}

/**
 * Elements per pipelined chunk so a body stays within `chunkBytes` (at least one quantization
 * block). Quantized chunks hold whole blocks, so every chunk quantizes on its own and block
 * boundaries are the same as quantizing the whole slice at once.
 */
export function chunkElementsOf(w: Wire, chunkBytes: number): number {
  if (w.kind === 'f32') return Math.max(1, Math.floor(chunkBytes / 4))
  if (w.kind === 'bf16') return Math.max(1, Math.floor(chunkBytes / 2))
  const blockBytes = 4 + (w.bits === 8 ? w.blockSize : w.blockSize / 2)
  return Math.max(1, Math.floor(chunkBytes / blockBytes)) * w.blockSize
}

/** Encodes `src` as a message body. */
export function encodeBody(w: Wire, src: Float32Array): Uint8Array {
  if (w.kind === 'f32') return new Uint8Array(src.slice().buffer)
  if (w.kind === 'bf16') {
    const out = new Uint16Array(src.length)
    for (let i = 0; i < src.length; i++) out[i] = f32ToBf16(src[i]!)
    return new Uint8Array(out.buffer)
  }
  const { blocks } = quantizedSize(src.length, w)
  const body = new Uint8Array(bodyBytesOf(w, src.length))
  const q: Quantized = {
    bits: w.bits,
    blockSize: w.blockSize,
    length: src.length,
    scales: new Float32Array(body.buffer, 0, blocks),
    data: body.subarray(blocks * 4)
  }
  quantize(src, w, q)
  return body
}

/** Checks that a received header carries `n` elements in `w`'s encoding; ProtocolError otherwise. */
export function checkBody(w: Wire, h: MessageHeader, n: number): void {
  checkShape(h, n, encodingOf(w), blockSizeOf(w), bodyBytesOf(w, n))
}

/** Checks that a received header carries `n` raw 32-bit words (encoding u32, 4n body bytes); ProtocolError otherwise. */
export function checkWords(h: MessageHeader, n: number): void {
  checkShape(h, n, ENCODINGS.u32, 0, 4 * n)
}

function checkShape(h: MessageHeader, n: number, encoding: EncodingCode, blockSize: number, bodyBytes: number): void {
  if (h.encoding !== encoding || h.blockSize !== blockSize || h.elements !== n || h.bodyBytes !== bodyBytes) {
    throw new ProtocolError(
      'COLLECTIVE_SHAPE_MISMATCH',
      `expected ${n} elements as encoding ${encoding}/${blockSize} (${bodyBytes} bytes), got ${h.elements} as ${h.encoding}/${h.blockSize} (${h.bodyBytes} bytes)`,
      { expected: n, got: h.elements }
    )
  }
}

function aligned(body: Uint8Array, align: number): Uint8Array {
  return body.byteOffset % align === 0 ? body : body.slice()
}

/**
 * Decodes a (checked) body into `out` (length n): out = v, or out = f32(out + v) with
 * `accumulate`. Codes outside the symmetric range and bad scales are ProtocolErrors.
 */
export function decodeBody(w: Wire, body: Uint8Array, out: Float32Array, accumulate: boolean): void {
  const n = out.length
  if (w.kind === 'f32') {
    const b = aligned(body, 4)
    const v = new Float32Array(b.buffer, b.byteOffset, n)
    if (!accumulate) out.set(v)
    else for (let i = 0; i < n; i++) out[i] = out[i]! + v[i]!
    return
  }
  if (w.kind === 'bf16') {
    const b = aligned(body, 2)
    const v = new Uint16Array(b.buffer, b.byteOffset, n)
    const o32 = new Uint32Array(out.buffer, out.byteOffset, n)
    if (!accumulate) for (let i = 0; i < n; i++) o32[i] = v[i]! << 16
    else for (let i = 0; i < n; i++) out[i] = out[i]! + bf16ToF32(v[i]!)
    return
  }
  const { blocks } = quantizedSize(n, w)
  const scales = new Float32Array(blocks)
  new Uint8Array(scales.buffer).set(body.subarray(0, blocks * 4))
  const q: Quantized = { bits: w.bits, blockSize: w.blockSize, length: n, scales, data: body.subarray(blocks * 4) }
  if (accumulate) dequantizeAccumulate(q, out)
  else dequantize(q, out)
}

/** What a receiver gets after a round trip through `w` (for own data and serial references). */
export function roundTrip(w: Wire, src: Float32Array): Float32Array {
  if (w.kind === 'f32') return src.slice()
  const out = new Float32Array(src.length)
  decodeBody(w, encodeBody(w, src), out, false)
  return out
}
