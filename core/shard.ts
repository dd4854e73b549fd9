import { InvalidArgumentError } from './errors.ts'

/**
 * The shard layout: how a flat buffer of `n` elements is split over `parts` ranks. Every
 * layer uses this one rule: the collectives split and gather buffers by it, the trainer owns,
 * snapshots and resumes its range, and export and the simulator join the ranks' shards back
 * with {@link assembleFlat}. Shards are balanced, not padded: the first `n % parts` shards hold
 * one element more, so lengths differ by at most one (zero-length shards when n < parts).
 */

/** A contiguous element range. */
export interface Range {
  start: number
  length: number
}

/** Shard `index` of `n` elements split `parts` ways (see the layout above). */
export function shardRange(n: number, parts: number, index: number): Range {
  const base = Math.floor(n / parts)
  const extra = n % parts
  return { start: index * base + Math.min(index, extra), length: base + (index < extra ? 1 : 0) }
}

/**
 * Joins every rank's shard (rank order) back into the flat buffer of `length` elements.
 * Throws InvalidArgumentError, before allocating, when the geometry is bad or a shard's length
 * is not the one {@link shardRange} gives its rank.
 */
export function assembleFlat(shards: readonly Float32Array[], length: number): Float32Array {
  const P = shards.length
  if (!Number.isSafeInteger(length) || length < 0 || P < 1) throw new InvalidArgumentError(`bad shard geometry: length ${length}, ${P} shards`)
  shards.forEach((s, r) => {
    const want = shardRange(length, P, r).length
    if (s.length !== want) throw new InvalidArgumentError(`shard ${r} has ${s.length} elements, expected ${want} (${length} over ${P} ranks)`)
  })
  const out = new Float32Array(length)
  shards.forEach((s, r) => {
    out.set(s, shardRange(length, P, r).start)
  })
  return out
}
