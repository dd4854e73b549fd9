import { InvalidArgumentError } from '../core/index.ts'
import { NonFiniteError, codecError, CodecErrorCode } from './errors.ts'
import { CODEC_LIMITS } from './limits.ts'

/**
 * Blockwise symmetric absmax quantization (the ZeRO++ qwZ / qgZ format).
 *
 * For each block of `blockSize` consecutive elements (the last may be shorter):
 *   absmax = max |x|                                 (f32)
 *   scale  = f32(absmax / qmax), raised to the smallest positive f32 if that underflows to 0,
 *            and lowered by one ulp if f32(qmax * scale) would overflow to Infinity
 *   q      = clamp(roundHalfEven(f32(x / scale)), -qmax, qmax)     (0 when absmax is 0)
 * with qmax = 127 (int8) or 7 (int4). Dequantization is x' = f32(q * scale), so
 * |x - x'| <= scale / 2 (plus one f32 rounding of the product).
 *
 * Every arithmetic step is a single IEEE f32 operation (a double result rounded once with
 * Math.fround equals the f32 result for + - * /), so a CUDA kernel using `__fdiv_rn`,
 * `rintf` and `__fmul_rn` produces byte-identical output.
 *
 * int4 packs element 2i in the low nibble and 2i+1 in the high nibble of byte i, as 4-bit
 * two's complement; an odd tail leaves the last high nibble 0. The codes -128 (int8) and -8
 * (int4) are never produced and are rejected on input.
 */
export type QuantBits = 8 | 4

/** A quantized vector: per-block scales plus the packed integer codes. */
export interface Quantized {
  bits: QuantBits
  blockSize: number
  /** Number of logical elements. */
  length: number
  /** One f32 scale per block: ceil(length / blockSize) entries. */
  scales: Float32Array
  /** int8: `length` bytes (as two's complement); int4: ceil(length / 2) bytes. */
  data: Uint8Array
}

export interface QuantOptions {
  bits: QuantBits
  blockSize: number
}

const SMALLEST_F32 = 1.401298464324817e-45

/** Checks bits and block size; int4 blocks must be even so chunk boundaries fall on bytes. */
export function validateQuantOptions(opts: QuantOptions): void {
  if (opts.bits !== 8 && opts.bits !== 4) throw new InvalidArgumentError(`quantization bits must be 8 or 4, got ${String(opts.bits)}`)
  const bs = opts.blockSize
  if (!Number.isSafeInteger(bs) || bs < 1 || bs > CODEC_LIMITS.maxQuantBlockSize) {
    throw new InvalidArgumentError(`block size must be an integer in [1, ${CODEC_LIMITS.maxQuantBlockSize}], got ${bs}`)
  }
  if (opts.bits === 4 && bs % 2 !== 0) throw new InvalidArgumentError(`int4 block size must be even, got ${bs}`)
}

/** Bytes of scales and codes for `length` elements. */
export function quantizedSize(length: number, opts: QuantOptions): { blocks: number; scaleBytes: number; dataBytes: number } {
  const blocks = Math.ceil(length / opts.blockSize)
  return { blocks, scaleBytes: blocks * 4, dataBytes: opts.bits === 8 ? length : Math.ceil(length / 2) }
}

const f32Bits = new Float32Array(1)
const u32Bits = new Uint32Array(f32Bits.buffer)
function nextDownF32(x: number): number {
  f32Bits[0] = x
  u32Bits[0]! -= 1
  return f32Bits[0]!
}

// Adding then subtracting 1.5 * 2^52 rounds a double of magnitude < 2^51 to an integer with
// ties to even (the default IEEE rounding), without a call or a branch.
const RNE = 6755399441055744
const FLT_MAX = 3.4028234663852886e38

/**
 * Quantizes `src`. Throws {@link NonFiniteError} (naming the first offending element and the
 * count) if any element is NaN or ±Inf. `out` may be passed to avoid allocating.
 */
export function quantize(src: Float32Array, opts: QuantOptions, out?: Quantized): Quantized {
  validateQuantOptions(opts)
  const { bits, blockSize } = opts
  const n = src.length
  const size = quantizedSize(n, opts)
  const q: Quantized = out ?? {
    bits,
    blockSize,
    length: n,
    scales: new Float32Array(size.blocks),
    data: new Uint8Array(size.dataBytes)
  }
  if (q.bits !== bits || q.blockSize !== blockSize || q.length !== n || q.scales.length !== size.blocks || q.data.length !== size.dataBytes) {
    throw new InvalidArgumentError('output buffer does not match the quantization shape')
  }
  const qmax = bits === 8 ? 127 : 7
  const data = q.data
  const codes = new Int8Array(data.buffer, data.byteOffset, data.length)
  const scales = q.scales
  // First pass: every block's scale, and the finiteness check fused into the absmax scan.
  for (let b = 0, start = 0; start < n; b++, start += blockSize) {
    const end = Math.min(n, start + blockSize)
    let absmax = 0
    let bad = false
    for (let i = start; i < end; i++) {
      const a = Math.abs(src[i]!)
      if (a > absmax) absmax = a
      else if (a !== a) bad = true
    }
    if (bad || absmax > FLT_MAX) throwNonFinite(src)
    let scale = Math.fround(absmax / qmax)
    if (scale === 0 && absmax > 0) scale = SMALLEST_F32
    // Near the f32 maximum, qmax * scale can round up to Infinity: step the scale down one ulp.
    if (Math.fround(qmax * scale) === Infinity) scale = nextDownF32(scale)
    scales[b] = scale
  }
  if (bits === 8) {
    for (let b = 0, start = 0; start < n; b++, start += blockSize) {
      const end = Math.min(n, start + blockSize)
      const scale = scales[b]!
      if (scale === 0) {
        codes.fill(0, start, end)
        continue
      }
      for (let i = start; i < end; i++) {
        let v = Math.fround(src[i]! / scale) + RNE - RNE
        v = v > 127 ? 127 : v < -127 ? -127 : v
        codes[i] = v
      }
    }
  } else {
    data.fill(0)
    for (let b = 0, start = 0; start < n; b++, start += blockSize) {
      const end = Math.min(n, start + blockSize)
      const scale = scales[b]!
      if (scale === 0) continue
      for (let i = start; i < end; i++) {
        let v = Math.fround(src[i]! / scale) + RNE - RNE
        v = v > 7 ? 7 : v < -7 ? -7 : v
        data[i >> 1]! |= (v & 0xf) << ((i & 1) << 2)
      }
    }
  }
  return q
}

