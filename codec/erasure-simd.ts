import { InvalidArgumentError } from '../core/index.ts'
import { type ErasureCoder, validateErasureParams, checkEncodeInput, planReconstruct } from './erasure.ts'
import { rsGeneratorMatrix, gfInvert, nibbleTable, type GfMatrix } from './gf256.ts'

/**
 * Reed-Solomon with WebAssembly SIMD: the same code (same generator matrix) as the wasm coder,
 * so fragments are interchangeable, but the inner loop multiplies 16 bytes at a time with the
 * split-nibble table method that ISA-L and klauspost/reedsolomon use on x86 (PSHUFB):
 *   c * x = T_lo[x & 15] ^ T_hi[x >> 4],   both tables looked up with i8x16.swizzle.
 *
 * The kernel is a ~200-byte wasm module assembled below (no toolchain needed at build or run
 * time). Its one export computes
 *   mac(dst, srcs, tables, n, len):  dst[0..len) = XOR over i < n of c_i * src_i[0..len)
 * with src_i = u32 pointers at `srcs`, c_i's 32-byte nibble tables at `tables`, and len a
 * multiple of 64 (four 16-byte lanes per iteration, so each table is loaded once per 64 bytes).
 */

// --- a tiny wasm assembler: just what the kernel needs -------------------------------------

function uleb(n: number): number[] {
  const out: number[] = []
  do {
    let b = n & 0x7f
    n >>>= 7
    if (n !== 0) b |= 0x80
    out.push(b)
  } while (n !== 0)
  return out
}

function sleb(n: number): number[] {
  const out: number[] = []
  for (;;) {
    const b = n & 0x7f
    n >>= 7
    if ((n === 0 && (b & 0x40) === 0) || (n === -1 && (b & 0x40) !== 0)) {
      out.push(b)
      return out
    }
    out.push(b | 0x80)
  }
}

const section = (id: number, body: number[]): number[] => [id, ...uleb(body.length), ...body]
const vec = (items: number[][]): number[] => [...uleb(items.length), ...items.flat()]
const str = (s: string): number[] => [...uleb(s.length), ...Array.from(Buffer.from(s))]

// Opcodes.
const I32 = 0x7f
const V128 = 0x7b
const op = {
  block: [0x02, 0x40],
  loop: [0x03, 0x40],
  end: [0x0b],
  br: (d: number) => [0x0c, ...uleb(d)],
  brIf: (d: number) => [0x0d, ...uleb(d)],
  get: (i: number) => [0x20, ...uleb(i)],
  set: (i: number) => [0x21, ...uleb(i)],
  i32: (n: number) => [0x41, ...sleb(n)],
  add: [0x6a],
  geU: [0x4f],
  load32: [0x28, 0x02, 0x00],
  vload: (offset: number) => [0xfd, ...uleb(0x00), 0x00, ...uleb(offset)],
  vstore: (offset: number) => [0xfd, ...uleb(0x0b), 0x00, ...uleb(offset)],
  vzero: [0xfd, ...uleb(0x0c), ...new Array(16).fill(0)],
  swizzle: [0xfd, ...uleb(0x0e)],
  relaxedSwizzle: [0xfd, ...uleb(0x100)],
  splat8: [0xfd, ...uleb(0x0f)],
  and: [0xfd, ...uleb(0x4e)],
  xor: [0xfd, ...uleb(0x51)],
  shrU8: [0xfd, ...uleb(0x6d)]
}

/** Lanes of 16 bytes processed per loop iteration. */
const UNROLL = 4
/** Bytes per iteration; lengths handed to the kernel are multiples of this. */
export const SIMD_STRIDE = 16 * UNROLL

