import { InvalidArgumentError, checkCap } from '../core/index.ts'
import { type ErasureCoder, validateErasureParams, checkEncodeInput, planReconstruct } from './erasure.ts'
import { CODEC_LIMITS } from './limits.ts'
import { assembleKernel, KERNEL_ROWS, KERNEL_STRIDE, type KernelExports, type MacFn } from './erasure-simd-kernel.ts'
import { rsGeneratorMatrix, nibbleTable, reconstructionRows } from './gf256.ts'

/**
 * Reed-Solomon with WebAssembly SIMD: the same code (same generator matrix, gf256.ts) as the
 * wasm coder, so fragments are interchangeable. Encoding multiplies the k data fragments by the
 * m parity rows of the generator; reconstruction multiplies the k fragments present by the rows
 * of the inverted k x k submatrix that give the lost data fragments. Both are one operation,
 * {@link combine}: outputs = matrix x sources, done by the multi-row kernel of
 * erasure-simd-kernel.ts in rounds of up to KERNEL_ROWS output rows.
 *
 * Through the ErasureCoder interface, fragments are copied into the kernel's linear memory with
 * one memcpy each, coded there, and the outputs copied out once. A {@link SimdStripe} skips both
 * copies: its fragments are views of a kernel instance of its own, which callers fill in place.
 */

/** k + m fragments that live in the coder's memory, coded where they lie. */
export interface SimdStripe {
  /**
   * The k data then m parity fragments, views of the stripe's own wasm memory (valid as long as
   * the stripe is: that memory never grows or moves).
   */
  readonly fragments: readonly Uint8Array[]
  /** Computes the m parity fragments from the k data fragments. */
  encode(): void
  /**
   * Rebuilds, in place, the data fragments not marked present (`present` has k + m flags) from
   * k that are. Lost parity is not rebuilt (call encode once the data is whole). Throws
   * TooFewFragmentsError when fewer than k are present.
   */
  reconstruct(present: readonly boolean[]): void
}

/** The `simd` coder: an ErasureCoder that can also hand out in-place stripes. */
export interface SimdErasureCoder extends ErasureCoder {
  /**
   * A stripe of k + m fragments of `size` bytes in wasm memory of its own (allocated here, once;
   * caps: maxFragmentBytes, maxStripeBytes, checked before allocating).
   */
  stripe(size: number): SimdStripe
}

// Node has WebAssembly; our lib settings (no DOM) do not describe it, so declare what we use.
declare const WebAssembly: {
  Module: new (bytes: Uint8Array) => object
  Instance: new (module: object) => { exports: unknown }
  validate: (bytes: Uint8Array) => boolean
}

let compiled: { module: object; relaxed: boolean } | undefined

/** Compiles the kernel module once per process; throws where the runtime lacks wasm SIMD. */
function kernelModule(): { module: object; relaxed: boolean } {
  if (compiled === undefined) {
    // Relaxed swizzle skips the fix-up V8 adds for out-of-range indices; ours are always
    // 0..15 (masked nibbles), where relaxed and plain swizzle are defined to agree.
    let bytes = assembleKernel(true)
    const relaxed = WebAssembly.validate(bytes) && process.env['ZEROMESH_NO_RELAXED_SIMD'] === undefined
    if (!relaxed) bytes = assembleKernel(false)
    if (!WebAssembly.validate(bytes)) throw new InvalidArgumentError('this runtime lacks WebAssembly SIMD; use the wasm erasure coder')
    compiled = { module: new WebAssembly.Module(bytes), relaxed }
  }
  return compiled
}

/**
 * A kernel instance and its linear memory. The ErasureCoder calls share one per process (JS is
 * single-threaded) whose memory grows to the largest stripe; each SimdStripe has its own.
 */
class Kernel {
  readonly e: KernelExports
  /** mac[R - 1] computes R rows. */
  readonly mac: MacFn[]
  /** Whether the kernel uses relaxed swizzle (a bare PSHUFB on x86). */
  readonly relaxed: boolean

