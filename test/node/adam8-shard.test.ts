// The 8-bit optimizers' moments on a shard (node/train/adam8.ts): blocks restart at every decay
// segment, so two world sizes block the same elements differently. A shard whose range is an
// old rank's is copied bit for bit; any other is re-blocked, each moment within half a code
// step of the value it stood for. 8-bit AdamW keeps two moments (absmax pairs), 8-bit Lion one.
import test from 'ava'
import { shardRange, type Rng } from '../../core/index.ts'
import { ADAM8_BLOCK, ADAM8_MAP_M, ADAM8_MAP_V, gptLayout, type Moments8 } from '../../gpu/index.ts'
import { adam8Runs, cutAdam8, decodeAdam8, encodeAdam8, freshAdam8 } from '../../node/train/adam8.ts'
import { decaySegments, TrainingError } from '../../node/train/config.ts'
import type { RankState } from '../../snapshot/index.ts'
import { model } from '../helpers/train-mesh.ts'
import { seededRng } from '../helpers/seed.ts'

const layout = gptLayout(model)
const N = layout.length

/** Rank r of P's 8-bit state of k moments holding moments drawn from `rng` (v >= 0), as its codes stand for them. */
function stateOf(P: number, r: number, rng: Rng, k: Moments8 = 2): RankState {
  const range = shardRange(N, P, r)
  const m = Float32Array.from({ length: range.length }, () => (rng.float() - 0.5) * 10 ** -rng.int(0, 6))
  const v = Float32Array.from({ length: k === 2 ? range.length : 0 }, () => rng.float() * 10 ** -rng.int(0, 8))
  const adam8 = encodeAdam8(layout, range, m, v, k)
  const empty = new Float32Array(0)
  return {
    rank: r,
    worldSize: P,
    epoch: 0,
    step: 3,
    dataCursor: 3,
    weights: new Float32Array(range.length),
    adamM: empty,
    adamV: empty,
    rng: new Uint8Array(0),
    optimizer: k === 2 ? 'adamw8bit' : 'lion8bit',
    adam8
  }
}

test('a shard has a run per decay segment, its blocks restarting at each; a fresh state is all zero', t => {
  const shard = shardRange(N, 3, 1)
  const { runs, blocks } = adam8Runs(layout, shard)
  const segs = decaySegments(layout, shard.start, shard.length)
  t.is(runs.length, segs.length)
  t.true(runs.length > 1, 'the shard spans several segments')
  t.is(
    blocks,
    segs.reduce((a, s) => a + Math.ceil(s.length / ADAM8_BLOCK), 0)
  )
  t.true(blocks > Math.ceil(shard.length / ADAM8_BLOCK), 'segment boundaries add blocks')
  runs.forEach((r, i) => t.is(r.at, segs[i]!.start - shard.start))
  const fresh = freshAdam8(layout, shard, 2)
  t.is(fresh.scales.length, 2 * blocks)
  t.true(fresh.m.every(x => x === 0) && fresh.scales.every(x => x === 0))
  const d = decodeAdam8(layout, shard, fresh, 2)
  t.true(d.m.every(x => x === 0) && d.v.every(x => x === 0))
  // 8-bit Lion: m's codes and one absmax per block, no v.
  const lion = freshAdam8(layout, shard, 1)
  t.deepEqual([lion.m.length, lion.v.length, lion.scales.length], [shard.length, 0, blocks])
  const dl = decodeAdam8(layout, shard, lion, 1)
  t.true(dl.m.length === shard.length && dl.m.every(x => x === 0) && dl.v.length === 0)
})

