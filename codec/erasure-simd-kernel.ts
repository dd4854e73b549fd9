/**
 * The WebAssembly module behind the `simd` erasure coder, emitted as bytes by the small
 * assembler below (no toolchain at build or run time; the binary format is the one in the
 * WebAssembly core specification, the SIMD opcodes those of its fixed-width SIMD and relaxed
 * SIMD proposals).
 *
 * Multiplying a byte x by a constant c in GF(2^8) is linear over the nibbles of x, so
 *   c * x = T_lo[x & 15] ^ T_hi[x >> 4]
 * with two 16-entry tables per coefficient (the split-nibble method of ISA-L and of
 * J. S. Plank, K. M. Greenan, E. L. Miller, "Screaming Fast Galois Field Arithmetic Using
 * Intel SIMD Instructions", FAST 2013). Both lookups are one `i8x16.swizzle` each (PSHUFB on
 * x86, TBL on Arm), 16 bytes at a time.
 *
 * Each export `macR` (R = 1 .. {@link KERNEL_ROWS}) computes R output rows in one pass over the
 * sources:
 *   macR(dsts, srcs, tables, n, len):
 *     for r < R:  dst_r[0..len) = XOR over i < n of c_{i,r} * src_i[0..len)
 * where dst_r and src_i are u32 byte addresses read from the arrays at `dsts` and `srcs`, and
 * c_{i,r}'s 32-byte nibble table (see `nibbleTable` in gf256.ts) sits at tables + (i*R + r)*32,
 * so one source's tables for all R rows are adjacent. `len` is a multiple of
 * {@link KERNEL_STRIDE}. For every 16-byte vector of every source, the source is loaded and split
 * into its two nibble vectors once, then multiplied into all R accumulators, which stay in
 * registers until all n sources are added and are stored once: the work per source byte that
 * does not depend on the row (load, shift, masks) is shared by R rows, and the outputs are
 * written once instead of read and rewritten once per source.
 */

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

const I32 = 0x7f
const V128 = 0x7b
const simd = (code: number): number[] => [0xfd, ...uleb(code)]
/** The instructions the kernel uses (opcodes from the WebAssembly specification). */
const op = {
  block: [0x02, 0x40],
  loop: [0x03, 0x40],
  end: [0x0b],
  br: (depth: number) => [0x0c, ...uleb(depth)],
  brIf: (depth: number) => [0x0d, ...uleb(depth)],
  get: (i: number) => [0x20, ...uleb(i)],
  set: (i: number) => [0x21, ...uleb(i)],
  tee: (i: number) => [0x22, ...uleb(i)],
  i32: (n: number) => [0x41, ...sleb(n)],
  add: [0x6a],
  geU: [0x4f],
  /** i32.load with a constant offset (alignment hint 4 bytes). */
  load32: (offset: number) => [0x28, 0x02, ...uleb(offset)],
  /** v128.load / v128.store with a constant offset (alignment hint 1 byte: sources may be unaligned). */
  vload: (offset: number) => [...simd(0x00), 0x00, ...uleb(offset)],
  vstore: (offset: number) => [...simd(0x0b), 0x00, ...uleb(offset)],
  splat8: simd(0x0f),
  swizzle: simd(0x0e),
  relaxedSwizzle: simd(0x100),
  and: simd(0x4e),
  xor: simd(0x51),
  /** i16x8.shr_u: x86 has no 8-bit shift, so shift 16-bit lanes and mask (the mask is applied anyway). */
  shrU16: simd(0x8d)
}

/**
 * Most output rows one kernel call computes; more rows take several calls (rounds). Enough for
 * the usual m <= 4 in one pass; more accumulators would spill out of registers.
 */
export const KERNEL_ROWS = 4
/**
 * Bytes of each source the kernel handles per step; lengths are multiples of this. Two vectors
 * per step: with 4 rows that is 8 accumulators plus 4 nibble vectors and 2 tables, which still
 * fits x86-64's 16 vector registers (4 vectors per step measured no faster, 1 about 15% slower).
 */
export const KERNEL_STRIDE = 32
/** 16-byte vectors per step. */
const LANES = KERNEL_STRIDE / 16

/**
 * The body of macR. Locals: params 0 dsts, 1 srcs, 2 tables, 3 n, 4 len; i32 5 off, 6 i,
 * 7 tp, 8 sp, 9 src; v128 10 mask, 11 tl, 12 th, then lo/hi per lane, then the accumulators.
 */