  constructor() {
    const { module, relaxed } = kernelModule()
    this.relaxed = relaxed
    this.e = new WebAssembly.Instance(module).exports as KernelExports
    this.mac = Array.from({ length: KERNEL_ROWS }, (_, r) => this.e[`mac${r + 1}`] as MacFn)
  }

  /** Makes sure linear memory holds `bytes`; returns a fresh view (growing detaches old ones). */
  reserve(bytes: number): Uint8Array {
    const have = this.e.memory.buffer.byteLength
    if (bytes > have) this.e.memory.grow(Math.ceil((bytes - have) / 65536))
    return new Uint8Array(this.e.memory.buffer)
  }
}

let kernel: Kernel | undefined

/** True if this runtime can run the SIMD coder. */
export function simdAvailable(): boolean {
  try {
    kernel ??= new Kernel()
    return true
  } catch {
    return false
  }
}

/**
 * With more than KERNEL_ROWS outputs the sources are read once per round of rows; in blocks of
 * about this many source bytes (all k together) they are still in L2 for the next round.
 */
const ROUND_BLOCK_BYTES = 256 * 1024

/**
 * The nibble tables of `rows` (each n coefficients, one per source) in the kernel's layout:
 * rounds of up to KERNEL_ROWS rows, and within a round of R rows, source i's tables for rows
 * r < R at (i * R + r) * 32.
 */
function kernelTables(rows: readonly Uint8Array[], n: number): Uint8Array {
  const out = new Uint8Array(rows.length * n * 32)
  for (let r0 = 0; r0 < rows.length; r0 += KERNEL_ROWS) {
    const R = Math.min(KERNEL_ROWS, rows.length - r0)
    for (let i = 0; i < n; i++) for (let r = 0; r < R; r++) nibbleTable(rows[r0 + r]![i]!, out, (r0 * n + i * R + r) * 32)
  }
  return out
}

/**
 * Where things live in kernel memory for a coder of k + m fragments of `slot` bytes each:
 * [tables k*m*32][source pointers k*4][output pointers m*4][slots (k+m) * slot].
 */
interface Layout {
  tables: number
  srcs: number
  dsts: number
  slots: number
  slot: number
}

function layout(k: number, m: number, size: number): Layout {
  const srcs = k * m * 32
  const dsts = srcs + 4 * k
  const slots = align(dsts + 4 * m, 64)
  return { tables: 0, srcs, dsts, slots, slot: align(size, KERNEL_STRIDE) }
}

/**
 * outputs[r] = XOR over i of rows[r][i] * sources[i], on fragment slots (indices into the
 * layout's slots), `tables` = kernelTables(rows, sources.length). The only place the kernel is
 * driven: encode and reconstruct both call it.
 */
function combine(kern: Kernel, mem: Uint8Array, at: Layout, tables: Uint8Array, sources: readonly number[], outputs: readonly number[]): void {
  const n = sources.length
  const ptr = new Uint32Array(mem.buffer)
  mem.set(tables, at.tables)
  const rounds = Math.ceil(outputs.length / KERNEL_ROWS)
  const block = rounds === 1 ? at.slot : Math.max(KERNEL_STRIDE, Math.floor(ROUND_BLOCK_BYTES / n / KERNEL_STRIDE) * KERNEL_STRIDE)
  for (let off = 0; off < at.slot; off += block) {
    const len = Math.min(block, at.slot - off)
    sources.forEach((s, i) => {
      ptr[at.srcs / 4 + i] = at.slots + s * at.slot + off
    })
    outputs.forEach((d, r) => {
      ptr[at.dsts / 4 + r] = at.slots + d * at.slot + off
    })
    for (let r0 = 0; r0 < outputs.length; r0 += KERNEL_ROWS) {
      const R = Math.min(KERNEL_ROWS, outputs.length - r0)
      kern.mac[R - 1]!(at.dsts + 4 * r0, at.srcs, at.tables + r0 * n * 32, n, len)
    }
  }
}

