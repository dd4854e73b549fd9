import { ProtocolError, type Logger, type MetricsRegistry, defineCounter, defineGauge, type Counter, type Gauge } from '../core/index.ts'
import type { PeerId, View } from '../mesh/index.ts'
import { snapshotError, SnapshotErrorCode, StoreFullError, type SnapshotErrorCodeT } from './errors.ts'
import { fragmentDigest, verifyFragment, type FragmentLabel, type SnapshotFragment } from './fragment.ts'
import { SNAPSHOT_LIMITS } from './limits.ts'
import { placeStripe, type PlacementScope } from './placement.ts'
import { evictionVictim, isExpired, type RecoveryPoint } from './retention.ts'

export type { RecoveryPoint } from './retention.ts'

/** A fragment as held: its segments and its fragmentDigest. */
export interface HeldFragment extends SnapshotFragment {
  digest: bigint
}

/** Room reserved for a fragment whose label passed the checks; its body is still to come. */
export interface Reservation {
  readonly label: FragmentLabel
  /** The same fragment is already held: nothing to receive. */
  readonly duplicate: boolean
}

/** Counters of a store, for tests and status output. */
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

/** A store's identity and cap. */
export interface FragmentStoreInit {
  /** This holder. */
  self: PeerId
  /** Memory cap: bytes of fragment bodies held plus reserved. Default SNAPSHOT_LIMITS.defaultStoreBytes. */
  capBytes?: number
  /** Where owners place their fragments (placement.ts): a fragment whose placement names another holder is misdirected. */
  scope?: PlacementScope
}

/** A holder's fragments: admission checks, retention and a memory cap. */
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
  /** The fragment held for (owner, version, epoch, index), if any. */
  get(owner: string, version: number, epoch: number, index: number): HeldFragment | undefined
  /** Labels of everything held for `owner`, newest version first (at most maxListEntries). */
  list(owner: string): FragmentLabel[]
  /** A manifest says (owner, version, epoch) is complete on all its holders. */
  markComplete(owner: string, version: number, epoch: number): void
  /**
   * Every member of the view has (version, epoch) complete: drop what retention.ts isExpired
   * says (for members of the view: versions and epochs below it), which is what lets the store
   * hold the newest complete version and the previous one only until the newest is complete
   * everywhere.
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

/** A refusal: the snapshot error code, its message and the peer-scoring action. */
interface Refusal {
  code: SnapshotErrorCodeT
  message: string
  action: 'ignore' | 'reject'
}

/**
 * Why a label is not addressed to holder `self` under its view and recovery point, or
 * undefined when it is: a view is installed, the epoch is the view's, the owner is the label's
 * rank, the fragment is placed on `self`, and the version is not below the recovery point.
 */
function addressRefusal(
  label: FragmentLabel,
  v: View | undefined,
  rp: RecoveryPoint | undefined,
  self: PeerId,
  placementOf: (v: View, rank: number, k: number, m: number) => PeerId[]
): Refusal | undefined {
  if (v === undefined) return { code: SnapshotErrorCode.FUTURE_EPOCH, message: 'holder has no view yet', action: 'ignore' }
  if (label.epoch < v.epoch)
    return { code: SnapshotErrorCode.STALE_EPOCH, message: `fragment of epoch ${label.epoch}, the holder is at epoch ${v.epoch}`, action: 'ignore' }
  if (label.epoch > v.epoch)
    return { code: SnapshotErrorCode.FUTURE_EPOCH, message: `fragment of epoch ${label.epoch}, the holder is still at epoch ${v.epoch}`, action: 'ignore' }
  if (label.rank >= v.members.length || v.members[label.rank]!.id !== label.owner) {
    return { code: SnapshotErrorCode.MISDIRECTED, message: `${label.owner} is not rank ${label.rank} of epoch ${v.epoch}`, action: 'reject' }
  }
  if (label.k + label.m > v.members.length - 1 || placementOf(v, label.rank, label.k, label.m)[label.index] !== self) {
    return {
      code: SnapshotErrorCode.MISDIRECTED,
      message: `fragment ${label.index} of rank ${label.rank} is not placed on ${self} in epoch ${v.epoch}`,
      action: 'reject'
    }
  }
  if (rp !== undefined && label.version < rp.version)
    return { code: SnapshotErrorCode.STALE_VERSION, message: `version ${label.version} is older than the recovery point ${rp.version}`, action: 'ignore' }
  return undefined
}

/** The store's gauges and refusal counter, when metrics are on. */
interface StoreMetrics {
  bytes: Gauge
  fragments: Gauge
  refused: Counter<'code'>
}

function defineStoreMetrics(metrics: MetricsRegistry): StoreMetrics {
  return {
    bytes: defineGauge(metrics, { name: 'zeromesh_snapshot_store_bytes', help: 'Bytes of snapshot fragments held' }),
    fragments: defineGauge(metrics, { name: 'zeromesh_snapshot_store_fragments', help: 'Snapshot fragments held' }),
    refused: defineCounter(metrics, {
      name: 'zeromesh_snapshot_store_refused_total',
      help: 'Fragments refused by the store, by reason',
      labelNames: ['code'] as const
    })
  }
}

