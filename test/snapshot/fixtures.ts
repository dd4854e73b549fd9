import { Rng } from '../../core/index.ts'
import { createErasureCoder } from '../../codec/index.ts'
import type { View } from '../../mesh/index.ts'
import { encodeState, placeStripe, stripeState, type SnapshotFragment } from '../../snapshot/index.ts'
import { randomState, topology } from './helpers.ts'

/** Fragments of rank `owner`'s state at `step` under `view` (k=3, m=2), and their holders. */
export function fragmentsFor(
  view: View,
  owner: number,
  step: number,
  opts: { n?: number; seed?: number; k?: number; m?: number } = {}
): { frags: SnapshotFragment[]; holders: string[]; bytes: Uint8Array } {
  const k = opts.k ?? 3
  const m = opts.m ?? 2
  const bytes = encodeState(
    randomState(Rng.fromSeed(opts.seed ?? step * 100 + owner), opts.n ?? 1000, { rank: owner, worldSize: view.members.length, step, epoch: view.epoch })
  )
  const frags = stripeState(bytes, { owner: view.members[owner]!.id, rank: owner, epoch: view.epoch, coder: createErasureCoder({ k, m }), segmentBytes: 4096 })
  return { frags, holders: placeStripe(view, owner, k, m), bytes }
}

export const view7 = (epoch = 1): View => ({ epoch, members: topology(7) })
