import type { Logger } from '../core/index.ts'
import type { PeerId, View } from '../mesh/index.ts'
import { SNAPSHOT_LIMITS } from './limits.ts'
import type { Manifest } from './manifest.ts'
import type { FragmentStore, RecoveryPoint } from './store.ts'

/** What a manifest book uses: the current view, and the store it tells about completed versions. */
export interface ManifestBookDeps {
  view: () => View | undefined
  store: Pick<FragmentStore, 'markComplete' | 'setRecoveryPoint'>
  log?: Logger
}

/**
 * The manifests a node knows (its own and those gossiped by other owners), and the recovery
 * point they imply: the newest version every member of the view has complete under its epoch.
 * Bounded: maxManifestsPerOwner per owner (the recovery point's manifest is never the one
 * dropped), maxManifestOwners owners.
 */
export interface ManifestBook {
  /** Records a manifest (a no-op for one already known), marks its version complete in the store and updates the recovery point. */
  apply(mf: Manifest): void
  /** Manifests known for `owner`, newest first (a copy). */
  list(owner: PeerId): Manifest[]
  /** The newest manifest of `owner` matching `version` and `epoch` where given. */
  newest(owner: PeerId, version?: number, epoch?: number): Manifest | undefined
  /** Recomputes the recovery point (after a view change). */
  update(): void
  recoveryPoint(): RecoveryPoint | undefined
  /** Drops the manifests of `owner`. */
  forget(owner: PeerId): void
}

/** Creates an empty manifest book. */
export function createManifestBook(deps: ManifestBookDeps): ManifestBook {
  const manifests = new Map<PeerId, Manifest[]>()
  let rp: RecoveryPoint | undefined

  const update = (): void => {
    const v = deps.view()
    if (v === undefined) return
    const version = commonVersion(v, owner => manifests.get(owner))
    if (version === undefined) return
    if (rp !== undefined && (rp.epoch > v.epoch || (rp.epoch === v.epoch && rp.version >= version))) return
    rp = { version, epoch: v.epoch }
    deps.log?.debug({ version, epoch: v.epoch }, 'snapshot recovery point')
    deps.store.setRecoveryPoint(rp)
  }

  const listFor = (owner: PeerId): Manifest[] | undefined => {
    const list = manifests.get(owner)
    if (list !== undefined) return list
    if (manifests.size >= SNAPSHOT_LIMITS.maxManifestOwners) {
      // At the cap, an owner outside the view makes room; with none, the newcomer is dropped.
      const members = new Set(deps.view()?.members.map(x => x.id) ?? [])
      const victim = [...manifests.keys()].find(o => !members.has(o))
      if (victim === undefined) return undefined
      manifests.delete(victim)
    }
    const fresh: Manifest[] = []
    manifests.set(owner, fresh)
    return fresh
  }

  return {
    apply(mf) {
      const list = listFor(mf.owner)
      if (list === undefined) return
      if (list.some(x => x.version === mf.version && x.epoch === mf.epoch)) return
      list.push(mf)
      list.sort((a, b) => b.version - a.version || b.epoch - a.epoch)
      if (list.length > SNAPSHOT_LIMITS.maxManifestsPerOwner) {
        // The oldest goes, unless it is the recovery point's: stores pin that version, and a
        // recovery offers it (node/train/recovery.ts) only while its manifest is known.
        const atRp = (x: Manifest): boolean => rp !== undefined && x.version === rp.version && x.epoch === rp.epoch
        const victim = list.findLastIndex(x => !atRp(x))
        list.splice(victim, 1)
      }
      deps.store.markComplete(mf.owner, mf.version, mf.epoch)
      update()
    },
    list: owner => [...(manifests.get(owner) ?? [])],
    newest: (owner, version, epoch) =>
      (manifests.get(owner) ?? []).find(x => (version === undefined || x.version === version) && (epoch === undefined || x.epoch === epoch)),
    update,
    recoveryPoint: () => rp,
    forget(owner) {
      manifests.delete(owner)
    }
  }
}

/**
 * The newest version that every member of `view` with any manifest has complete under the
 * view's epoch, or undefined when there is none. A member that never placed a snapshot (a
 * spare) holds no state to protect and does not count.
 */
export function commonVersion(view: View, manifestsOf: (owner: PeerId) => readonly Manifest[] | undefined): number | undefined {
  let common: Set<number> | undefined
  for (const mem of view.members) {
    const all = manifestsOf(mem.id)
    if (all === undefined || all.length === 0) continue
    const versions = new Set(all.filter(x => x.epoch === view.epoch).map(x => x.version))
    common = common === undefined ? versions : new Set([...common].filter(x => versions.has(x)))
    if (common.size === 0) return undefined
  }
  if (common === undefined) return undefined
  return Math.max(...common)
}
