import test from 'ava'
import { shardRange } from '../../core/index.ts'
import { seededRng } from '../helpers/seed.ts'
import { firstDiff, interleavedZone, memoryGroup, randomVec, serialRingReduce, simGroup, zoneOf } from './helpers.ts'

const LENGTHS = (P: number): number[] => [0, 1, P - 1, 2 * P + 1, 1037]

test('memory net: ring all-gather, reduce-scatter and all-reduce equal the serial reference bit for bit (P 1-9, 1-3 zones)', async t => {
  const { rng } = seededRng(t, 11)
  for (let P = 1; P <= 9; P++) {
    const Z = Math.min(3, 1 + (P % 3))
    const g = await memoryGroup(P, r => (P % 2 === 0 ? interleavedZone(r, P, Z) : zoneOf(r, P, Z)), { chunkBytes: 64 })
    try {
      for (const n of LENGTHS(P).filter(x => x >= 0)) {
        const xs = g.colls.map(() => randomVec(rng, n))
        // all-gather of shards
        const full = randomVec(rng, n)
        const ag = await Promise.all(
          g.colls.map((c, r) => {
            const s = shardRange(n, P, r)
            return c.allGather(full.slice(s.start, s.start + s.length), n, { step: 3 })
          })
        )
        for (const res of ag) t.is(firstDiff(res.data, full), -1, `all-gather P=${P} n=${n}`)
        // reduce-scatter
        const ref = serialRingReduce(xs, g.colls[0]!.ring, n)
        const rs = await Promise.all(g.colls.map((c, r) => c.reduceScatter(xs[r]!, { step: 3 })))
        rs.forEach((res, r) => {
          const s = shardRange(n, P, r)
          t.is(firstDiff(res.data, ref.subarray(s.start, s.start + s.length)), -1, `reduce-scatter P=${P} n=${n} rank ${r}`)
        })
        // all-reduce
        const ar = await Promise.all(g.colls.map((c, r) => c.allReduce(xs[r]!, { step: 4 })))
        for (const res of ar) t.is(firstDiff(res.data, ref), -1, `all-reduce P=${P} n=${n}`)
      }
    } finally {
      await g.stop()
    }
  }
})

test('simnet: ring collectives are exact and bytes are counted per tier', async t => {
  const { rng, seed } = seededRng(t, 12)
  const P = 6
  const g = await simGroup(seed, P, r => zoneOf(r, P, 2), { chunkBytes: 4096 })
  try {
    const n = 10_001
    const xs = g.colls.map(() => randomVec(rng, n))
    const before = g.simnet.stats()
    const rs = await g.settle(Promise.all(g.colls.map((c, r) => c.reduceScatter(xs[r]!, { step: 1 }))))
    const after = g.simnet.stats()
    const ref = serialRingReduce(xs, g.colls[0]!.ring, n)
    rs.forEach((res, r) => {
      const s = shardRange(n, P, r)
      t.is(firstDiff(res.data, ref.subarray(s.start, s.start + s.length)), -1)
    })
    // Our accounting equals what SimNet carried, tier by tier.
    for (const tier of ['host', 'zone', 'wan'] as const) {
      t.is(
        rs.reduce((a, r) => a + r.bytes[tier], 0),
        after[tier].bytes - before[tier].bytes,
        tier
      )
    }
    // A zone-grouped ring crosses the WAN twice with 2 zones: each crossing carries (P-1)/P of the vector.
    t.true(rs.reduce((a, r) => a + r.bytes.wan, 0) < 2 * n * 4 + 10_000)
  } finally {
    await g.stop()
  }
})

/** Words that are not plain numbers as f32: NaNs (quiet, signalling, with payloads, negative), infinities, -0, denormals. */
const SPECIAL_WORDS = [
  0, 1, 0xffffffff, 0x7fc00000, 0xffc00000, 0x7f800001, 0x7fa00001, 0xffbfffff, 0x7fffffff, 0x7f800000, 0xff800000, 0x80000000, 0x00000001, 0x807fffff
]

test('u32 all-gather: raw 32-bit words round-trip bit for bit (NaN patterns as f32 included), in f32 chunks and bytes', async t => {
  const { rng, seed } = seededRng(t, 13)
  for (let P = 1; P <= 5; P++) {
    const g = await memoryGroup(P, r => zoneOf(r, P, 2), { chunkBytes: 64 })
    try {
      for (const n of [...LENGTHS(P), SPECIAL_WORDS.length * 3]) {
        const full = new Uint32Array(n)
        for (let i = 0; i < n; i++) full[i] = i < 3 * SPECIAL_WORDS.length ? SPECIAL_WORDS[i % SPECIAL_WORDS.length]! : rng.u32()
        const res = await Promise.all(
          g.colls.map((c, r) => {
            const s = shardRange(n, P, r)
            return c.allGather(full.slice(s.start, s.start + s.length), n, { step: 2 })
          })
        )
        for (const x of res) {
          t.true(x.data instanceof Uint32Array)
          t.deepEqual([...x.data], [...full], `u32 all-gather P=${P} n=${n}`)
        }
      }
    } finally {
      await g.stop()
    }
  }
  // The same gather as f32 carries the same bytes on every tier (SimNet timing depends on them).
  const P = 4
  const n = 1001
  const g = await simGroup(seed, P, r => zoneOf(r, P, 2), { chunkBytes: 256 })
  try {
    const words = await g.settle(Promise.all(g.colls.map((c, r) => c.allGather(new Uint32Array(shardRange(n, P, r).length).fill(0x7fa00001), n, { step: 1 }))))
    const floats = await g.settle(Promise.all(g.colls.map((c, r) => c.allGather(new Float32Array(shardRange(n, P, r).length), n, { step: 1 }))))
    for (const tier of ['host', 'zone', 'wan'] as const) {
      t.is(
        words.reduce((a, r) => a + r.bytes[tier], 0),
        floats.reduce((a, r) => a + r.bytes[tier], 0),
        tier
      )
    }
    t.true(words.every(w => w.data.every(x => x === 0x7fa00001)))
  } finally {
    await g.stop()
  }
})
