import test from 'ava'
import { shardRange } from '../../core/index.ts'
import { roundTrip, type Wire } from '../../mesh/collective/index.ts'
import { seededRng } from '../helpers/seed.ts'
import { exactSum, firstDiff, interleavedZone, memoryGroup, randomVec, serialHierReduce, simGroup, zoneOf } from './helpers.ts'

const Q4: Wire = { kind: 'quant', bits: 4, blockSize: 32 }
const Q8: Wire = { kind: 'quant', bits: 8, blockSize: 64 }

test('memory net: hierarchical reduce-scatter (f32, int4, int8) equals the serial tier-order reference bit for bit (P 1-9, 1-3 zones)', async t => {
  const { rng } = seededRng(t, 21)
  for (let P = 1; P <= 9; P++) {
    for (const Z of [1, 2, 3].filter(z => z <= P)) {
      const zone = (r: number): string => (P % 2 === 1 ? zoneOf(r, P, Z) : interleavedZone(r, P, Z))
      const g = await memoryGroup(P, zone, { chunkBytes: 128 })
      try {
        for (const n of [0, 1, P - 1, 3 * P + 2, 700]) {
          const xs = g.colls.map(() => randomVec(rng, n))
          for (const wire of [{ kind: 'f32' } as Wire, Q4, Q8]) {
            const ref = serialHierReduce(xs, g.colls[0]!.hierarchy, n, wire)
            const res = await Promise.all(g.colls.map((c, r) => c.hierReduceScatter(xs[r]!, { wire, step: 2 })))
            res.forEach((x, r) => {
              const s = shardRange(n, P, r)
              t.is(firstDiff(x.data, ref.subarray(s.start, s.start + s.length)), -1, `P=${P} Z=${Z} n=${n} ${wire.kind} rank ${r}`)
            })
            if (wire.kind === 'quant') {
              // The stated bound: each quantized hop errs by at most half a block scale
              // (absmax / qmax / 2) plus f32 rounding; P rank hops and Z zone-partial hops.
              const qmax = wire.bits === 8 ? 127 : 7
              const exact = exactSum(xs, n)
              const bound = ((P + Z * P) / (2 * qmax)) * 1.001 + 1e-5
              let worst = 0
              res.forEach((x, r) => {
                const s = shardRange(n, P, r)
                for (let i = 0; i < s.length; i++) worst = Math.max(worst, Math.abs(x.data[i]! - exact[s.start + i]!))
              })
              t.true(worst <= bound, `error ${worst} over bound ${bound}`)
            }
          }
        }
      } finally {
        await g.stop()
      }
    }
  }
})

test('memory net: qwZ all-gather (int8 blocks) returns every shard quantize-dequantized, the same on every rank', async t => {
  const { rng } = seededRng(t, 22)
  for (const P of [1, 2, 5, 8]) {
    const g = await memoryGroup(P, r => zoneOf(r, P, 2), { chunkBytes: 300 })
    try {
      for (const n of [0, 1, P - 1, 4 * P + 3, 5000]) {
        const full = randomVec(rng, n, 3)
        const wire: Wire = { kind: 'quant', bits: 8, blockSize: 64 }
        const ref = new Float32Array(n)
        for (let r = 0; r < P; r++) {
          const s = shardRange(n, P, r)
          ref.set(roundTrip(wire, full.subarray(s.start, s.start + s.length)), s.start)
        }
        const res = await Promise.all(
          g.colls.map((c, _r) => {
            const s = c.shardOf(n)
            return c.allGather(full.slice(s.start, s.start + s.length), n, { wire })
          })
        )
        for (const x of res) t.is(firstDiff(x.data, ref), -1, `P=${P} n=${n}`)
        for (let i = 0; i < n; i++) {
          if (Math.abs(ref[i]! - full[i]!) > (3 / 127 / 2) * 1.001) t.fail(`int8 error at ${i}`)
        }
      }
    } finally {
      await g.stop()
    }
  }
})

test('memory net: nested tiers (host inside zone) reduce in tier order; bf16 raw all-gather passes words through', async t => {
  const { rng } = seededRng(t, 23)
  const P = 7
  // Zones of 4 and 3 ranks; hosts of two ranks (and one alone): three levels below the top.
  const hub = await memoryGroup(
    P,
    r => zoneOf(r, 8, 2),
    { tiers: ['host', 'zone'], chunkBytes: 256 },
    r => `h${Math.floor(r / 2)}`
  )
  try {
    t.is(hub.colls[0]!.hierarchy.levels.length, 4)
    const n = 999
    const xs = hub.colls.map(() => randomVec(rng, n))
    const ref = serialHierReduce(xs, hub.colls[0]!.hierarchy, n, Q4)
    const res = await Promise.all(hub.colls.map((c, r) => c.hierReduceScatter(xs[r]!, { wire: Q4 })))
    res.forEach((x, r) => {
      const s = shardRange(n, P, r)
      t.is(firstDiff(x.data, ref.subarray(s.start, s.start + s.length)), -1)
    })
    const words = new Uint16Array(n)
    for (let i = 0; i < n; i++) words[i] = rng.int(0, 65536)
    const ag = await Promise.all(
      hub.colls.map(c => {
        const s = c.shardOf(n)
        return c.allGather(words.slice(s.start, s.start + s.length), n)
      })
    )
    for (const x of ag) t.deepEqual(x.data, words)
  } finally {
    await hub.stop()
  }
})

test('simnet: int4 hierarchical reduce-scatter keeps cross-zone bytes to one partial per destination', async t => {
  const { rng, seed } = seededRng(t, 24)
  const P = 8
  const g = await simGroup(seed, P, r => zoneOf(r, P, 2), { chunkBytes: 8192 })
  try {
    const n = 64_000
    const xs = g.colls.map(() => randomVec(rng, n))
    const wire: Wire = { kind: 'quant', bits: 4, blockSize: 512 }
    const ref = serialHierReduce(xs, g.colls[0]!.hierarchy, n, wire)
    const res = await g.settle(Promise.all(g.colls.map((c, r) => c.hierReduceScatter(xs[r]!, { wire }))))
    res.forEach((x, r) => {
      const s = shardRange(n, P, r)
      t.is(firstDiff(x.data, ref.subarray(s.start, s.start + s.length)), -1)
    })
    const wan = res.reduce((a, r) => a + r.bytes.wan, 0)
    // Each zone sends the other zone's half once, int4 + one f32 scale per 512: n/2 * 2 * (0.5 + 4/512) bytes + headers.
    const ideal = n * (0.5 + 4 / 512)
    t.true(wan >= ideal && wan < ideal * 1.02, `wan bytes ${wan}, ideal ${ideal}`)
  } finally {
    await g.stop()
  }
})
