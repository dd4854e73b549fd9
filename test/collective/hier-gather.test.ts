import test from 'ava'
import { shardRange } from '../../core/index.ts'
import { COLLECTIVE_LIMITS } from '../../mesh/collective/index.ts'
import type { CollectiveSent } from '../../mesh/index.ts'
import { seededRng } from '../helpers/seed.ts'
import { firstDiff, interleavedZone, memoryGroup, randomVec, simGroup, zoneOf } from './helpers.ts'

// The tiered all-gather (hierAllGather): the ring all-gather's result, bit for bit, with each
// tier boundary crossed by one message per pair of groups. Its failures (a member crashing or
// stalling mid-call) are covered with the other operations' in member-crash.test.ts.

test('memory net: the tiered all-gather returns the ring all-gather bit for bit (P 1-9, 1-3 zones contiguous or interleaved, uneven shards, chunked blocks)', async t => {
  const { rng } = seededRng(t, 41)
  for (let P = 1; P <= 9; P++) {
    for (const Z of [1, 2, 3].filter(z => z <= P)) {
      for (const zone of [zoneOf, interleavedZone]) {
        const g = await memoryGroup(P, r => zone(r, P, Z), { chunkBytes: 64 })
        try {
          for (const n of [0, 1, P - 1, 2 * P, 3 * P + 2, 200]) {
            const full = randomVec(rng, n)
            const mine = (r: number): Float32Array => {
              const s = shardRange(n, P, r)
              return full.slice(s.start, s.start + s.length)
            }
            const ring = await Promise.all(g.colls.map((c, r) => c.allGather(mine(r), n, { step: 3 })))
            const tiered = await Promise.all(g.colls.map((c, r) => c.hierAllGather(mine(r), n, { step: 3 })))
            tiered.forEach((x, r) => {
              t.is(firstDiff(x.data, full), -1, `P=${P} Z=${Z} ${zone.name} n=${n} rank ${r}`)
              t.is(firstDiff(x.data, ring[r]!.data), -1)
            })
          }
        } finally {
          await g.stop()
        }
      }
    }
  }
})

test('memory net: nested tiers (hosts inside zones) and a window of a sharded vector gather the same bytes', async t => {
  const { rng } = seededRng(t, 42)
  const P = 7
  const g = await memoryGroup(
    P,
    r => zoneOf(r, 8, 2),
    { tiers: ['host', 'zone'], chunkBytes: 64 },
    r => `h${Math.floor(r / 2)}`
  )
  try {
    t.is(g.colls[0]!.hierarchy.levels.length, 4)
    const n = 97
    const full = randomVec(rng, n)
    const res = await Promise.all(
      g.colls.map(c => {
        const s = c.shardOf(n)
        return c.hierAllGather(full.slice(s.start, s.start + s.length), n)
      })
    )
    for (const x of res) t.is(firstDiff(x.data, full), -1)
    // A window [30, 80) of a vector of 300 elements sharded over the ranks; `into` is reused.
    const window = { offset: 30, total: 300 }
    const into = g.colls.map(() => new Float32Array(50))
    const win = await Promise.all(
      g.colls.map((c, r) => {
        const s = c.windowOf(50, window)
        return c.hierAllGather(full.slice(s.start, s.start + s.length).fill(r + 1), 50, { window, into: into[r]! })
      })
    )
    win.forEach((x, r) => {
      t.is(x.data, into[r]!)
      for (let q = 0; q < P; q++) {
        const s = g.colls[q]!.windowOf(50, window)
        t.true(
          x.data.subarray(s.start, s.start + s.length).every(v => v === q + 1),
          `rank ${r} holds rank ${q}'s part`
        )
      }
    })
  } finally {
    await g.stop()
  }
})

test('simnet: a tiny vector across zones crosses them once per pair of zones (the ring crosses them once per rank per boundary)', async t => {
  const { seed } = seededRng(t, 43)
  for (const [P, Z] of [
    [4, 2],
    [6, 3],
    [8, 2]
  ] as const) {
    const sent: Array<CollectiveSent & { label: string }> = []
    let label = ''
    const g = await simGroup(seed, P, r => interleavedZone(r, P, Z), { onSent: m => sent.push({ ...m, label }) })
    try {
      const mine = (r: number): Float32Array => Float32Array.of(r, -r)
      label = 'ring'
      const ring = await g.settle(Promise.all(g.colls.map((c, r) => c.allGather(mine(r), 2 * P, { step: 1 }))))
      label = 'tiered'
      const tiered = await g.settle(Promise.all(g.colls.map((c, r) => c.hierAllGather(mine(r), 2 * P, { step: 1 }))))
      tiered.forEach((x, r) => t.is(firstDiff(x.data, ring[r]!.data), -1, `rank ${r}`))
      const wan = (l: string): CollectiveSent[] => sent.filter(m => m.label === l && m.tier === 'wan')
      t.is(wan('tiered').length, Z * (Z - 1), `P=${P} Z=${Z}: one message per ordered pair of zones`)
      // Each carries the sending zone's pairs: P / Z ranks of 2 f32.
      for (const m of wan('tiered')) t.is(m.bytes, COLLECTIVE_LIMITS.headerBytes + (8 * P) / Z)
      t.is(
        tiered.reduce((a, x) => a + x.bytes.wan, 0),
        wan('tiered').reduce((a, m) => a + m.bytes, 0)
      )
      t.log(`P=${P} Z=${Z}: cross-zone messages ring ${wan('ring').length}, tiered ${wan('tiered').length}`)
      t.true(wan('ring').length > wan('tiered').length)
    } finally {
      await g.stop()
    }
  }
})