/**
 * A holder's fragments, bounded by a memory cap. Pure bookkeeping: the holder (holder.ts)
 * feeds it from the network. Metrics (optional): `zeromesh_snapshot_store_bytes`,
 * `zeromesh_snapshot_store_fragments`, `zeromesh_snapshot_store_refused_total{code}`.
 */
export function createFragmentStore(init: FragmentStoreInit, deps: { log?: Logger; metrics?: MetricsRegistry } = {}): FragmentStore {
  return new MemoryFragmentStore(init, deps)
}

class MemoryFragmentStore implements FragmentStore {
  private readonly self: PeerId
  private readonly cap: number
  private readonly scope: PlacementScope
  private readonly log: Logger | undefined
  private readonly metrics: StoreMetrics | undefined
  private readonly owners = new Map<string, Map<string, VersionEntry>>()
  private readonly placements = new Map<string, PeerId[]>()
  private view: View | undefined
  private rp: RecoveryPoint | undefined
  private used = 0
  private reserved = 0
  private fragments = 0
  private readonly counts = { stored: 0, duplicates: 0, evicted: 0 }
  private readonly refused: Record<string, number> = {}

  constructor(init: FragmentStoreInit, deps: { log?: Logger; metrics?: MetricsRegistry }) {
    this.self = init.self
    this.cap = init.capBytes ?? SNAPSHOT_LIMITS.defaultStoreBytes
    this.scope = init.scope ?? 'spread'
    this.log = deps.log
    this.metrics = deps.metrics === undefined ? undefined : defineStoreMetrics(deps.metrics)
  }

  setView(v: View): void {
    if (this.view !== undefined && v.epoch <= this.view.epoch) return
    this.view = { epoch: v.epoch, members: v.members.map(x => ({ ...x })) }
    this.placements.clear()
  }

  reserve(label: FragmentLabel): Reservation {
    const d = { owner: label.owner, version: label.version, epoch: label.epoch, index: label.index }
    const bad = addressRefusal(label, this.view, this.rp, this.self, (v, rank, k, m) => this.placementOf(v, rank, k, m))
    if (bad !== undefined) this.refuse(bad.code, bad.message, d, bad.action)
    const versions = this.owners.get(label.owner)
    const entry = versions?.get(entryKey(label.version, label.epoch))
    const held = entry?.frags.get(label.index)
    if (entry !== undefined && (entry.stateChecksum !== label.stateChecksum || entry.k !== label.k || entry.m !== label.m)) {
      this.refuse(SnapshotErrorCode.DUPLICATE_CONFLICT, `version ${label.version} of ${label.owner} is already held with other contents`, d, 'reject')
    }
    if (held !== undefined) {
      if (held.label.bodyBytes !== label.bodyBytes || held.label.segmentBytes !== label.segmentBytes) {
        this.refuse(
          SnapshotErrorCode.DUPLICATE_CONFLICT,
          `fragment ${label.index} of ${label.owner}@${label.version} is already held with other contents`,
          d,
          'reject'
        )
      }
      this.counts.duplicates++
      return { label, duplicate: true }
    }
    if (versions === undefined && this.owners.size >= SNAPSHOT_LIMITS.maxOwnersPerStore) {
      this.refuse(SnapshotErrorCode.STORE_FULL, `store holds fragments of ${this.owners.size} owners, the cap`, d)
    }
    if (entry === undefined && versions !== undefined && versions.size >= SNAPSHOT_LIMITS.maxVersionsPerOwner) {
      const victim = evictionVictim(versions.values(), this.rp, label.version, label.epoch)
      if (victim === undefined) this.refuse(SnapshotErrorCode.STALE_VERSION, `${label.owner} already has ${versions.size} newer or pinned versions held`, d)
      this.dropEntry(label.owner, versions, entryKey(victim!.version, victim!.epoch))
      this.counts.evicted++
    }
    this.checkRoom(label.bodyBytes)
    this.reserved += label.bodyBytes
    return { label, duplicate: false }
  }

  commit(r: Reservation, segments: Uint8Array[]): void {
    if (r.duplicate) return
    this.reserved -= r.label.bodyBytes
    try {
      verifyFragment({ label: r.label, segments })
    } catch (err) {
      if (err instanceof ProtocolError) this.countRefusal(err.code)
      throw err
    }
    const l = r.label
    let versions = this.owners.get(l.owner)
    if (versions === undefined) {
      versions = new Map()
      this.owners.set(l.owner, versions)
    }
    const key = entryKey(l.version, l.epoch)
    let entry = versions.get(key)
    if (entry === undefined) {
      entry = { version: l.version, epoch: l.epoch, k: l.k, m: l.m, stateChecksum: l.stateChecksum, complete: false, frags: new Map() }
      versions.set(key, entry)
    }
    if (entry.frags.has(l.index)) {
      this.counts.duplicates++
      return
    }
    entry.frags.set(l.index, { label: l, segments, digest: fragmentDigest(segments) })
    this.used += l.bodyBytes
    this.fragments++
    this.counts.stored++
    this.gauges()
  }