function macBody(rows: number, swizzle: number[]): number[] {
  const [DSTS, SRCS, TABLES, N, LEN, OFF, I, TP, SP, SRC, MASK, TL, TH] = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]
  const LO = (u: number): number => 13 + 2 * u
  const HI = (u: number): number => 14 + 2 * u
  const ACC = (r: number, u: number): number => 13 + 2 * LANES + r * LANES + u
  const locals = vec([
    [...uleb(5), I32],
    [...uleb(3 + 2 * LANES + rows * LANES), V128]
  ])
  const b: number[] = [...op.i32(15), ...op.splat8, ...op.set(MASK)]
  // for (off = 0; off < len; off += STRIDE)
  b.push(...op.block, ...op.loop, ...op.get(OFF), ...op.get(LEN), ...op.geU, ...op.brIf(1))
  // Source loop, first iteration peeled: it sets the accumulators instead of XORing into them.
  b.push(...op.get(TABLES), ...op.set(TP), ...op.get(SRCS), ...op.set(SP), ...op.i32(0), ...op.set(I))
  const source = (first: boolean): void => {
    b.push(...op.get(SP), ...op.load32(0), ...op.get(OFF), ...op.add, ...op.set(SRC))
    for (let u = 0; u < LANES; u++) {
      // lo = x & 15; hi = (x >> 4) & 15, shifting 16-bit lanes (bits crossing bytes are masked off).
      b.push(...op.get(SRC), ...op.vload(16 * u), ...op.tee(HI(u)), ...op.get(MASK), ...op.and, ...op.set(LO(u)))
      b.push(...op.get(HI(u)), ...op.i32(4), ...op.shrU16, ...op.get(MASK), ...op.and, ...op.set(HI(u)))
    }
    for (let r = 0; r < rows; r++) {
      b.push(...op.get(TP), ...op.vload(32 * r), ...op.set(TL), ...op.get(TP), ...op.vload(32 * r + 16), ...op.set(TH))
      for (let u = 0; u < LANES; u++) {
        if (!first) b.push(...op.get(ACC(r, u)))
        b.push(...op.get(TL), ...op.get(LO(u)), ...swizzle, ...op.get(TH), ...op.get(HI(u)), ...swizzle, ...op.xor)
        if (!first) b.push(...op.xor)
        b.push(...op.set(ACC(r, u)))
      }
    }
    b.push(...op.get(TP), ...op.i32(32 * rows), ...op.add, ...op.set(TP), ...op.get(SP), ...op.i32(4), ...op.add, ...op.set(SP))
    b.push(...op.get(I), ...op.i32(1), ...op.add, ...op.set(I))
  }
  source(true)
  b.push(...op.block, ...op.loop, ...op.get(I), ...op.get(N), ...op.geU, ...op.brIf(1))
  source(false)
  b.push(...op.br(0), ...op.end, ...op.end)
  for (let r = 0; r < rows; r++) {
    b.push(...op.get(DSTS), ...op.load32(4 * r), ...op.get(OFF), ...op.add, ...op.set(SRC))
    for (let u = 0; u < LANES; u++) b.push(...op.get(SRC), ...op.get(ACC(r, u)), ...op.vstore(16 * u))
  }
  b.push(...op.get(OFF), ...op.i32(KERNEL_STRIDE), ...op.add, ...op.set(OFF), ...op.br(0), ...op.end, ...op.end, ...op.end)
  const func = [...locals, ...b]
  return [...uleb(func.length), ...func]
}

/** The module: one memory (exported as `memory`) and mac1 .. macKERNEL_ROWS. */
export function assembleKernel(relaxed: boolean): Uint8Array {
  const swizzle = relaxed ? op.relaxedSwizzle : op.swizzle
  const funcs = Array.from({ length: KERNEL_ROWS }, (_, r) => r + 1)
  return Uint8Array.from([
    ...[0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00],
    // type 0: (i32 i32 i32 i32 i32) -> ()
    ...section(1, vec([[0x60, ...vec([[I32], [I32], [I32], [I32], [I32]]), 0x00]])),
    ...section(3, vec(funcs.map(() => [0x00]))),
    // memory 0: min 1 page, no max
    ...section(5, vec([[0x00, 0x01]])),
    ...section(7, vec([[...str('memory'), 0x02, 0x00], ...funcs.map((rows, f) => [...str(`mac${rows}`), 0x00, ...uleb(f)])])),
    ...section(10, vec(funcs.map(rows => macBody(rows, swizzle))))
  ])
}

/** One kernel export: see the file comment. */
export type MacFn = (dsts: number, srcs: number, tables: number, n: number, len: number) => void

/** The kernel's exports. */
export interface KernelExports {
  memory: { buffer: ArrayBuffer; grow: (pages: number) => number }
  [mac: `mac${number}`]: MacFn
}
