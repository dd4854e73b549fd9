import { InvalidArgumentError, checkCap } from '../core/index.ts'
import { TENSOR_DTYPE_BYTES, type AdamWParams, type Fence, type GemmParams, type HostArray, type LionParams, type TensorDType } from './backend.ts'

/** Argument checks shared by the backends: each throws InvalidArgumentError naming the op. */
export function fail(op: string, msg: string): never {
  throw new InvalidArgumentError(`${op}: ${msg}`, { op })
}

/** `v` is a safe integer >= `min`. */
export function checkInt(op: string, name: string, v: number, min = 1): void {
  if (!Number.isSafeInteger(v) || v < min) fail(op, `${name} must be an integer >= ${min}, got ${v}`)
}

/** `v` is a finite number. */
export function checkFinite(op: string, name: string, v: number): void {
  if (typeof v !== 'number' || !Number.isFinite(v)) fail(op, `${name} must be a finite number, got ${String(v)}`)
}

/** Elements of `shape`, checking its rank against `maxRank` and each dimension. */
export function shapeLength(op: string, shape: readonly number[], maxRank: number): number {
  if (!Array.isArray(shape)) fail(op, 'shape must be an array of integers')
  checkCap('tensor rank', shape.length, maxRank)
  let n = 1
  for (let i = 0; i < shape.length; i++) {
    const d = shape[i]!
    if (!Number.isSafeInteger(d) || d < 0) fail(op, `shape[${i}] must be a non-negative integer, got ${d}`)
    n *= d
  }
  if (!Number.isSafeInteger(n)) fail(op, `shape ${JSON.stringify(shape)} has too many elements`)
  return n
}

/** True when `src` is the host array type of `dtype` (backend.ts's HostArray: bf16 as raw Uint16 bits). */
export function isHostOf(src: unknown, dtype: TensorDType): boolean {
  switch (dtype) {
    case 'f32':
      return src instanceof Float32Array
    case 'bf16':
      return src instanceof Uint16Array
    case 'i32':
      return src instanceof Int32Array
    case 'u8':
      return src instanceof Uint8Array
  }
}

/** A host array of `dtype`'s type: new (zero-filled) or over `length` elements of `buffer` at `byteOffset`. */
export function hostArrayOf(dtype: TensorDType, length: number, buffer?: ArrayBufferLike, byteOffset = 0): HostArray {
  const b = buffer ?? new ArrayBuffer(length * TENSOR_DTYPE_BYTES[dtype])
  switch (dtype) {
    case 'f32':
      return new Float32Array(b, byteOffset, length)
    case 'bf16':
      return new Uint16Array(b, byteOffset, length)
    case 'i32':
      return new Int32Array(b, byteOffset, length)
    case 'u8':
      return new Uint8Array(b, byteOffset, length)
  }
}

/** Checks download's arguments: `dst` holds `src`'s host type with room for `n` elements at `offset`. */
export function checkDownload(dst: HostArray, dtype: TensorDType, n: number, offset: number): void {
  if (!isHostOf(dst, dtype)) fail('download', `dst must be the host array type of a ${dtype} tensor`)
  checkInt('download', 'dstOffset', offset, 0)
  if (offset + n > dst.length) fail('download', `dstOffset ${offset} + ${n} elements exceeds dst's ${dst.length}`)
}

/** The fence of work that is already done (the CPU backend's): waiting on it resolves, aborted or not, as any passed fence does. */
export const PASSED_FENCE: Fence = Object.freeze({
  passed: () => true,
  wait: () => Promise.resolve()
})

/** Bytes per element of `dtype`; fails naming `op` when `dtype` is not a TensorDType. */
function dtypeBytes(op: string, dtype: TensorDType): number {
  if (!Object.hasOwn(TENSOR_DTYPE_BYTES, dtype)) fail(op, `unknown dtype ${String(dtype)}`)
  return TENSOR_DTYPE_BYTES[dtype]
}

/**
 * Elements and bytes of a tensor `alloc` is asked for, checked in this order: a known dtype,
 * the shape (rank at most `maxRank`), and the bytes against the backend's per-tensor cap.
 */
