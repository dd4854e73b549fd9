import { InvalidArgumentError } from '../core/index.ts'

/** Element types a tensor frame can carry. `i4` packs two signed 4-bit values per byte. */
export type DType = 'f32' | 'bf16' | 'f16' | 'i8' | 'u8' | 'i4' | 'i32'

/** Wire codes of the dtypes (one byte in the frame header). Never renumber. */
export const DTYPE_CODES: Readonly<Record<DType, number>> = Object.freeze({
  f32: 1,
  bf16: 2,
  f16: 3,
  i8: 4,
  u8: 5,
  i4: 6,
  i32: 7
})

const BY_CODE = new Map<number, DType>(Object.entries(DTYPE_CODES).map(([k, v]) => [v, k as DType]))

/** Bits per element. */
export const DTYPE_BITS: Readonly<Record<DType, number>> = Object.freeze({
  f32: 32,
  bf16: 16,
  f16: 16,
  i8: 8,
  u8: 8,
  i4: 4,
  i32: 32
})

/** The dtype for a wire code, or undefined. */
export function dtypeFromCode(code: number): DType | undefined {
  return BY_CODE.get(code)
}

/** True for a known dtype name. */
export function isDType(x: unknown): x is DType {
  return typeof x === 'string' && Object.hasOwn(DTYPE_CODES, x)
}

/** Bytes needed for `elements` values of `dtype` (i4 rounds up to whole bytes). */
export function byteLength(dtype: DType, elements: number): number {
  return Math.ceil((elements * DTYPE_BITS[dtype]) / 8)
}

/**
 * Number of elements of a shape; throws InvalidArgumentError for negative, fractional or
 * overflowing dimensions. A rank-0 shape (`[]`) is a scalar: one element.
 */
export function shapeElements(shape: readonly number[]): number {
  let n = 1
  for (const d of shape) {
    if (!Number.isSafeInteger(d) || d < 0) throw new InvalidArgumentError(`bad dimension ${d} in shape [${shape.join(', ')}]`)
    n *= d
    if (!Number.isSafeInteger(n)) throw new InvalidArgumentError(`shape [${shape.join(', ')}] has too many elements`)
  }
  return n
}

// One f32 in two views: how a value's bits are read and written without allocating.
const f32Scratch = new Float32Array(1)
const u32Scratch = new Uint32Array(f32Scratch.buffer)

/**
 * f32 → bf16 bits (the upper 16 bits of the f32), rounded to nearest, ties to even; `x` is
 * first rounded to f32. Overflow rounds to ±Inf. A NaN stays a NaN with its sign: the quiet bit
 * is set, so a NaN whose payload lies only in the dropped half cannot turn into ±Inf. The one
 * conversion of the tree: the CPU backend's cast and fill, the CUDA backend's fill, the bf16
 * collective wire.
 */
export function f32ToBf16(x: number): number {
  f32Scratch[0] = x
  const bits = u32Scratch[0]!
  if ((bits & 0x7fffffff) > 0x7f800000) return ((bits >>> 16) | 0x40) & 0xffff
  return ((bits + 0x7fff + ((bits >>> 16) & 1)) >>> 16) & 0xffff
}

/** bf16 bits → the f32 value (exact: bf16 is the upper half of an f32). */
export function bf16ToF32(bits: number): number {
  u32Scratch[0] = (bits & 0xffff) << 16
  return f32Scratch[0]!
}