/**
 * Creates the SIMD Reed-Solomon coder (see the file comment). Throws InvalidArgumentError if
 * the runtime has no WebAssembly SIMD.
 */
export function createSimdErasureCoder(init: { k: number; m: number }): SimdErasureCoder {
  const { k, m } = init
  validateErasureParams(k, m)
  kernel ??= new Kernel()
  const shared = kernel
  const gen = rsGeneratorMatrix(k, m)
  const dataSlots = Array.from({ length: k }, (_, i) => i)
  const paritySlots = Array.from({ length: m }, (_, j) => k + j)
  const parityTables = kernelTables(gen.slice(k), k)
  /** Rebuilds lostData on slots from the first k present; the fragments are already in place. */
  const rebuild = (kern: Kernel, mem: Uint8Array, at: Layout, present: readonly number[], lostData: readonly number[]): void => {
    const { use, rows } = reconstructionRows(gen, k, present, lostData)
    combine(kern, mem, at, kernelTables(rows, k), use, lostData)
  }

  return {
    name: 'simd',
    k,
    m,
    encode(data) {
      const size = checkEncodeInput(data, k, m)
      const at = layout(k, m, size)
      const mem = shared.reserve(at.slots + (k + m) * at.slot)
      data.forEach((d, i) => mem.set(d, at.slots + i * at.slot))
      combine(shared, mem, at, parityTables, dataSlots, paritySlots)
      return paritySlots.map(s => copyOut(mem, at.slots + s * at.slot, size))
    },
    reconstruct(fragments) {
      const { size, present, lostData } = planReconstruct(fragments, k, m)
      if (lostData.length === 0) return fragments.slice(0, k) as Uint8Array[]
      const at = layout(k, m, size)
      const mem = shared.reserve(at.slots + (k + m) * at.slot)
      for (const i of present.slice(0, k)) mem.set(fragments[i]!, at.slots + i * at.slot)
      rebuild(shared, mem, at, present, lostData)
      const out = fragments.slice(0, k) as Uint8Array[]
      for (const d of lostData) out[d] = copyOut(mem, at.slots + d * at.slot, size)
      return out
    },
    stripe(size) {
      if (!Number.isSafeInteger(size) || size < 1) throw new InvalidArgumentError(`fragment size must be an integer >= 1, got ${size}`)
      checkCap('erasure fragment bytes', size, CODEC_LIMITS.maxFragmentBytes)
      checkCap('erasure stripe bytes', size * (k + m), CODEC_LIMITS.maxStripeBytes)
      const own = new Kernel()
      const at = layout(k, m, size)
      const mem = own.reserve(at.slots + (k + m) * at.slot)
      const fragments = Array.from({ length: k + m }, (_, i) => mem.subarray(at.slots + i * at.slot, at.slots + i * at.slot + size))
      return {
        fragments,
        encode() {
          combine(own, mem, at, parityTables, dataSlots, paritySlots)
        },
        reconstruct(present) {
          if (present.length !== k + m) throw new InvalidArgumentError(`expected ${k + m} presence flags, got ${present.length}`)
          const { present: have, lostData } = planReconstruct(
            fragments.map((f, i) => (present[i] === true ? f : undefined)),
            k,
            m
          )
          if (lostData.length > 0) rebuild(own, mem, at, have, lostData)
        }
      }
    }
  }
}

/**
 * A new Uint8Array holding mem[at, at + size). Not `mem.slice`: that zero-fills the new buffer
 * before copying into it, which costs as much as the copy (the buffer is overwritten whole).
 */
function copyOut(mem: Uint8Array, at: number, size: number): Uint8Array {
  const out = new Uint8Array(Buffer.allocUnsafeSlow(size).buffer, 0, size)
  out.set(mem.subarray(at, at + size))
  return out
}

function align(n: number, to: number): number {
  return Math.ceil(n / to) * to
}