function assembleKernel(relaxed: boolean): Uint8Array {
  const swizzle = relaxed ? op.relaxedSwizzle : op.swizzle
  // params: 0 dst, 1 srcs, 2 tables, 3 n, 4 len
  // i32 locals: 5 off, 6 i, 7 tp, 8 sp, 9 src
  // v128 locals: 10 mask, 11 lo, 12 hi, 13 x, 14.. acc[u]
  const [DST, SRCS, TABLES, N, LEN, OFF, I, TP, SP, SRC, MASK, LO, HI, X] = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13]
  const ACC = (u: number): number => 14 + u
  const body: number[] = [...op.i32(15), ...op.splat8, ...op.set(MASK), ...op.block, ...op.loop, ...op.get(OFF), ...op.get(LEN), ...op.geU, ...op.brIf(1)]
  for (let u = 0; u < UNROLL; u++) body.push(...op.vzero, ...op.set(ACC(u)))
  body.push(
    ...op.i32(0),
    ...op.set(I),
    ...op.get(TABLES),
    ...op.set(TP),
    ...op.get(SRCS),
    ...op.set(SP),
    ...op.block,
    ...op.loop,
    ...op.get(I),
    ...op.get(N),
    ...op.geU,
    ...op.brIf(1),
    ...op.get(SP),
    ...op.load32,
    ...op.get(OFF),
    ...op.add,
    ...op.set(SRC),
    ...op.get(TP),
    ...op.vload(0),
    ...op.set(LO),
    ...op.get(TP),
    ...op.vload(16),
    ...op.set(HI)
  )
  for (let u = 0; u < UNROLL; u++) {
    body.push(
      ...op.get(SRC),
      ...op.vload(16 * u),
      ...op.set(X),
      ...op.get(ACC(u)),
      ...op.get(LO),
      ...op.get(X),
      ...op.get(MASK),
      ...op.and,
      ...swizzle,
      ...op.xor,
      ...op.get(HI),
      ...op.get(X),
      ...op.i32(4),
      ...op.shrU8,
      ...swizzle,
      ...op.xor,
      ...op.set(ACC(u))
    )
  }
  body.push(
    ...op.get(I),
    ...op.i32(1),
    ...op.add,
    ...op.set(I),
    ...op.get(TP),
    ...op.i32(32),
    ...op.add,
    ...op.set(TP),
    ...op.get(SP),
    ...op.i32(4),
    ...op.add,
    ...op.set(SP),
    ...op.br(0),
    ...op.end,
    ...op.end
  )
  for (let u = 0; u < UNROLL; u++) body.push(...op.get(DST), ...op.get(OFF), ...op.add, ...op.get(ACC(u)), ...op.vstore(16 * u))
  body.push(...op.get(OFF), ...op.i32(SIMD_STRIDE), ...op.add, ...op.set(OFF), ...op.br(0), ...op.end, ...op.end, ...op.end)
  const locals = vec([
    [...uleb(5), I32],
    [...uleb(4 + UNROLL), V128]
  ])
  const func = [...locals, ...body]
  void DST
  return Uint8Array.from([
    0x00,
    0x61,
    0x73,
    0x6d,
    0x01,
    0x00,
    0x00,
    0x00,
    ...section(1, vec([[0x60, ...vec([[I32], [I32], [I32], [I32], [I32]]), 0x00]])),
    ...section(3, vec([[0x00]])),
    ...section(5, vec([[0x00, 0x01]])),
    ...section(
      7,
      vec([
        [...str('memory'), 0x02, 0x00],
        [...str('mac'), 0x00, 0x00]
      ])
    ),
    ...section(10, vec([[...uleb(func.length), ...func]]))
  ])
}

// Node has WebAssembly; our lib settings (no DOM) do not describe it, so declare what we use.
declare const WebAssembly: {
  Module: new (bytes: Uint8Array) => object
  Instance: new (module: object) => { exports: unknown }
  validate: (bytes: Uint8Array) => boolean
}

interface KernelExports {
  memory: { buffer: ArrayBuffer; grow: (pages: number) => number }
  mac(dst: number, srcs: number, tables: number, n: number, len: number): void
}

/** One kernel instance per process (JS is single-threaded); its memory grows as needed. */
class Kernel {
  readonly e: KernelExports
  /** Whether the kernel uses relaxed swizzle (a bare PSHUFB on x86). */
  readonly relaxed: boolean

