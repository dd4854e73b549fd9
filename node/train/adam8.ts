import { shardRange } from '../../core/index.ts'
import { adam8Blocks, adam8Decode, adam8Encode, type GptLayout } from '../../gpu/index.ts'
import type { Adam8Arrays, RankState } from '../../snapshot/index.ts'
import { decaySegments, TrainingError, type ShardRange } from './config.ts'

/**
 * How 8-bit AdamW's moments (gpu/adam8.ts) lie on a shard. The step runs once per decay
 * segment of the shard, and each call quantizes its own elements in blocks from the segment's
 * first element: so a shard's blocks restart at every segment boundary, and its block count is
 * the sum over its segments. The codes are one byte per shard element (at the element's
 * offset in the shard); block k of the shard has the absmax pair `scales[2k]` (m) and
 * `scales[2k + 1]` (v).
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

/** A fresh 8-bit state of `shard`: every code and absmax 0 (all moments 0). */
export function freshAdam8(layout: GptLayout, shard: ShardRange): Adam8Arrays {
  const { blocks } = adam8Runs(layout, shard)
  return { m: new Uint8Array(shard.length), v: new Uint8Array(shard.length), scales: new Float32Array(2 * blocks) }
}

/** The scales of `run` within a state's scales. */
const runScales = (scales: Float32Array, run: Adam8Run): Float32Array => scales.subarray(2 * run.block, 2 * (run.block + adam8Blocks(run.length)))

/** The f32 moments a shard's 8-bit state stands for (elements outside every run: 0). */
export function decodeAdam8(layout: GptLayout, shard: ShardRange, a: Adam8Arrays): { m: Float32Array; v: Float32Array } {
  const m = new Float32Array(shard.length)
  const v = new Float32Array(shard.length)
  for (const r of adam8Runs(layout, shard).runs) {
    const sc = runScales(a.scales, r)
    adam8Decode(a.m.subarray(r.at, r.at + r.length), sc, 0, m.subarray(r.at, r.at + r.length))
    adam8Decode(a.v.subarray(r.at, r.at + r.length), sc, 1, v.subarray(r.at, r.at + r.length))
  }
  return { m, v }
}

/** The 8-bit state of `shard` holding the f32 moments `m` and `v` (as near as the codes come). */
export function encodeAdam8(layout: GptLayout, shard: ShardRange, m: Float32Array, v: Float32Array): Adam8Arrays {
  const out = freshAdam8(layout, shard)
  for (const r of adam8Runs(layout, shard).runs) {
    const sc = runScales(out.scales, r)
    adam8Encode(m.subarray(r.at, r.at + r.length), 0, out.m.subarray(r.at, r.at + r.length), sc)
    adam8Encode(v.subarray(r.at, r.at + r.length), 1, out.v.subarray(r.at, r.at + r.length), sc)
  }
  return out
}

/** Throws a TrainingError unless `st`'s 8-bit moments fit its shard (old rank `st.rank` of `states` ranks). */
function checkAdam8(layout: GptLayout, st: RankState, range: ShardRange): Adam8Arrays {
  const a = st.adam8
  const want = adam8Runs(layout, range).blocks
  if (a === undefined || a.m.length !== range.length || a.v.length !== range.length || a.scales.length !== 2 * want)
    throw new TrainingError(
      `the 8-bit AdamW state of old rank ${st.rank} does not fit its shard (${range.length} elements in ${want} blocks; ` +
        `got ${a?.m.length ?? 0} codes and ${(a?.scales.length ?? 0) / 2} blocks)`
    )
  return a
}

/**
 * The 8-bit moments of `shard` from every old rank's state (rank order): a copy of the old
 * rank's own when its range is `shard`, else decoded, cut and quantized again in `shard`'s
 * blocks (see the top of this file).
 */
export function cutAdam8(layout: GptLayout, states: readonly RankState[], shard: ShardRange): Adam8Arrays {
  const N = layout.length
  const P = states.length
  const ranges = states.map((_, r) => shardRange(N, P, r))
  const same = ranges.findIndex(x => x.start === shard.start && x.length === shard.length)
  if (same >= 0) {
    const a = checkAdam8(layout, states[same]!, ranges[same]!)
    return { m: a.m.slice(), v: a.v.slice(), scales: a.scales.slice() }
  }
  const m = new Float32Array(shard.length)
  const v = new Float32Array(shard.length)
  const end = Math.min(N, shard.start + shard.length)
  states.forEach((st, r) => {
    const at = ranges[r]!.start
    const a = Math.max(at, shard.start)
    const b = Math.min(at + ranges[r]!.length, end)
    if (a >= b) return
    const old = decodeAdam8(layout, ranges[r]!, checkAdam8(layout, st, ranges[r]!))
    m.set(old.m.subarray(a - at, b - at), a - shard.start)
    v.set(old.v.subarray(a - at, b - at), a - shard.start)
  })
  return encodeAdam8(layout, shard, m, v)
}
