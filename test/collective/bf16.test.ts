import test from 'ava'
import { shardRange, type Rng } from '../../core/index.ts'
import { f32ToBf16 } from '../../codec/index.ts'
import { BF16_WIRE, COLLECTIVE_LIMITS, chunkElementsOf, type CollectiveResult } from '../../mesh/collective/index.ts'
import { seededRng } from '../helpers/seed.ts'
import { bf16Round, firstDiff, interleavedZone, serialRingReduce, simGroup, zoneOf } from './helpers.ts'

// bf16 payloads on the ring: f32 vectors sent with the bf16 wire (rounded to nearest even,
// as wire.ts documents) and raw bf16 words (Uint16Array) passed through. The reference rounds
// with helpers' bf16Round, written independently of codec's f32ToBf16 (a bias trick).

const CHUNK_BYTES = 64

const f32 = new Float32Array(1)
const u32 = new Uint32Array(f32.buffer)
const fromBits = (b: number): number => {
  u32[0] = b >>> 0
  return f32[0]!
}

/**
 * f32 values that make bf16 rounding matter: random magnitudes over a few binades, a share of
 * exact ties (low 16 bits 0x8000, odd and even), values already in bf16, and mantissas next to
 * a carry into the exponent.
 */
function bf16Hard(rng: Rng, n: number): Float32Array {
  const out = new Float32Array(n)
  for (let i = 0; i < n; i++) {
    const sign = rng.bool() ? 0x80000000 : 0
    const exp = rng.int(124, 130) << 23
    let mant = rng.int(0, 1 << 23)
    const kind = rng.int(0, 10)
    if (kind === 0)
      mant = (mant & 0x7f0000) | 0x8000 // a tie
    else if (kind === 1)
      mant &= 0x7f0000 // exactly representable
    else if (kind === 2) mant = 0x7f8000 | rng.int(0, 0x8000) // rounds up into the next binade, or is a tie there
    out[i] = fromBits(sign | exp | mant)
  }
  return out
}

/** Bytes a ring pass of `n` elements sends in all: every shard crosses Q-1 hops, cut into chunks of `per`. */
function ringBytes(n: number, P: number, per: number, bytesPerElement: number): number {
  let chunks = 0
  for (let r = 0; r < P; r++) chunks += Math.ceil(shardRange(n, P, r).length / per)
  return (P - 1) * (chunks * COLLECTIVE_LIMITS.headerBytes + n * bytesPerElement)
}

const sent = (rs: Array<CollectiveResult<unknown>>): number => rs.reduce((a, r) => a + r.bytes.host + r.bytes.zone + r.bytes.wan, 0)

test('bf16Round (the reference) rounds to nearest even, independently of the wire, and agrees with f32ToBf16', t => {
  // Hand-checked cases: 1 + 2^-8 is a tie between 1 and 1 + 2^-7 (even: 1); 1 + 3 * 2^-8 a tie going up.
  t.is(bf16Round(1 + 2 ** -8), 1)
  t.is(bf16Round(1 + 3 * 2 ** -8), 1 + 2 ** -6)
  t.is(bf16Round(1 + 2 ** -8 + 2 ** -20), 1 + 2 ** -7)
  t.is(bf16Round(-(1 + 2 ** -8 + 2 ** -20)), -(1 + 2 ** -7))
  t.is(bf16Round(fromBits(0x3fffffff)), 2) // carries into the exponent
  t.is(bf16Round(fromBits(0x7f7fffff)), Infinity) // past the largest bf16: overflow
  t.is(bf16Round(fromBits(0x7f7f7fff)), fromBits(0x7f7f0000))
  t.true(Object.is(bf16Round(-0), -0))
  t.true(Number.isNaN(bf16Round(NaN)))
  const { rng } = seededRng(t, 700)
  const xs = bf16Hard(rng, 20_000)
  for (let i = 0; i < xs.length; i++) {
    const want = bf16Round(xs[i]!)
    u32[0] = f32ToBf16(xs[i]!) << 16
    if (!Object.is(f32[0]!, want)) t.fail(`f32ToBf16(${xs[i]}) = ${f32[0]}, nearest even is ${want}`)
  }
  t.pass()
})

