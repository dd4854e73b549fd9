import test from 'ava'
import { CpuBackend } from '../../gpu/index.ts'
import { seededRng, randomF32 } from '../helpers/seed.ts'
import { closeness, upload, readF32 } from './fd.ts'

// Against an f64 naive product: one f32 rounding of each output, so 1e-6 relative is ample.
const RTOL = 1e-6
const ATOL = 1e-6

interface Case {
  m: number
  n: number
  k: number
  transA: boolean
  transB: boolean
  alpha: number
  beta: number
  batch: number
  pad: number
}

/** C = alpha · op(A) · op(B) + beta · C, batch matrices `stride` apart (f64). */
function naive(A: Float32Array, Bm: Float32Array, C0: Float32Array, c: Case, sA: number, sB: number, sC: number): Float64Array {
  const out = Float64Array.from(C0)
  for (let b = 0; b < c.batch; b++) {
    for (let i = 0; i < c.m; i++) {
      for (let j = 0; j < c.n; j++) {
        let s = 0
        for (let kk = 0; kk < c.k; kk++) {
          const a = c.transA ? A[b * sA + kk * c.m + i]! : A[b * sA + i * c.k + kk]!
          const x = c.transB ? Bm[b * sB + j * c.k + kk]! : Bm[b * sB + kk * c.n + j]!
          s += a * x
        }
        const o = b * sC + i * c.n + j
        out[o] = c.alpha * s + (c.beta === 0 ? 0 : c.beta * C0[o]!)
      }
    }
  }
  return out
}

test('gemm: every transA/transB combination, batched with default and padded strides, alpha and beta', t => {
  const { rng } = seededRng(t, 201)
  const be = new CpuBackend()
  let count = 0
  for (const transA of [false, true]) {
    for (const transB of [false, true]) {
      for (const batch of [1, 3]) {
        for (const pad of [0, 5]) {
          const c: Case = {
            m: rng.int(1, 9),
            n: rng.int(1, 9),
            k: rng.int(1, 9),
            transA,
            transB,
            alpha: rng.pick([1, 0.5, -2]),
            beta: rng.pick([0, 1, 0.25]),
            batch,
            pad
          }
          const sA = c.m * c.k + pad
          const sB = c.k * c.n + pad
          const sC = c.m * c.n + pad
          const A = randomF32(rng, batch * sA)
          const Bm = randomF32(rng, batch * sB)
          const C0 = randomF32(rng, batch * sC)
          const a = upload(be, A)
          const b = upload(be, Bm)
          const cT = upload(be, C0)
          be.gemm({
            a,
            b,
            c: cT,
            m: c.m,
            n: c.n,
            k: c.k,
            transA,
            transB,
            alpha: c.alpha,
            beta: c.beta,
            batch,
            ...(pad === 0 ? {} : { strideA: sA, strideB: sB, strideC: sC })
          })
          const expect = naive(A, Bm, C0, c, sA, sB, sC)
          const r = closeness(readF32(be, cT), expect, RTOL, ATOL)
          t.true(r.ratio <= 1, `${JSON.stringify(c)}: worst at ${r.at}`)
          count++
        }
      }
    }
  }
  t.is(count, 16)
})

test('gemm: beta = 0 does not read C (NaN there does not propagate); a larger product is still exact to f32', t => {
  const { rng } = seededRng(t, 202)
  const be = new CpuBackend()
  const m = 40
  const n = 33
  const k = 70
  const A = randomF32(rng, m * k)
  const Bm = randomF32(rng, k * n)
  const cT = upload(be, new Float32Array(m * n).fill(NaN))
  be.gemm({ a: upload(be, A), b: upload(be, Bm), c: cT, m, n, k })
  const c: Case = { m, n, k, transA: false, transB: false, alpha: 1, beta: 0, batch: 1, pad: 0 }
  const r = closeness(readF32(be, cT), naive(A, Bm, new Float32Array(m * n), c, 0, 0, 0), RTOL, ATOL)
  t.true(r.ratio <= 1, `worst at ${r.at}`)
})

test('gemm: operands too short for m, n, k, batch and strides are refused before writing', t => {
  const be = new CpuBackend()
  const a = be.alloc('f32', [6])
  const b = be.alloc('f32', [6])
  const c = upload(be, new Float32Array(4).fill(3))
  t.throws(() => be.gemm({ a, b, c, m: 2, n: 2, k: 4 }), { name: 'InvalidArgumentError', message: /gemm: a has 6/ })
  t.throws(() => be.gemm({ a, b, c, m: 2, n: 2, k: 3, batch: 2 }), { name: 'InvalidArgumentError', message: /gemm: a has 6/ })
  t.throws(() => be.gemm({ a, b, c, m: 2, n: 3, k: 2 }), { name: 'InvalidArgumentError', message: /gemm: c has 4/ })
  t.throws(() => be.gemm({ a, b, c, m: 0, n: 2, k: 3 }), { name: 'InvalidArgumentError', message: /gemm: m/ })
  t.throws(() => be.gemm({ a, b, c, m: 1, n: 2, k: 3, batch: 2, strideA: 3, strideB: 0, strideC: 1 }), { name: 'InvalidArgumentError', message: /overlap/ })
  t.deepEqual(readF32(be, c), new Float32Array(4).fill(3))
})
