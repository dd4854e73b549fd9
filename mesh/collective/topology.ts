import { InvalidArgumentError, shardRange, type Range } from '../../core/index.ts'
import type { Member } from '../membership/index.ts'
import type { PeerLabels } from '../peernet.ts'

/**
 * Placement arithmetic shared by every collective: windows of the shard layout (core's
 * shardRange), tiers of a link, the nested groups of a view (by label keys such as zone or
 * host), the ring order and the relays of the hierarchical reduce-scatter. Pure functions of
 * the view, so every member computes the same.
 */

/**
 * Rank `index`'s part of the window [offset, offset + length) of a vector of `total` elements
 * sharded by {@link shardRange}: the intersection, relative to the window (maybe empty).
 */
export function windowRange(total: number, parts: number, index: number, offset: number, length: number): Range {
  const r = shardRange(total, parts, index)
  const a = Math.min(Math.max(r.start, offset), offset + length)
  const b = Math.max(Math.min(r.start + r.length, offset + length), a)
  return { start: a - offset, length: b - a }
}

/** The network tier a link between two labelled peers crosses (SimNet's rule). */
export type LinkTier = 'host' | 'zone' | 'wan'

export function linkTier(a: PeerLabels, b: PeerLabels): LinkTier {
  return a.host === b.host ? 'host' : a.zone === b.zone ? 'zone' : 'wan'
}

/** A label key that groups members into a tier. */
export type TierKey = keyof PeerLabels

/** One group of the hierarchy: members (ranks, ascending) and its level-(l-1) subgroups. */
export interface Group {
  level: number
  members: readonly number[]
  /** Ordered by their lowest rank. Level 0 groups (single ranks) have none. */
  subgroups: readonly Group[]
}

/**
 * Nested groups of a view. Level 0: single ranks; level l (1..k): members sharing the label
 * keys[l-1] *and* every outer key (so groups nest); the last level: everyone. Levels that do
 * not split anything further (the same groups as the level below) are dropped.
 */
export interface Hierarchy {
  levels: ReadonlyArray<readonly Group[]>
  /** groupOf[level][rank]: the group of `rank` at `level`. */
  groupOf: ReadonlyArray<readonly Group[]>
  top: Group
}

export function buildHierarchy(members: readonly Member[], keys: readonly TierKey[]): Hierarchy {
  const n = members.length
  if (n < 1) throw new InvalidArgumentError('a hierarchy needs at least one member')
  const partitions: number[][][] = [members.map((_, r) => [r])]
  for (let l = 0; l <= keys.length; l++) {
    // Level l+1 groups by the tuple of keys[l..]; after the last key, one group of everyone.
    const outer = keys.slice(l)
    const byKey = new Map<string, number[]>()
    members.forEach((m, r) => {
      const k = JSON.stringify(outer.map(key => m[key]))
      let g = byKey.get(k)
      if (g === undefined) byKey.set(k, (g = []))
      g.push(r)
    })
    const groups = [...byKey.values()]
    if (groups.length === partitions.at(-1)!.length) continue // splits nothing further
    partitions.push(groups)
  }
  const levels: Group[][] = []
  const groupOf: Group[][] = []
  partitions.forEach((groups, level) => {
    const below = groupOf[level - 1]
    const built = groups.map(ranks => {
      const subgroups: Group[] = []
      if (below !== undefined) {
        for (const r of ranks) if (!subgroups.includes(below[r]!)) subgroups.push(below[r]!)
      }
      return { level, members: ranks, subgroups }
    })
    levels.push(built)
    const of: Group[] = new Array(n)
    for (const g of built) for (const r of g.members) of[r] = g
    groupOf.push(of)
  })
  return { levels, groupOf, top: levels.at(-1)![0]! }
}

/**
 * Ring order: a depth-first walk of the hierarchy (subgroups by lowest rank, ranks ascending),
 * so every group is contiguous and the ring crosses each tier boundary as few times as it can.
 */
export function ringOrder(h: Hierarchy): number[] {
  const out: number[] = []
  const walk = (g: Group): void => {
    if (g.level === 0) out.push(g.members[0]!)
    else for (const s of g.subgroups) walk(s)
  }
  walk(h.top)
  return out
}

/**
 * The member of `g` that collects (reduces) the slice owned by rank `d` at g's level:
 * `d` itself when `d` is in `g`; the relay of g's only subgroup when g has one; otherwise the
 * member at the index `d` has inside its own group of that level (modulo g's size): the
 * ZeRO++ pairing of "same local rank in every zone". So each cross-group link carries one
 * partial sum per destination slice.
 */
export function relayOf(h: Hierarchy, g: Group, d: number): number {
  if (g.level === 0) return g.members[0]!
  if (h.groupOf[g.level]![d] === g) return d
  if (g.subgroups.length === 1) return relayOf(h, g.subgroups[0]!, d)
  const own = h.groupOf[g.level]![d]!
  const idx = own.members.indexOf(d)
  return g.members[idx % g.members.length]!
}
