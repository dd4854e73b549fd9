import { TooFewFragmentsError, validateErasureParams, type GfMatrix, reconstructionRows, rsGeneratorMatrix } from '../../codec/index.ts'
import type { Tensor } from '../backend.ts'
import { checkInt, fail } from '../validate.ts'
import type { CudaBackend } from './backend.ts'
import { KernelCompiler, defaultCubinCacheDir, kernelSource } from './compiler.ts'
import { checkCu, type CudaLibs, type Handle } from './ffi.ts'

/**
 * Reed-Solomon on the device: the code of the CPU coders (codec/gf256.ts: same generator, same
 * inverted rows for reconstruction), so a stripe coded here has the fragments `simd` and `wasm`
 * produce for the same bytes. The kernels are in ./kernels/erasure.cu; this file chooses the
 * matrix, packs it into the kernel parameters and launches rounds of up to RS_ROWS rows on the
 * backend's stream (in order with its other work; nothing here waits for the device).
 */
export interface CudaErasureCoder {
  readonly name: 'cuda'
  readonly k: number
  readonly m: number
  /**
   * Writes the m parity fragments of a stripe from its k data fragments. `stripe` is a u8 tensor
   * of this backend holding k + m fragments of `size` bytes back to back (fragment j at j * size).
   */
  encode(stripe: Tensor, size: number): void
  /**
   * Rebuilds, in place, the data fragments not marked present (`present`: k + m flags) from the
   * first k that are. Lost parity is not rebuilt (encode again once the data is whole). Throws
   * TooFewFragmentsError when fewer than k are present.
   */
  reconstruct(stripe: Tensor, size: number, present: readonly boolean[]): void
}

/** Rows per launch, sources per stripe and the RsArgs layout: as in kernels/erasure.cu. */
const RS_ROWS = 4
const RS_MAX_SOURCES = 256
const ARGS = { bytes: 1320, base: 0, stride: 8, n: 16, sources: 24, src: 32, dst: 288, coef: 296 } as const
const THREADS = 256
/** The 16-byte kernel needs the stripe address and the fragment size to be multiples of this. */
const VECTOR = 16

interface Compiled {
  libs: CudaLibs
  stream: Handle
  sm: number
  /** fns[vector ? 1 : 0][rows - 1] */
  fns: Handle[][]
}

const compiled = new WeakMap<CudaBackend, Compiled>()

/** Compiles kernels/erasure.cu for this backend's device once (NVRTC, cubin cache on disk). */
function kernels(be: CudaBackend): Compiled {
  let c = compiled.get(be)
  if (c !== undefined) return c
  const { libs, stream } = be.streamHandles()
  const compiler = new KernelCompiler(libs, `sm_${be.info.computeCapability.replace('.', '')}`, defaultCubinCacheDir())
  const mod = compiler.loadModule(compiler.cubin('erasure', kernelSource('erasure')))
  const fn = (name: string): Handle => {
    const out: Handle[] = [null]
    checkCu(libs, `cuModuleGetFunction(${name})`, libs.cu.cuModuleGetFunction(out, mod, name))
    return out[0]
  }
  const rows = [1, 2, 3, 4]
  c = { libs, stream, sm: be.info.smCount, fns: [rows.map(r => fn(`rs_mul${r}_b`)), rows.map(r => fn(`rs_mul${r}_v16`))] }
  compiled.set(be, c)
  return c
}

/** Creates the CUDA coder for (k, m) on a backend; compiles the kernels on first use. */
export function createCudaErasureCoder(be: CudaBackend, init: { k: number; m: number }): CudaErasureCoder {
  const { k, m } = init
  validateErasureParams(k, m)
  const gen = rsGeneratorMatrix(k, m)
  const dataIdx = Array.from({ length: k }, (_, i) => i)
  const parityIdx = Array.from({ length: m }, (_, j) => k + j)
  const args = new Uint8Array(ARGS.bytes)
  const view = new DataView(args.buffer)
  const params = [args]

  /** Checks the stripe; returns its device address. */
  const stripeAddress = (op: string, stripe: Tensor, size: number): number => {
    checkInt(op, 'size', size)
    const ptr = be.deviceAddress(op, 'stripe', stripe)
    if (stripe.dtype !== 'u8') fail(op, `stripe must be u8, got ${stripe.dtype}`)
    if (stripe.length < (k + m) * size) fail(op, `stripe holds ${stripe.length} bytes, ${k + m} fragments of ${size} need ${(k + m) * size}`)
    return ptr
  }

  /** outputs[r] = XOR over i of rows[r][i] * sources[i], fragments of the stripe at `base`. */
  const combine = (base: number, size: number, rows: GfMatrix, sources: readonly number[], outputs: readonly number[]): void => {
    const kern = kernels(be)
    const vector = base % VECTOR === 0 && size % VECTOR === 0
    const n = vector ? size / VECTOR : size
    const grid = Math.max(1, Math.min(Math.ceil(n / THREADS), kern.sm * 8))
    args.fill(0)
    view.setBigUint64(ARGS.base, BigInt(base), true)
    view.setBigUint64(ARGS.stride, BigInt(size), true)
    view.setBigUint64(ARGS.n, BigInt(n), true)
    view.setInt32(ARGS.sources, sources.length, true)
    args.set(sources, ARGS.src)
    for (let r0 = 0; r0 < outputs.length; r0 += RS_ROWS) {
      const R = Math.min(RS_ROWS, outputs.length - r0)
      for (let r = 0; r < RS_ROWS; r++) {
        args[ARGS.dst + r] = r < R ? outputs[r0 + r]! : 0
        args.fill(0, ARGS.coef + r * RS_MAX_SOURCES, ARGS.coef + (r + 1) * RS_MAX_SOURCES)
        if (r < R) args.set(rows[r0 + r]!, ARGS.coef + r * RS_MAX_SOURCES)
      }
      const fn = kern.fns[vector ? 1 : 0]![R - 1]
      checkCu(kern.libs, 'cuLaunchKernel(rs_mul)', kern.libs.cu.cuLaunchKernel(fn, grid, 1, 1, THREADS, 1, 1, 0, kern.stream, params, null) as number)
    }
  }

  return {
    name: 'cuda',
    k,
    m,
    encode(stripe, size) {
      const base = stripeAddress('erasure.encode', stripe, size)
      combine(base, size, gen.slice(k), dataIdx, parityIdx)
    },
    reconstruct(stripe, size, present) {
      const op = 'erasure.reconstruct'
      const base = stripeAddress(op, stripe, size)
      if (present.length !== k + m) fail(op, `expected ${k + m} presence flags, got ${present.length}`)
      const have: number[] = []
      const missing: number[] = []
      present.forEach((p, i) => (p === true ? have : missing).push(i))
      if (have.length < k) throw new TooFewFragmentsError(k, m, have, missing)
      const lost = missing.filter(i => i < k)
      if (lost.length === 0) return
      const { use, rows } = reconstructionRows(gen, k, have, lost)
      combine(base, size, rows, use, lost)
    }
  }
}
