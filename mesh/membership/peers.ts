import type { PhiDetector } from '../phi.ts'
import type { PeerId } from '../peernet.ts'
import { mayTrain, memberOf, type Member } from './types.ts'

/** What a node knows about one peer. */
export interface PeerState {
  readonly id: PeerId
  /** Its labels while connected; undefined while not. */
  conn: Member | undefined
  /** Its failure detector once watched (primed or heard from). */
  detector: PhiDetector | undefined
  /** The detector was started without a heartbeat (see detector.ts prime); a real heartbeat replaces it. */
  primed: boolean
  /** Its newest heartbeat announced a graceful leave. */
  leaving: boolean
  /**
   * From its newest heartbeat (once `heard`): (incarnation, seq) (a restart starts a new,
   * later incarnation), its epoch, and whether it reported the view paused.
   */
  heard: boolean
  inc: number
  seq: number
  epoch: number
  reportsPaused: boolean
  /** Its index in the table's list of connected ids while connected; -1 while not. */
  connAt: number
}

function newPeerState(id: PeerId): PeerState {
  return { id, conn: undefined, detector: undefined, primed: false, leaving: false, heard: false, inc: 0, seq: 0, epoch: 0, reportsPaused: false, connAt: -1 }
}

/** Two sorted lists of distinct ids as one, in the order `[...a, ...b].sort()` would give. */
export function mergeSorted(a: readonly PeerId[], b: readonly PeerId[]): PeerId[] {
  const out: PeerId[] = []
  let i = 0
  let j = 0
  while (i < a.length && j < b.length) out.push(a[i]! < b[j]! ? a[i++]! : b[j++]!)
  while (i < a.length) out.push(a[i++]!)
  while (j < b.length) out.push(b[j++]!)
  return out
}

/**
 * Everything a node knows about each peer, one record per peer (see PeerState): a heartbeat or
 * a liveness check costs one lookup, and at 1000 nodes one cache miss instead of one per map.
 * Records are kept once made (like the (incarnation, seq) they hold). The table also keeps
 * the connected ids as a list (a disconnect moves the last id into the gap), because formation
 * sorts or filters them on every tick and walking 1000 records of a map was its top cost.
 */
export class PeerTable {
  private readonly peers = new Map<PeerId, PeerState>()
  // The record looked up last: a member hears from, checks and heartbeats to one peer (its
  // leader) several times per tick, so most lookups repeat the previous one.
  private lastId: PeerId | undefined = undefined
  private lastRecord: PeerState | undefined = undefined
  private readonly connIds: PeerId[] = []
  // [self, ...connected] sorted, and the ids connected since (merged in on the next use: while
  // 1000 nodes connect to each other, re-sorting everything at every tick was quadratic).
  private sortedIds: PeerId[] | undefined = undefined
  private readonly unsorted: PeerId[] = []

  /** The record of `id`, if one was made. */
  get(id: PeerId): PeerState | undefined {
    if (id === this.lastId) return this.lastRecord
    const r = this.peers.get(id)
    if (r !== undefined) {
      this.lastId = id
      this.lastRecord = r
    }
    return r
  }

  /** The record of `id`, made if there is none. */
  ensure(id: PeerId): PeerState {
    let r = this.get(id)
    if (r === undefined) this.peers.set(id, (r = newPeerState(id)))
    return r
  }

  /** Every record. */
  all(): IterableIterator<PeerState> {
    return this.peers.values()
  }

  /** Records that `id` (never self) is connected with these labels. */
  connect(id: PeerId, labels: { zone: string; host: string; trains?: boolean }): void {
    const r = this.ensure(id)
    const c = r.conn
    if (c === undefined) {
      r.connAt = this.connIds.length
      this.connIds.push(id)
      if (this.sortedIds !== undefined) this.unsorted.push(id)
    } else if (c.zone === labels.zone && c.host === labels.host && mayTrain(c) === (labels.trains !== false)) {
      // (The same labels again, as a peer announced both ways: the record keeps its object.)
      return
    }
    r.conn = memberOf(id, labels)
  }

  /** Records that `id` disconnected. */
  disconnect(id: PeerId): void {
    const r = this.get(id)
    if (r?.conn === undefined) return
    r.conn = undefined
    const last = this.connIds.pop()!
    if (last !== id) {
      this.connIds[r.connAt] = last
      this.get(last)!.connAt = r.connAt
    }
    r.connAt = -1
    this.sortedIds = undefined
    this.unsorted.length = 0
  }

  /** Connected peer ids, in no particular order (every caller sorts or counts); not to be changed. */
  connected(): readonly PeerId[] {
    return this.connIds
  }

  /** `self` and every connected id, sorted; not to be changed. */
  sortedWith(self: PeerId): readonly PeerId[] {
    if (this.sortedIds === undefined) {
      this.sortedIds = [self, ...this.connIds].sort()
      this.unsorted.length = 0
    } else if (this.unsorted.length > 0) {
      this.sortedIds = mergeSorted(this.sortedIds, this.unsorted.sort())
      this.unsorted.length = 0
    }
    return this.sortedIds
  }
}