export function allocSize(dtype: TensorDType, shape: readonly number[], maxRank: number, capName: string, cap: number): { n: number; bytes: number } {
  const bytesPer = dtypeBytes('alloc', dtype)
  const n = shapeLength('alloc', shape, maxRank)
  const bytes = n * bytesPer
  checkCap(capName, bytes, cap)
  return { n, bytes }
}

/** gemm's sizes after {@link gemmShape}: dimensions, batch, per-matrix strides, alpha and beta. */
export interface GemmShape {
  m: number
  n: number
  k: number
  batch: number
  sA: number
  sB: number
  sC: number
  alpha: number
  beta: number
}

/** gemm's sizes checked and defaulted (dense strides, alpha 1, beta 0), the same for every backend. */
export function gemmShape(op: string, p: GemmParams): GemmShape {
  const { m, n, k } = p
  checkInt(op, 'm', m)
  checkInt(op, 'n', n)
  checkInt(op, 'k', k)
  const batch = p.batch ?? 1
  checkInt(op, 'batch', batch)
  const sA = p.strideA ?? m * k
  const sB = p.strideB ?? k * n
  const sC = p.strideC ?? m * n
  checkInt(op, 'strideA', sA, 0)
  checkInt(op, 'strideB', sB, 0)
  checkInt(op, 'strideC', sC, 0)
  const alpha = p.alpha ?? 1
  const beta = p.beta ?? 0
  checkFinite(op, 'alpha', alpha)
  checkFinite(op, 'beta', beta)
  return { m, n, k, batch, sA, sB, sC, alpha, beta }
}

/** gemm's operands (of `a`, `b`, `c` elements) hold every matrix of the batch, and output matrices do not overlap. */
export function checkGemmOperands(op: string, g: GemmShape, a: number, b: number, c: number): void {
  const { m, n, k, batch, sA, sB, sC } = g
  if (a < (batch - 1) * sA + m * k) fail(op, `a has ${a} elements, needs ${(batch - 1) * sA + m * k}`)
  if (b < (batch - 1) * sB + k * n) fail(op, `b has ${b} elements, needs ${(batch - 1) * sB + k * n}`)
  if (c < (batch - 1) * sC + m * n) fail(op, `c has ${c} elements, needs ${(batch - 1) * sC + m * n}`)
  if (batch > 1 && sC < m * n) fail(op, `strideC ${sC} makes output matrices overlap`)
}

/** The arguments of `addSigns`: a finite scale, a seed of two u32 words, an offset from 0 whose last index is still a safe integer. */
export function checkSigns(op: string, scale: number, seed: readonly number[], offset: number, n: number): void {
  checkFinite(op, 'scale', scale)
  if (!Array.isArray(seed) || seed.length !== 2 || !seed.every(w => Number.isInteger(w) && w >= 0 && w <= 0xffff_ffff)) {
    fail(op, `seed must be two u32 words, got ${JSON.stringify(seed)}`)
  }
  checkInt(op, 'offset', offset, 0)
  if (!Number.isSafeInteger(offset + n)) fail(op, `offset ${offset} + ${n} elements is past the safe integers`)
}

/** The hyperparameters of `lion`: finite, betas in [0, 1). */
export function checkLion(op: string, p: LionParams): void {
  for (const key of ['lr', 'beta1', 'beta2', 'weightDecay', 'gradScale'] as const) checkFinite(op, key, p[key])
  if (!(p.beta1 >= 0 && p.beta1 < 1)) fail(op, `beta1 must be in [0, 1), got ${p.beta1}`)
  if (!(p.beta2 >= 0 && p.beta2 < 1)) fail(op, `beta2 must be in [0, 1), got ${p.beta2}`)
}

/** The hyperparameters of `adamw`: those of {@link checkLion}, eps > 0 and a step number from 1. */
export function checkAdamW(op: string, p: AdamWParams): void {
  checkLion(op, p)
  checkFinite(op, 'eps', p.eps)
  checkInt(op, 'step', p.step)
  if (!(p.eps > 0)) fail(op, `eps must be > 0, got ${p.eps}`)
}
