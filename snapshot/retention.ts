import { SNAPSHOT_LIMITS } from './limits.ts'

/** The snapshot version every member of a view has complete: what a restart rolls back to. */
export interface RecoveryPoint {
  version: number
  epoch: number
}

/** A version of one owner held by a store, as the retention rules see it. */
export interface HeldVersion {
  version: number
  epoch: number
  /** A manifest said every holder has its fragment of this version. */
  complete: boolean
}

/**
 * Whether a store drops a held version of an owner once every member of the view has `rp`
 * complete. Owners in the view have re-striped at the recovery point: anything older of theirs
 * goes. Owners that left the view keep their fragments (a replacement may still need to
 * recover them) until forgotten, or until their newest epoch is maxDepartedEpochs behind.
 */
export function isExpired(held: HeldVersion, owner: { departed: boolean; newestEpoch: number }, rp: RecoveryPoint): boolean {
  return owner.departed ? owner.newestEpoch + SNAPSHOT_LIMITS.maxDepartedEpochs < rp.epoch : held.epoch < rp.epoch || held.version < rp.version
}

/**
 * The version to drop so that `incoming` fits when an owner already has maxVersionsPerOwner
 * held: the oldest that is neither the newest complete one nor at the recovery point, and is
 * older than `incoming`. Failing that, when `incoming` comes under a newer epoch, the oldest
 * version of an older epoch that is not the recovery point: the owner rolled back and trains
 * again from an older step, and the versions its abandoned steps left must not keep the new
 * ones out. Undefined: the newcomer is the stale one.
 */
export function evictionVictim<T extends HeldVersion>(
  held: Iterable<T>,
  rp: RecoveryPoint | undefined,
  incoming: number,
  incomingEpoch = Number.NEGATIVE_INFINITY
): T | undefined {
  const all = [...held].sort((a, b) => a.version - b.version || a.epoch - b.epoch)
  const newestComplete = all.filter(e => e.complete).at(-1)
  const pinned = (e: T): boolean => rp !== undefined && e.version === rp.version
  return all.find(e => e !== newestComplete && !pinned(e) && e.version < incoming) ?? all.find(e => e.epoch < incomingEpoch && !pinned(e))
}
