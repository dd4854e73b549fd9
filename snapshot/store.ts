import { ProtocolError, type Logger, type MetricsRegistry, defineCounter, defineGauge, type Counter, type Gauge } from '../core/index.ts'
import type { PeerId, View } from '../mesh/index.ts'
import { snapshotError, SnapshotErrorCode, StoreFullError, type SnapshotErrorCodeT } from './errors.ts'
import { fragmentDigest, verifyFragment, type FragmentLabel, type SnapshotFragment } from './fragment.ts'
import { SNAPSHOT_LIMITS } from './limits.ts'
import { placeStripe } from './placement.ts'

/** A fragment as held: its segments, its digest and when it arrived. */
export interface HeldFragment extends SnapshotFragment {
  digest: bigint
}

/** The snapshot version every member of a view has complete: what a restart rolls back to. */
export interface RecoveryPoint {
  version: number
  epoch: number
}

/** Room reserved for a fragment whose label passed the checks; its body is still to come. */
export interface Reservation {
  readonly label: FragmentLabel
  /** The same fragment is already held: nothing to receive. */
  readonly duplicate: boolean
}

export interface StoreStats {
  usedBytes: number
  reservedBytes: number
  capBytes: number
  fragments: number
  owners: number
  stored: number
  duplicates: number
  evicted: number
  /** Refusals by code (STORE_FULL, STALE_EPOCH, MISDIRECTED, ...). */
  refused: Record<string, number>
}

export interface FragmentStoreInit {
  /** This holder. */
  self: PeerId
  /** Memory cap: bytes of fragment bodies held plus reserved. Default SNAPSHOT_LIMITS.defaultStoreBytes. */
  capBytes?: number
}

export interface FragmentStore {
  /** Installs the view puts are checked against (placement, epoch). */
  setView(view: View): void
  /**
   * Checks a label before its body is read and reserves room for the body: epoch, owner,
   * placement (misdirected), version, duplicates, version and owner caps, memory cap. Throws a
   * snapshot ProtocolError or {@link StoreFullError}; both count as refusals.
   */
  reserve(label: FragmentLabel): Reservation
  /** Verifies the body (every segment's checksums) and stores it; frees the reservation either way. */
  commit(r: Reservation, segments: Uint8Array[]): void
  /** Gives a reservation back unused (the transfer failed). */
  release(r: Reservation): void
  /** reserve + commit, for fragments already in memory. */
  put(f: SnapshotFragment): 'stored' | 'duplicate'
  get(owner: string, version: number, epoch: number, index: number): HeldFragment | undefined
  /** Labels of everything held for `owner`, newest version first (at most maxListEntries). */
  list(owner: string): FragmentLabel[]
  /** A manifest says (owner, version, epoch) is complete on all its holders. */
  markComplete(owner: string, version: number, epoch: number): void
  /**
   * Every member of the view has (version, epoch) complete: drop everything older (versions
   * below it, epochs below it), which is what lets the store hold the newest complete version
   * and the previous one only until the newest is complete everywhere.
   */
  setRecoveryPoint(rp: RecoveryPoint): void
  /** Drops every fragment of `owner` (a departed rank whose state was recovered and re-striped). */
  forget(owner: string): void
  /** Test hook for the corrupt-fragment-in-store hardening test: flips a byte of a held fragment. */
  corruptForTest(owner: string, version: number, epoch: number, index: number, at?: number): boolean
  stats(): StoreStats
  /** Drops everything. */
  clear(): void
}

interface VersionEntry {
  version: number
  epoch: number
  k: number
  m: number
  stateChecksum: bigint
  complete: boolean
  frags: Map<number, HeldFragment>
}

const entryKey = (version: number, epoch: number): string => `${version}/${epoch}`

/**
 * A holder's fragments, bounded by a memory cap. Pure bookkeeping: the snapshot service feeds
 * it from the network. Metrics (optional): `zeromesh_snapshot_store_bytes`,
 * `zeromesh_snapshot_store_fragments`, `zeromesh_snapshot_store_refused_total{code}`.
 */
