import test, { type ExecutionContext } from 'ava'
import type { Rng } from '../../core/index.ts'
import { shardRange } from '../../core/index.ts'
import { createZeroComm, roundTrip, type Wire } from '../../mesh/collective/index.ts'
import { seededRng } from '../helpers/seed.ts'
import {
  exactSum,
  firstDiff,
  hierQuantBound,
  interleavedZone,
  randomVec,
  serialHierReduce,
  serialRingReduce,
  simGroup,
  zoneOf,
  type SimGroup
} from './helpers.ts'

// The correctness sweep of ring.test.ts / hier.test.ts, on SimNet (latency, bandwidth, link
// serialization, virtual time) instead of the in-memory net: every rank count 1-9, every zone
// count 1-3 that fits, lengths 0, 1, P-1, an odd length > P and a few thousand elements.
// Chunks are tiny (64 bytes: 16 f32 or 3 int4 blocks per message) so every shard is pipelined.

const F32: Wire = { kind: 'f32' }
const Q4: Wire = { kind: 'quant', bits: 4, blockSize: 32 }
const Q8: Wire = { kind: 'quant', bits: 8, blockSize: 64 }
const QWZ_BLOCK = 64
const CHUNK_BYTES = 64

const lengths = (P: number): number[] => [...new Set([0, 1, P - 1, 2 * P + 1, 2999])]

/** Rank r's shard of the `n` elements of `full`. */
const shardOf = (full: Float32Array, n: number, P: number, r: number): Float32Array => {
  const s = shardRange(n, P, r)
  return full.slice(s.start, s.start + s.length)
}

async function sweepGroup(t: ExecutionContext, g: SimGroup, rng: Rng, P: number, Z: number): Promise<void> {
  const where = (n: number, what: string): string => `P=${P} Z=${Z} n=${n} ${what}`
  // One call per rank, all with the same (next) step.
  let step = 0
  const all = <T>(f: (r: number, step: number) => Promise<T>): Promise<T[]> => {
    step++
    return g.settle(Promise.all(g.colls.map((_, r) => f(r, step))))
  }
  const ring = g.colls[0]!.ring
  const h = g.colls[0]!.hierarchy
  for (const n of lengths(P)) {
    const xs = g.colls.map(() => randomVec(rng, n))
    // All-gather (f32): every rank holds every shard, bit for bit.
    const full = randomVec(rng, n)
    const ag = await all((r, step) => g.colls[r]!.allGather(shardOf(full, n, P, r), n, { step }))
    ag.forEach((x, r) => {
      t.is(firstDiff(x.data, full), -1, where(n, `all-gather rank ${r}`))
    })
    // Reduce-scatter and all-reduce (f32): the serial ring order, bit for bit.
    const ref = serialRingReduce(xs, ring, n)
    const rs = await all((r, step) => g.colls[r]!.reduceScatter(xs[r]!, { step }))
    rs.forEach((x, r) => {
      t.is(firstDiff(x.data, shardOf(ref, n, P, r)), -1, where(n, `reduce-scatter rank ${r}`))
    })
    const ar = await all((r, step) => g.colls[r]!.allReduce(xs[r]!, { step }))
    ar.forEach((x, r) => {
      t.is(firstDiff(x.data, ref), -1, where(n, `all-reduce rank ${r}`))
    })
    // Hierarchical reduce-scatter (f32, and qgZ int4 / int8): the serial tier order, bit for bit,
    // and the quantized ones within the stated error bound of the exact sum.
    const exact = exactSum(xs, n)
    for (const wire of [F32, Q4, Q8]) {
      const hr = serialHierReduce(xs, h, n, wire)
      const res = await all((r, step) => g.colls[r]!.hierReduceScatter(xs[r]!, { wire, step }))
      let worst = 0
      res.forEach((x, r) => {
        const s = shardRange(n, P, r)
        t.is(firstDiff(x.data, hr.subarray(s.start, s.start + s.length)), -1, where(n, `hier ${wire.kind}${wire.kind === 'quant' ? wire.bits : ''} rank ${r}`))
        for (let i = 0; i < s.length; i++) worst = Math.max(worst, Math.abs(x.data[i]! - exact[s.start + i]!))
      })
      if (wire.kind === 'quant') {
        const bound = hierQuantBound(P, Z, wire.bits, 1)
        t.true(worst <= bound, where(n, `qgZ int${wire.bits} error ${worst} over the bound ${bound}`))
      }
    }
    // qwZ through ZeroComm: every rank (the owner too) gets each shard quantize-dequantized
    // (int8, block QWZ_BLOCK), identical everywhere, within half a quantization step.
    const wts = randomVec(rng, n, 3)
    const qref = new Float32Array(n)
    for (let r = 0; r < P; r++) qref.set(roundTrip({ kind: 'quant', bits: 8, blockSize: QWZ_BLOCK }, shardOf(wts, n, P, r)), shardRange(n, P, r).start)
    const zs = g.colls.map(c => createZeroComm(c, { qwZ: { blockSize: QWZ_BLOCK } }))
    const qw = await all((r, step) => zs[r]!.gatherWeights('w', shardOf(wts, n, P, r), n, 'forward', { step }))
    qw.forEach((x, r) => {
      t.is(firstDiff(x.data, qref), -1, where(n, `qwZ rank ${r}`))
    })
    let qworst = 0
    for (let i = 0; i < n; i++) qworst = Math.max(qworst, Math.abs(qref[i]! - wts[i]!))
    t.true(qworst <= (3 / 127 / 2) * 1.001, where(n, `qwZ error ${qworst}`))
  }
}

for (const P of [1, 2, 3, 4, 5, 6, 7, 8, 9]) {
  test(`simnet sweep P=${P}: all-gather, reduce-scatter, all-reduce (f32) and hier f32/qgZ int4/int8 equal the serial references bit for bit; qwZ within its bound (zones 1-3)`, async t => {
    const { rng, seed } = seededRng(t, 600 + P)
    for (const Z of [1, 2, 3].filter(z => z <= P)) {
      // Odd rank counts place zones contiguously, even ones interleave them (the ring
      // order then differs from rank order).
      const zone = (r: number): string => (P % 2 === 1 ? zoneOf(r, P, Z) : interleavedZone(r, P, Z))
      const g = await simGroup(seed * 4 + Z, P, zone, { chunkBytes: CHUNK_BYTES })
      try {
        t.is(new Set(g.view.members.map(m => m.zone)).size, Z)
        await sweepGroup(t, g, rng, P, Z)
      } finally {
        await g.stop()
      }
    }
  })
}