for (const P of [2, 3, 5, 7, 9]) {
  test(`simnet P=${P}: bf16 ring all-gather, reduce-scatter and all-reduce equal the serial bf16 reference bit for bit, and carry 2 bytes per element`, async t => {
    const { rng, seed } = seededRng(t, 710 + P)
    const Z = Math.min(3, P)
    const zone = (r: number): string => (P % 2 === 0 ? interleavedZone(r, P, Z) : zoneOf(r, P, Z))
    const g = await simGroup(seed, P, zone, { chunkBytes: CHUNK_BYTES })
    const per = chunkElementsOf(BF16_WIRE, CHUNK_BYTES)
    const all = <T>(f: (r: number) => Promise<T>): Promise<T[]> => g.settle(Promise.all(g.colls.map((_, r) => f(r))))
    try {
      for (const n of [1, 2 * P + 1, 333, 2049]) {
        const where = (what: string): string => `P=${P} n=${n} ${what}`
        const xs = g.colls.map(() => bf16Hard(rng, n))
        // All-gather of f32 shards over the bf16 wire: every element rounded once, on every rank (the owner too).
        const full = bf16Hard(rng, n)
        const want = full.map(bf16Round)
        const ag = await all(r => {
          const s = shardRange(n, P, r)
          return g.colls[r]!.allGather(full.slice(s.start, s.start + s.length), n, { wire: BF16_WIRE, step: 1 })
        })
        ag.forEach((x, r) => {
          t.is(firstDiff(x.data, want), -1, where(`all-gather rank ${r}`))
        })
        t.is(sent(ag), ringBytes(n, P, per, 2), where('all-gather bytes'))
        // Raw bf16 words pass through untouched (NaN payloads and all).
        const words = new Uint16Array(n)
        for (let i = 0; i < n; i++) words[i] = rng.int(0, 65536)
        const raw = await all(r => {
          const s = shardRange(n, P, r)
          return g.colls[r]!.allGather(words.slice(s.start, s.start + s.length), n, { step: 2 })
        })
        raw.forEach((x, r) => {
          t.deepEqual(x.data, words, where(`raw bf16 all-gather rank ${r}`))
        })
        t.is(sent(raw), ringBytes(n, P, per, 2), where('raw all-gather bytes'))
        // Reduce-scatter: partials rounded to bf16 before each hop, in the ring order.
        const ref = serialRingReduce(xs, g.colls[0]!.ring, n, true)
        const rs = await all(r => g.colls[r]!.reduceScatter(xs[r]!, { wire: BF16_WIRE, step: 3 }))
        rs.forEach((x, r) => {
          const s = shardRange(n, P, r)
          t.is(firstDiff(x.data, ref.subarray(s.start, s.start + s.length)), -1, where(`reduce-scatter rank ${r}`))
        })
        t.is(sent(rs), ringBytes(n, P, per, 2), where('reduce-scatter bytes'))
        // The rounding is real: the f32 reduction differs somewhere (so the check above can fail).
        if (n > 100) t.not(firstDiff(ref, serialRingReduce(xs, g.colls[0]!.ring, n, false)), -1)
        // All-reduce: the bf16 reduce-scatter, then an exact f32 all-gather of the sums.
        const ar = await all(r => g.colls[r]!.allReduce(xs[r]!, { wire: BF16_WIRE, step: 4 }))
        ar.forEach((x, r) => {
          t.is(firstDiff(x.data, ref), -1, where(`all-reduce rank ${r}`))
        })
        t.is(sent(ar), ringBytes(n, P, per, 2) + ringBytes(n, P, chunkElementsOf({ kind: 'f32' }, CHUNK_BYTES), 4), where('all-reduce bytes'))
      }
    } finally {
      await g.stop()
    }
  })
}