export function createFragmentStore (init: FragmentStoreInit, deps: { log?: Logger, metrics?: MetricsRegistry } = {}): FragmentStore {
  const cap = init.capBytes ?? SNAPSHOT_LIMITS.defaultStoreBytes
  const owners = new Map<string, Map<string, VersionEntry>>()
  let view: View | undefined
  let rp: RecoveryPoint | undefined
  let used = 0
  let reserved = 0
  let fragments = 0
  const counts = { stored: 0, duplicates: 0, evicted: 0 }
  const refused: Record<string, number> = {}
  const placements = new Map<string, PeerId[]>()
  let mBytes: Gauge | undefined
  let mFrags: Gauge | undefined
  let mRefused: Counter<'code'> | undefined
  if (deps.metrics !== undefined) {
    mBytes = defineGauge(deps.metrics, { name: 'zeromesh_snapshot_store_bytes', help: 'Bytes of snapshot fragments held' })
    mFrags = defineGauge(deps.metrics, { name: 'zeromesh_snapshot_store_fragments', help: 'Snapshot fragments held' })
    mRefused = defineCounter(deps.metrics, { name: 'zeromesh_snapshot_store_refused_total', help: 'Fragments refused by the store, by reason', labelNames: ['code'] as const })
  }
  const gauges = (): void => {
    mBytes?.set(used)
    mFrags?.set(fragments)
  }

  const refuse = (code: SnapshotErrorCodeT, message: string, details: Record<string, unknown>, action: 'ignore' | 'reject' = 'ignore'): never => {
    refused[code] = (refused[code] ?? 0) + 1
    mRefused?.inc({ code })
    deps.log?.debug({ code, ...details }, 'snapshot fragment refused')
    throw snapshotError(code, message, details, action)
  }

  const dropEntry = (owner: string, versions: Map<string, VersionEntry>, key: string): void => {
    const e = versions.get(key)
    if (e === undefined) return
    for (const f of e.frags.values()) {
      used -= f.label.bodyBytes
      fragments--
    }
    versions.delete(key)
    if (versions.size === 0) owners.delete(owner)
  }

  // Owners in the view have re-striped at the recovery point: anything older of theirs goes.
  // Owners that left the view keep their newest fragments (a replacement may still need to
  // recover them) until forget(), or until they are maxDepartedEpochs behind.
  const gc = (): void => {
    if (rp === undefined || view === undefined) return
    const members = new Set(view.members.map(x => x.id))
    for (const [owner, versions] of [...owners]) {
      const departed = !members.has(owner)
      const newestEpoch = Math.max(...[...versions.values()].map(e => e.epoch))
      for (const [key, e] of [...versions]) {
        const drop = departed
          ? newestEpoch + SNAPSHOT_LIMITS.maxDepartedEpochs < rp.epoch
          : e.epoch < rp.epoch || e.version < rp.version
        if (drop) {
          dropEntry(owner, versions, key)
          counts.evicted++
        }
      }
    }
    gauges()
  }

  const placementOf = (v: View, rank: number, k: number, m: number): PeerId[] => {
    const key = `${v.epoch}/${rank}/${k}/${m}`
    let p = placements.get(key)
    if (p === undefined) {
      p = placeStripe(v, rank, k, m)
      if (placements.size > 4096) placements.clear()
      placements.set(key, p)
    }
    return p
  }

  const store: FragmentStore = {
    setView (v) {
      if (view !== undefined && v.epoch <= view.epoch) return
      view = { epoch: v.epoch, members: v.members.map(x => ({ ...x })) }
      placements.clear()
    },

    reserve (label) {
      const d = { owner: label.owner, version: label.version, epoch: label.epoch, index: label.index }
      if (view === undefined) refuse(SnapshotErrorCode.FUTURE_EPOCH, 'holder has no view yet', d)
      const v = view!
      if (label.epoch < v.epoch) refuse(SnapshotErrorCode.STALE_EPOCH, `fragment of epoch ${label.epoch}, the holder is at epoch ${v.epoch}`, d)
      if (label.epoch > v.epoch) refuse(SnapshotErrorCode.FUTURE_EPOCH, `fragment of epoch ${label.epoch}, the holder is still at epoch ${v.epoch}`, d)
      if (label.rank >= v.members.length || v.members[label.rank]!.id !== label.owner) {
        refuse(SnapshotErrorCode.MISDIRECTED, `${label.owner} is not rank ${label.rank} of epoch ${v.epoch}`, d, 'reject')
      }
      if (label.k + label.m > v.members.length - 1 || placementOf(v, label.rank, label.k, label.m)[label.index] !== init.self) {
        refuse(SnapshotErrorCode.MISDIRECTED, `fragment ${label.index} of rank ${label.rank} is not placed on ${init.self} in epoch ${v.epoch}`, d, 'reject')
      }
      if (rp !== undefined && label.version < rp.version) refuse(SnapshotErrorCode.STALE_VERSION, `version ${label.version} is older than the recovery point ${rp.version}`, d)
      const versions = owners.get(label.owner)
      const entry = versions?.get(entryKey(label.version, label.epoch))
      const held = entry?.frags.get(label.index)
      if (entry !== undefined && (entry.stateChecksum !== label.stateChecksum || entry.k !== label.k || entry.m !== label.m)) {
        refuse(SnapshotErrorCode.DUPLICATE_CONFLICT, `version ${label.version} of ${label.owner} is already held with other contents`, d, 'reject')
      }
      if (held !== undefined) {
        if (held.label.bodyBytes !== label.bodyBytes || held.label.segmentBytes !== label.segmentBytes) {
          refuse(SnapshotErrorCode.DUPLICATE_CONFLICT, `fragment ${label.index} of ${label.owner}@${label.version} is already held with other contents`, d, 'reject')
        }
        counts.duplicates++
        return { label, duplicate: true }
      }
      if (versions === undefined && owners.size >= SNAPSHOT_LIMITS.maxOwnersPerStore) {
        refuse(SnapshotErrorCode.STORE_FULL, `store holds fragments of ${owners.size} owners, the cap`, d)
      }
      if (entry === undefined && versions !== undefined && versions.size >= SNAPSHOT_LIMITS.maxVersionsPerOwner) {
        // Make room by dropping the oldest entry that is neither at the recovery point nor the
        // newest complete one, if it is older than what arrives; otherwise the newcomer is stale.
        const all = [...versions.values()].sort((a, b) => a.version - b.version || a.epoch - b.epoch)
        const newestComplete = all.filter(e => e.complete).at(-1)
        const victim = all.find(e => e !== newestComplete && !(rp !== undefined && e.version === rp.version) && e.version < label.version)
        if (victim === undefined) refuse(SnapshotErrorCode.STALE_VERSION, `${label.owner} already has ${versions.size} newer or pinned versions held`, d)
        dropEntry(label.owner, versions, entryKey(victim!.version, victim!.epoch))
        counts.evicted++
      }
      if (used + reserved + label.bodyBytes > cap) {
        refused[SnapshotErrorCode.STORE_FULL] = (refused[SnapshotErrorCode.STORE_FULL] ?? 0) + 1
        mRefused?.inc({ code: SnapshotErrorCode.STORE_FULL })
        deps.log?.warn({ usedBytes: used, reservedBytes: reserved, wantBytes: label.bodyBytes, capBytes: cap }, 'snapshot store full')
        throw new StoreFullError(used + reserved, label.bodyBytes, cap)
      }
      reserved += label.bodyBytes
      return { label, duplicate: false }
    },

    commit (r, segments) {
      if (r.duplicate) return
      reserved -= r.label.bodyBytes
      const f: SnapshotFragment = { label: r.label, segments }
      try {
        verifyFragment(f)
      } catch (err) {
        if (err instanceof ProtocolError) {
          refused[err.code] = (refused[err.code] ?? 0) + 1
          mRefused?.inc({ code: err.code })
        }
        throw err
      }
      const l = r.label
      let versions = owners.get(l.owner)
      if (versions === undefined) {
        versions = new Map()
        owners.set(l.owner, versions)
      }
      const key = entryKey(l.version, l.epoch)
      let entry = versions.get(key)
      if (entry === undefined) {
        entry = { version: l.version, epoch: l.epoch, k: l.k, m: l.m, stateChecksum: l.stateChecksum, complete: false, frags: new Map() }
        versions.set(key, entry)
      }
      if (entry.frags.has(l.index)) {
        counts.duplicates++
        return
      }
      entry.frags.set(l.index, { label: l, segments, digest: fragmentDigest(segments) })
      used += l.bodyBytes
      fragments++
      counts.stored++
      gauges()
    },

    release (r) {
      if (!r.duplicate) reserved -= r.label.bodyBytes
    },

    put (f) {
      const r = store.reserve(f.label)
      if (r.duplicate) return 'duplicate'
      store.commit(r, f.segments)
      return 'stored'
    },

    get (owner, version, epoch, index) {
      return owners.get(owner)?.get(entryKey(version, epoch))?.frags.get(index)
    },

    list (owner) {
      const versions = owners.get(owner)
      if (versions === undefined) return []
      const out: FragmentLabel[] = []
      const sorted = [...versions.values()].sort((a, b) => b.version - a.version || b.epoch - a.epoch)
      for (const e of sorted) {
        for (const f of e.frags.values()) {
          if (out.length >= SNAPSHOT_LIMITS.maxListEntries) return out
          out.push(f.label)
        }
      }
      return out
    },

    markComplete (owner, version, epoch) {
      const e = owners.get(owner)?.get(entryKey(version, epoch))
      if (e !== undefined) e.complete = true
    },

    setRecoveryPoint (next) {
      if (rp !== undefined && (next.epoch < rp.epoch || (next.epoch === rp.epoch && next.version <= rp.version))) return
      rp = { ...next }
      gc()
    },

    forget (owner) {
      const versions = owners.get(owner)
      if (versions === undefined) return
      for (const key of [...versions.keys()]) dropEntry(owner, versions, key)
      gauges()
    },

    corruptForTest (owner, version, epoch, index, at = 100) {
      const f = store.get(owner, version, epoch, index)
      const seg = f?.segments[0]
      if (seg === undefined) return false
      seg[Math.min(at, seg.length - 1)]! ^= 0x5a
      return true
    },

    stats () {
      return { usedBytes: used, reservedBytes: reserved, capBytes: cap, fragments, owners: owners.size, ...counts, refused: { ...refused } }
    },

    clear () {
      owners.clear()
      used = 0
      fragments = 0
      gauges()
    }
  }
  return store
}