  release(r: Reservation): void {
    if (!r.duplicate) this.reserved -= r.label.bodyBytes
  }

  put(f: SnapshotFragment): 'stored' | 'duplicate' {
    const r = this.reserve(f.label)
    if (r.duplicate) return 'duplicate'
    this.commit(r, f.segments)
    return 'stored'
  }

  get(owner: string, version: number, epoch: number, index: number): HeldFragment | undefined {
    return this.owners.get(owner)?.get(entryKey(version, epoch))?.frags.get(index)
  }

  list(owner: string): FragmentLabel[] {
    const versions = this.owners.get(owner)
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
  }

  markComplete(owner: string, version: number, epoch: number): void {
    const e = this.owners.get(owner)?.get(entryKey(version, epoch))
    if (e !== undefined) e.complete = true
  }

  setRecoveryPoint(next: RecoveryPoint): void {
    const rp = this.rp
    if (rp !== undefined && (next.epoch < rp.epoch || (next.epoch === rp.epoch && next.version <= rp.version))) return
    this.rp = { ...next }
    this.expire()
  }

  forget(owner: string): void {
    const versions = this.owners.get(owner)
    if (versions === undefined) return
    for (const key of [...versions.keys()]) this.dropEntry(owner, versions, key)
    this.gauges()
  }

  corruptForTest(owner: string, version: number, epoch: number, index: number, at = 100): boolean {
    const f = this.get(owner, version, epoch, index)
    const seg = f?.segments[0]
    if (seg === undefined) return false
    seg[Math.min(at, seg.length - 1)]! ^= 0x5a
    return true
  }

  stats(): StoreStats {
    return {
      usedBytes: this.used,
      reservedBytes: this.reserved,
      capBytes: this.cap,
      fragments: this.fragments,
      owners: this.owners.size,
      ...this.counts,
      refused: { ...this.refused }
    }
  }

  clear(): void {
    this.owners.clear()
    this.used = 0
    this.fragments = 0
    this.gauges()
  }

  private gauges(): void {
    this.metrics?.bytes.set(this.used)
    this.metrics?.fragments.set(this.fragments)
  }

  private countRefusal(code: string): void {
    this.refused[code] = (this.refused[code] ?? 0) + 1
    this.metrics?.refused.inc({ code })
  }

  private refuse(code: SnapshotErrorCodeT, message: string, details: Record<string, unknown>, action: 'ignore' | 'reject' = 'ignore'): never {
    this.countRefusal(code)
    this.log?.debug({ code, ...details }, 'snapshot fragment refused')
    throw snapshotError(code, message, details, action)
  }

  /** The memory cap: bytes held plus reserved plus `want` must fit, else StoreFullError. */
  private checkRoom(want: number): void {
    if (this.used + this.reserved + want <= this.cap) return
    this.countRefusal(SnapshotErrorCode.STORE_FULL)
    this.log?.warn({ usedBytes: this.used, reservedBytes: this.reserved, wantBytes: want, capBytes: this.cap }, 'snapshot store full')
    throw new StoreFullError(this.used + this.reserved, want, this.cap)
  }

  private dropEntry(owner: string, versions: Map<string, VersionEntry>, key: string): void {
    const e = versions.get(key)
    if (e === undefined) return
    for (const f of e.frags.values()) {
      this.used -= f.label.bodyBytes
      this.fragments--
    }
    versions.delete(key)
    if (versions.size === 0) this.owners.delete(owner)
  }

  /** Drops every held version the recovery point expires (retention.ts isExpired). */
  private expire(): void {
    const rp = this.rp
    if (rp === undefined || this.view === undefined) return
    const members = new Set(this.view.members.map(x => x.id))
    for (const [owner, versions] of [...this.owners]) {
      const departed = !members.has(owner)
      const newestEpoch = Math.max(...[...versions.values()].map(e => e.epoch))
      for (const [key, e] of [...versions]) {
        if (isExpired(e, { departed, newestEpoch }, rp)) {
          this.dropEntry(owner, versions, key)
          this.counts.evicted++
        }
      }
    }
    this.gauges()
  }

  /** The placement of a stripe, cached per view (every fragment of one stripe asks for it). */
  private placementOf(v: View, rank: number, k: number, m: number): PeerId[] {
    const key = `${v.epoch}/${rank}/${k}/${m}`
    let p = this.placements.get(key)
    if (p === undefined) {
      p = placeStripe(v, rank, k, m, this.scope)
      if (this.placements.size > 4096) this.placements.clear()
      this.placements.set(key, p)
    }
    return p
  }
}