test('cutting for the same world size copies the codes bit for bit; another world size re-blocks within half a code step', t => {
  const { rng } = seededRng(t, 21)
  const old = Array.from({ length: 3 }, (_, r) => stateOf(3, r, rng))
  for (let r = 0; r < 3; r++) {
    const same = cutAdam8(layout, old, shardRange(N, 3, r), 2)
    t.deepEqual(same.m, old[r]!.adam8!.m)
    t.deepEqual(same.v, old[r]!.adam8!.v)
    t.deepEqual(same.scales, old[r]!.adam8!.scales)
  }
  // The values the old codes stand for, over the whole flat vector.
  const full = { m: new Float32Array(N), v: new Float32Array(N) }
  old.forEach((st, r) => {
    const range = shardRange(N, 3, r)
    const d = decodeAdam8(layout, range, st.adam8!, 2)
    full.m.set(d.m, range.start)
    full.v.set(d.v, range.start)
  })
  // The largest gap between neighbouring map values, relative to the block's absmax.
  const gap = (map: Readonly<Float32Array>): number => Math.max(...map.slice(1).map((x, i) => x - map[i]!))
  for (let r = 0; r < 4; r++) {
    const range = shardRange(N, 4, r)
    const cut = cutAdam8(layout, old, range, 2)
    t.is(cut.scales.length, 2 * adam8Runs(layout, range).blocks)
    const d = decodeAdam8(layout, range, cut, 2)
    let worst = 0
    for (const run of adam8Runs(layout, range).runs)
      for (let i = run.at; i < run.at + run.length; i++) {
        const b = run.block + Math.floor((i - run.at) / ADAM8_BLOCK)
        const em = Math.abs(d.m[i]! - full.m[range.start + i]!) / (cut.scales[2 * b]! * gap(ADAM8_MAP_M))
        const ev = Math.abs(d.v[i]! - full.v[range.start + i]!) / (cut.scales[2 * b + 1]! * gap(ADAM8_MAP_V))
        worst = Math.max(worst, em, ev)
      }
    // Half a step, plus the f32 roundings of the decodes and the division (a few ulp of the absmax).
    t.true(worst <= 0.5 + 1e-4, `rank ${r} of 4: an error of ${worst} code steps`)
  }
})

test('a state whose codes do not fit its shard is a TrainingError naming the old rank', t => {
  const { rng } = seededRng(t, 3)
  const old = Array.from({ length: 2 }, (_, r) => stateOf(2, r, rng))
  old[1] = { ...old[1]!, adam8: { ...old[1]!.adam8!, scales: old[1]!.adam8!.scales.subarray(2) } }
  t.throws(() => cutAdam8(layout, old, shardRange(N, 3, 2), 2), { instanceOf: TrainingError, message: /old rank 1 does not fit/ })
  // An 8-bit AdamW state read as 8-bit Lion's (v codes and absmax pairs where one moment is expected).
  const adamw = Array.from({ length: 2 }, (_, r) => stateOf(2, r, rng))
  t.throws(() => cutAdam8(layout, adamw, shardRange(N, 2, 0), 1), { instanceOf: TrainingError, message: /8-bit Lion state of old rank 0 does not fit/ })
})

test('8-bit Lion (one moment): the same world size copies m codes and absmaxes bit for bit; another re-blocks m within half a code step', t => {
  const { rng } = seededRng(t, 22)
  const old = Array.from({ length: 3 }, (_, r) => stateOf(3, r, rng, 1))
  t.true(old.every((st, r) => st.adam8!.v.length === 0 && st.adam8!.scales.length === adam8Runs(layout, shardRange(N, 3, r)).blocks))
  for (let r = 0; r < 3; r++) t.deepEqual(cutAdam8(layout, old, shardRange(N, 3, r), 1), old[r]!.adam8!)
  const full = new Float32Array(N)
  old.forEach((st, r) => full.set(decodeAdam8(layout, shardRange(N, 3, r), st.adam8!, 1).m, shardRange(N, 3, r).start))
  const gap = Math.max(...ADAM8_MAP_M.slice(1).map((x, i) => x - ADAM8_MAP_M[i]!))
  for (let r = 0; r < 2; r++) {
    const range = shardRange(N, 2, r)
    const { runs, blocks } = adam8Runs(layout, range)
    const cut = cutAdam8(layout, old, range, 1)
    t.deepEqual([cut.m.length, cut.v.length, cut.scales.length], [range.length, 0, blocks])
    const d = decodeAdam8(layout, range, cut, 1).m
    let worst = 0
    for (const run of runs)
      for (let i = run.at; i < run.at + run.length; i++) {
        const b = run.block + Math.floor((i - run.at) / ADAM8_BLOCK)
        worst = Math.max(worst, Math.abs(d[i]! - full[range.start + i]!) / (cut.scales[b]! * gap))
      }
    t.true(worst <= 0.5 + 1e-4, `rank ${r} of 2: an error of ${worst} code steps`)
  }
})