function throwNonFinite(src: Float32Array): never {
  let first = -1
  let count = 0
  for (let i = 0; i < src.length; i++) {
    // x - x is NaN exactly for NaN and ±Inf.
    const x = src[i]!
    if (x - x !== 0) {
      if (first < 0) first = i
      count++
    }
  }
  throw new NonFiniteError(first, src[first]!, count)
}

/**
 * Checks a Quantized that came from the network: lengths agree, scales are finite and >= 0.
 * Throws a ProtocolError (QUANT_INVALID) otherwise. Codes are checked during dequantization.
 */
export function validateQuantized(q: Quantized): void {
  try {
    validateQuantOptions(q)
  } catch (err) {
    throw codecError(CodecErrorCode.QUANT_INVALID, (err as Error).message)
  }
  const size = quantizedSize(q.length, q)
  if (q.scales.length !== size.blocks || q.data.length !== size.dataBytes) {
    throw codecError(
      CodecErrorCode.QUANT_INVALID,
      `quantized vector of ${q.length} elements needs ${size.blocks} scales and ${size.dataBytes} bytes, got ${q.scales.length} and ${q.data.length}`
    )
  }
  for (let b = 0; b < q.scales.length; b++) {
    const s = q.scales[b]!
    if (!(s >= 0) || s === Infinity) throw codecError(CodecErrorCode.QUANT_INVALID, `scale ${s} of block ${b} is not a finite non-negative number`)
  }
  if (q.bits === 4 && (q.length & 1) === 1 && q.data.length > 0 && q.data[q.data.length - 1]! >> 4 !== 0) {
    throw codecError(CodecErrorCode.QUANT_INVALID, 'padding nibble of an odd-length int4 vector is not zero')
  }
}

function badCode(i: number, code: number): never {
  throw codecError(CodecErrorCode.QUANT_INVALID, `code ${code} at element ${i} is outside the symmetric range`)
}

/** Writes the dequantized values into `out` (length q.length) and returns it. */
export function dequantize(q: Quantized, out: Float32Array = new Float32Array(q.length)): Float32Array {
  return dequantizeImpl(q, out, false)
}

/**
 * Adds the dequantized values into `acc` in f32: acc[i] = f32(acc[i] + f32(q[i] * scale)).
 * (Stores into a Float32Array round to f32, which is the f32 addition.)
 */
export function dequantizeAccumulate(q: Quantized, acc: Float32Array): Float32Array {
  return dequantizeImpl(q, acc, true)
}

function dequantizeImpl(q: Quantized, out: Float32Array, accumulate: boolean): Float32Array {
  validateQuantized(q)
  if (out.length !== q.length) throw new InvalidArgumentError(`output has ${out.length} elements, quantized vector has ${q.length}`)
  const { blockSize, data, scales } = q
  const n = q.length
  const codes = new Int8Array(data.buffer, data.byteOffset, data.length)
  for (let b = 0, start = 0; start < n; b++, start += blockSize) {
    const end = Math.min(n, start + blockSize)
    const scale = scales[b]!
    if (q.bits === 8) {
      if (accumulate) {
        for (let i = start; i < end; i++) {
          const v = codes[i]!
          if (v === -128) badCode(i, v)
          out[i] = out[i]! + Math.fround(v * scale)
        }
      } else {
        for (let i = start; i < end; i++) {
          const v = codes[i]!
          if (v === -128) badCode(i, v)
          out[i] = v * scale
        }
      }
    } else {
      // Blocks are even-sized, so a block starts on a byte; an odd tail is handled alone.
      const pairEnd = end - ((end - start) & 1)
      for (let i = start; i < pairEnd; i += 2) {
        const byte = data[i >> 1]!
        const lo = byte & 0xf
        const hi = byte >> 4
        if (lo === 8 || hi === 8) badCode(lo === 8 ? i : i + 1, -8)
        const x0 = Math.fround(((lo ^ 8) - 8) * scale)
        const x1 = Math.fround(((hi ^ 8) - 8) * scale)
        if (accumulate) {
          out[i] = out[i]! + x0
          out[i + 1] = out[i + 1]! + x1
        } else {
          out[i] = x0
          out[i + 1] = x1
        }
      }
      if (pairEnd < end) {
        const nib = data[pairEnd >> 1]! & 0xf
        if (nib === 8) badCode(pairEnd, -8)
        const x = Math.fround(((nib ^ 8) - 8) * scale)
        out[pairEnd] = accumulate ? out[pairEnd]! + x : x
      }
    }
  }
  return out
}
