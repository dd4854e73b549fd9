import { InvalidArgumentError } from '../core/index.ts'

/**
 * Arithmetic in GF(2^8) with the polynomial x^8 + x^4 + x^3 + x^2 + 1 (0x11d) and generator 2,
 * and the Reed-Solomon generator matrix built the way Backblaze's JavaReedSolomon, klauspost's
 * reedsolomon and the Rust reed-solomon-erasure crate build it: a (k+m) x k Vandermonde matrix
 * v[r][c] = r^c, multiplied by the inverse of its top k x k square so the code is systematic.
 * Using the same matrix makes our coders byte-compatible with the wasm one.
 */
const EXP = new Uint8Array(512)
const LOG = new Uint8Array(256)
{
  let x = 1
  for (let i = 0; i < 255; i++) {
    EXP[i] = x
    LOG[x] = i
    x <<= 1
    if (x & 0x100) x ^= 0x11d
  }
  for (let i = 255; i < 512; i++) EXP[i] = EXP[i - 255]!
}

/** a * b in GF(2^8). */
export function gfMul(a: number, b: number): number {
  return a === 0 || b === 0 ? 0 : EXP[LOG[a]! + LOG[b]!]!
}

/** a^n in GF(2^8), with 0^0 = 1. */
export function gfPow(a: number, n: number): number {
  if (n === 0) return 1
  if (a === 0) return 0
  return EXP[(LOG[a]! * n) % 255]!
}

function gfInv(a: number): number {
  if (a === 0) throw new InvalidArgumentError('zero has no inverse in GF(2^8)')
  return EXP[255 - LOG[a]!]!
}

/** A row-major square or rectangular matrix of GF(2^8) elements. */
export type GfMatrix = Uint8Array[]

/** Inverts a square matrix by Gauss-Jordan elimination; throws if it is singular. */
export function gfInvert(a: GfMatrix): GfMatrix {
  const n = a.length
  const m = a.map(r => Uint8Array.from(r))
  const inv = Array.from({ length: n }, (_, i) => {
    const r = new Uint8Array(n)
    r[i] = 1
    return r
  })
  for (let col = 0; col < n; col++) {
    let pivot = col
    while (pivot < n && m[pivot]![col] === 0) pivot++
    if (pivot === n) throw new InvalidArgumentError('matrix is singular')
    ;[m[col], m[pivot]] = [m[pivot]!, m[col]!]
    ;[inv[col], inv[pivot]] = [inv[pivot]!, inv[col]!]
    const scale = gfInv(m[col]![col]!)
    for (let j = 0; j < n; j++) {
      m[col]![j] = gfMul(m[col]![j]!, scale)
      inv[col]![j] = gfMul(inv[col]![j]!, scale)
    }
    for (let r = 0; r < n; r++) {
      const f = m[r]![col]!
      if (r === col || f === 0) continue
      for (let j = 0; j < n; j++) {
        m[r]![j]! ^= gfMul(f, m[col]![j]!)
        inv[r]![j]! ^= gfMul(f, inv[col]![j]!)
      }
    }
  }
  return inv
}

/** a (r x n) times b (n x c). */
export function gfMatMul(a: GfMatrix, b: GfMatrix): GfMatrix {
  const cols = b[0]?.length ?? 0
  return a.map(row => {
    const out = new Uint8Array(cols)
    row.forEach((x, i) => {
      if (x === 0) return
      const br = b[i]!
      for (let j = 0; j < cols; j++) out[j]! ^= gfMul(x, br[j]!)
    })
    return out
  })
}

/** The systematic (k+m) x k generator matrix; rows k.. are the parity coefficients. */
export function rsGeneratorMatrix(k: number, m: number): GfMatrix {
  const v = Array.from({ length: k + m }, (_, r) => Uint8Array.from({ length: k }, (_, c) => gfPow(r, c)))
  return gfMatMul(v, gfInvert(v.slice(0, k)))
}

/** The 32-byte nibble table of a coefficient: c*x for x < 16, then c*(x << 4). */
export function nibbleTable(c: number, out: Uint8Array, at: number): void {
  for (let x = 0; x < 16; x++) {
    out[at + x] = gfMul(c, x)
    out[at + 16 + x] = gfMul(c, x << 4)
  }
}

/**
 * How to rebuild lost data fragments: any k present fragments determine the data, so take the
 * first k present (`use`, ascending indices) and invert their k rows of the generator `gen`;
 * row d of the inverse, applied to the `use` fragments, gives data fragment d. Returns one row
 * (k coefficients over `use`) per index in `lost`. Every coder's reconstruct goes through here.
 */
export function reconstructionRows(gen: GfMatrix, k: number, present: readonly number[], lost: readonly number[]): { use: number[]; rows: GfMatrix } {
  const use = present.slice(0, k)
  const inv = gfInvert(use.map(i => gen[i]!))
  return { use, rows: lost.map(d => inv[d]!) }
}
