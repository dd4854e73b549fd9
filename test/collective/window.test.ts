import test from 'ava'
import { shardRange } from '../../core/index.ts'
import { createErrorFeedback, windowRange, type Wire } from '../../mesh/collective/index.ts'
import { seededRng } from '../helpers/seed.ts'
import { firstDiff, memoryGroup, randomVec, serialHierReduce, serialRingReduce, zoneOf } from './helpers.ts'

// Windows: a bucket of a flat vector sharded over the ranks (ZeRO-3 buckets). Each rank's part
// of the window is its shard's intersection with it, often empty. Results must equal the same
// slice of the whole-vector call: bit for bit for the ring (the same owner sums each element
// in the same order), and the serial reference over the window's parts for the all-to-all.

const Q4: Wire = { kind: 'quant', bits: 4, blockSize: 64 }

test('windowRange: parts of a window tile it in rank order, empty where a shard misses it', t => {
  for (const [total, P] of [
    [10, 3],
    [7, 4],
    [100, 9],
    [3, 5]
  ] as const) {
    for (let offset = 0; offset <= total; offset++) {
      for (let length = 0; offset + length <= total; length++) {
        let at = 0
        for (let r = 0; r < P; r++) {
          const w = windowRange(total, P, r, offset, length)
          t.true(w.length >= 0 && w.start === at, `total ${total} P ${P} window [${offset}, +${length}) rank ${r}`)
          if (w.length > 0) {
            const s = shardRange(total, P, r)
            t.true(w.start + offset >= s.start && w.start + offset + w.length <= s.start + s.length)
          }
          at += w.length
        }
        t.is(at, length)
      }
    }
  }
})

test('windowed all-gather, reduce-scatter and hier reduce-scatter equal slices of the whole-vector calls (P 1-6, 2 zones)', async t => {
  const { rng } = seededRng(t, 31)
  for (let P = 1; P <= 6; P++) {
    const g = await memoryGroup(P, r => zoneOf(r, P, Math.min(2, P)), { chunkBytes: 64 })
    try {
      const total = 257 + P
      const full = randomVec(rng, total)
      const xs = g.colls.map(() => randomVec(rng, total))
      const ref = serialRingReduce(xs, g.colls[0]!.ring, total)
      for (const [offset, length] of [
        [0, total],
        [0, 5],
        [total - 3, 3],
        [40, 0],
        [17, 150],
        [100, 1]
      ] as const) {
        const window = { offset, total }
        const parts = g.colls.map(c => c.windowOf(length, window))
        const ag = await Promise.all(
          g.colls.map((c, r) => {
            const s = shardRange(total, P, r)
            const p = parts[r]!
            return c.allGather(full.slice(s.start, s.start + s.length).subarray(p.start + offset - s.start, p.start + offset - s.start + p.length), length, {
              step: 1,
              window
            })
          })
        )
        for (const res of ag) t.is(firstDiff(res.data, full.subarray(offset, offset + length)), -1, `all-gather P=${P} [${offset}, +${length})`)
        const rs = await Promise.all(g.colls.map((c, r) => c.reduceScatter(xs[r]!.slice(offset, offset + length), { step: 2, window })))
        rs.forEach((res, r) => {
          const p = parts[r]!
          t.is(firstDiff(res.data, ref.subarray(offset + p.start, offset + p.start + p.length)), -1, `reduce-scatter P=${P} [${offset}, +${length}) rank ${r}`)
        })
        const win = xs.map(x => x.slice(offset, offset + length))
        const href = serialHierReduce(win, g.colls[0]!.hierarchy, length, Q4, parts)
        const hs = await Promise.all(g.colls.map((c, r) => c.hierReduceScatter(win[r]!, { step: 3, window, wire: Q4, errorFeedback: createErrorFeedback() })))
        hs.forEach((res, r) => {
          const p = parts[r]!
          t.is(firstDiff(res.data, href.subarray(p.start, p.start + p.length)), -1, `hier reduce-scatter P=${P} [${offset}, +${length}) rank ${r}`)
        })
      }
      // Bad windows are refused before any bytes move.
      const c = g.colls[0]!
      t.throws(() => c.windowOf(10, { offset: total - 5, total }), { name: 'InvalidArgumentError' })
      await t.throwsAsync(async () => c.allGather(new Float32Array(0), 4, { window: { offset: 0, total }, scope: 'zone' }), {
        name: 'InvalidArgumentError',
        message: /scope 'all'/
      })
    } finally {
      await g.stop()
    }
  }
})