  constructor() {
    // Relaxed swizzle skips the fix-up V8 adds for out-of-range indices; ours are always
    // 0..15 (masked nibbles), where relaxed and plain swizzle are defined to agree.
    let bytes = assembleKernel(true)
    this.relaxed = WebAssembly.validate(bytes) && process.env['ZEROMESH_NO_RELAXED_SIMD'] === undefined
    if (!this.relaxed) bytes = assembleKernel(false)
    if (!WebAssembly.validate(bytes)) throw new InvalidArgumentError('this runtime lacks WebAssembly SIMD; use the wasm erasure coder')
    this.e = new WebAssembly.Instance(new WebAssembly.Module(bytes)).exports as KernelExports
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

/** Bytes of work per kernel call: k sources of this size stay in L2 across the m rows. */
const BLOCK = 16 * 1024

/**
 * Creates the SIMD Reed-Solomon coder (see the file comment). Throws InvalidArgumentError if
 * the runtime has no WebAssembly SIMD.
 */
export function createSimdErasureCoder(init: { k: number; m: number }): ErasureCoder {
  const { k, m } = init
  validateErasureParams(k, m)
  kernel ??= new Kernel()
  const kern = kernel
  const gen = rsGeneratorMatrix(k, m)
  // Layout in kernel memory: [parity tables m*k*32][decode tables k*k*32][srcs k*4][slots (k+m)*P]
  const parityTables = 0
  const decodeTables = m * k * 32
  const srcs = decodeTables + k * k * 32
  const slots = align(srcs + k * 4, SIMD_STRIDE)
  const tables = new Uint8Array(m * k * 32)
  for (let j = 0; j < m; j++) for (let i = 0; i < k; i++) nibbleTable(gen[k + j]![i]!, tables, (j * k + i) * 32)

  /** dst slot = sum over sources (slot indices) with the coefficient tables at `tbl`. */
  const combine = (mem: Uint8Array, P: number, dst: number, sources: readonly number[], tbl: number): void => {
    const view = new DataView(mem.buffer)
    for (let off = 0; off < P; off += BLOCK) {
      sources.forEach((s, i) => view.setUint32(srcs + 4 * i, slots + s * P + off, true))
      kern.e.mac(slots + dst * P + off, srcs, tbl, sources.length, Math.min(BLOCK, P - off))
    }
  }

  return {
    name: 'simd',
    k,
    m,
    encode(data) {
      const size = checkEncodeInput(data, k, m)
      const P = align(size, SIMD_STRIDE)
      const mem = kern.reserve(slots + (k + m) * P)
      mem.set(tables, parityTables)
      data.forEach((d, i) => mem.set(d, slots + i * P))
      const view = new DataView(mem.buffer)
      const sources = Array.from({ length: k }, (_, i) => i)
      // Cache blocking: for each block of the k sources, produce all m parity rows.
      for (let off = 0; off < P; off += BLOCK) {
        const len = Math.min(BLOCK, P - off)
        sources.forEach(i => view.setUint32(srcs + 4 * i, slots + i * P + off, true))
        for (let j = 0; j < m; j++) kern.e.mac(slots + (k + j) * P + off, srcs, parityTables + j * k * 32, k, len)
      }
      return Array.from({ length: m }, (_, j) => mem.slice(slots + (k + j) * P, slots + (k + j) * P + size))
    },
    reconstruct(fragments) {
      const { size, present, lostData } = planReconstruct(fragments, k, m)
      if (lostData.length === 0) return fragments.slice(0, k) as Uint8Array[]
      // Any k present fragments determine the data: invert their rows of the generator.
      const use = present.slice(0, k)
      const inv: GfMatrix = gfInvert(use.map(i => gen[i]!))
      const P = align(size, SIMD_STRIDE)
      const mem = kern.reserve(slots + (k + m) * P)
      use.forEach(i => mem.set(fragments[i]!, slots + i * P))
      const dt = new Uint8Array(k * 32)
      const out = fragments.slice(0, k) as Array<Uint8Array | undefined>
      for (const d of lostData) {
        for (let i = 0; i < k; i++) nibbleTable(inv[d]![i]!, dt, i * 32)
        mem.set(dt, decodeTables)
        combine(mem, P, d, use, decodeTables)
        out[d] = mem.slice(slots + d * P, slots + d * P + size)
      }
      return out as Uint8Array[]
    }
  }
}

function align(n: number, to: number): number {
  return Math.ceil(n / to) * to
}
