import { shardRange } from '../../core/index.ts'
import { adam8Blocks, adam8Decode, adam8Encode, type GptLayout, type Moments8 } from '../../gpu/index.ts'
import type { Adam8Arrays, RankState } from '../../snapshot/index.ts'
import { decaySegments, TrainingError, type ShardRange } from './config.ts'

/**
 * How an 8-bit optimizer's moments (gpu/adam8.ts) lie on a shard. The step runs once per decay
 * segment of the shard, and each call quantizes its own elements in blocks from the segment's
 * first element: so a shard's blocks restart at every segment boundary, and its block count is
 * the sum over its segments. The codes are one byte per shard element and moment (at the
 * element's offset in the shard); block b of the shard has moment j's absmax at `scales[k·b + j]`
 * for a state of k moments (8-bit AdamW: k = 2, m and v; 8-bit Lion: k = 1, m alone).
 *
 * Blocks depend on where the shard starts: a shard boundary cuts a segment at an arbitrary
 * element. Two world sizes therefore block the same elements differently, and a state cannot be
 * re-sharded bit for bit: {@link cutAdam8} copies a shard whose range is an old rank's
 * verbatim (recovery and `--resume` on the same world size stay bit-identical) and otherwise
 * decodes the old codes to f32 and quantizes them again in the new blocks (shrink, grow,
 * `--resume` under another world size: one more rounding to the nearest code, docs/LIMITS.md).
 */

/** One decay segment of a shard: its elements (offset in the shard, length) and its first block. */
export interface Adam8Run {
  at: number
  length: number
  block: number
}

/** The runs of an 8-bit state of `shard` and its block count. */
export function adam8Runs(layout: GptLayout, shard: ShardRange): { runs: Adam8Run[]; blocks: number } {
  // The elements the optimizer sees: the shard's part of the flat vector (step.ts, shardParts).
  const length = Math.min(shard.length, Math.max(0, layout.length - shard.start))
  const runs: Adam8Run[] = []
  let blocks = 0
  for (const s of decaySegments(layout, shard.start, length)) {
    runs.push({ at: s.start - shard.start, length: s.length, block: blocks })
    blocks += adam8Blocks(s.length)
  }
  return { runs, blocks }
}

/** A fresh 8-bit state of `k` moments on `shard`: every code and absmax 0 (all moments 0; no v codes for one moment). */
export function freshAdam8(layout: GptLayout, shard: ShardRange, k: Moments8): Adam8Arrays {
  const { blocks } = adam8Runs(layout, shard)
  return { m: new Uint8Array(shard.length), v: new Uint8Array(k === 2 ? shard.length : 0), scales: new Float32Array(k * blocks) }
}

/** The scales of `run` within the scales of a state of `k` moments. */
const runScales = (scales: Float32Array, run: Adam8Run, k: Moments8): Float32Array => scales.subarray(k * run.block, k * (run.block + adam8Blocks(run.length)))

/** Whether `a` is an 8-bit state of `k` moments on a shard of `length` elements in `blocks` blocks. */
export const fitsAdam8 = (a: Adam8Arrays, length: number, blocks: number, k: Moments8): boolean =>
  a.m.length === length && a.v.length === (k === 2 ? length : 0) && a.scales.length === k * blocks

/** The f32 moments a shard's 8-bit state of `k` moments stands for (elements outside every run: 0; v empty for one moment). */
export function decodeAdam8(layout: GptLayout, shard: ShardRange, a: Adam8Arrays, k: Moments8): { m: Float32Array; v: Float32Array } {
  const m = new Float32Array(shard.length)
  const v = new Float32Array(k === 2 ? shard.length : 0)
  for (const r of adam8Runs(layout, shard).runs) {
    const sc = runScales(a.scales, r, k)
    adam8Decode(a.m.subarray(r.at, r.at + r.length), sc, k, 0, m.subarray(r.at, r.at + r.length))
    if (k === 2) adam8Decode(a.v.subarray(r.at, r.at + r.length), sc, k, 1, v.subarray(r.at, r.at + r.length))
  }
  return { m, v }
}

/** The 8-bit state of `k` moments on `shard` holding the f32 moments `m` and (two moments) `v`, as near as the codes come. */
export function encodeAdam8(layout: GptLayout, shard: ShardRange, m: Float32Array, v: Float32Array, k: Moments8): Adam8Arrays {
  const out = freshAdam8(layout, shard, k)
  for (const r of adam8Runs(layout, shard).runs) {
    const sc = runScales(out.scales, r, k)
    adam8Encode(m.subarray(r.at, r.at + r.length), k, 0, out.m.subarray(r.at, r.at + r.length), sc)
    if (k === 2) adam8Encode(v.subarray(r.at, r.at + r.length), k, 1, out.v.subarray(r.at, r.at + r.length), sc)
  }
  return out
}

/** Throws a TrainingError unless `st`'s 8-bit moments (k of them) fit its shard (old rank `st.rank` of `states` ranks). */
function checkAdam8(layout: GptLayout, st: RankState, range: ShardRange, k: Moments8): Adam8Arrays {
  const a = st.adam8
  const want = adam8Runs(layout, range).blocks
  if (a === undefined || !fitsAdam8(a, range.length, want, k))
    throw new TrainingError(
      `the 8-bit ${k === 2 ? 'AdamW' : 'Lion'} state of old rank ${st.rank} does not fit its shard (${range.length} elements in ${want} blocks; ` +
        `got ${a?.m.length ?? 0} codes and ${(a?.scales.length ?? 0) / k} blocks)`
    )
  return a
}

/**
 * The 8-bit moments (k of them) of `shard` from every old rank's state (rank order): a copy of
 * the old rank's own when its range is `shard`, else decoded, cut and quantized again in
 * `shard`'s blocks (see the top of this file).
 */
export function cutAdam8(layout: GptLayout, states: readonly RankState[], shard: ShardRange, k: Moments8): Adam8Arrays {
  const N = layout.length
  const P = states.length
  const ranges = states.map((_, r) => shardRange(N, P, r))
  const same = ranges.findIndex(x => x.start === shard.start && x.length === shard.length)
  if (same >= 0) {
    const a = checkAdam8(layout, states[same]!, ranges[same]!, k)
    return { m: a.m.slice(), v: a.v.slice(), scales: a.scales.slice() }
  }
  const m = new Float32Array(shard.length)
  const v = new Float32Array(k === 2 ? shard.length : 0)
  const end = Math.min(N, shard.start + shard.length)
  states.forEach((st, r) => {
    const at = ranges[r]!.start
    const a = Math.max(at, shard.start)
    const b = Math.min(at + ranges[r]!.length, end)
    if (a >= b) return
    const old = decodeAdam8(layout, ranges[r]!, checkAdam8(layout, st, ranges[r]!, k), k)
    m.set(old.m.subarray(a - at, b - at), a - shard.start)
    if (k === 2) v.set(old.v.subarray(a - at, b - at), a - shard.start)
  })
  return encodeAdam8(layout, shard, m, v, k)
}
