import { mayTrain, type Member, type PeerId, type View } from '../../mesh/index.ts'
import { TRAIN_LIMITS } from './limits.ts'

/**
 * The roster and the view queue: which nodes are the ranks, and how installed views change
 * that. Pure: plain data in, plain data out, no network and no clock, so every node that
 * sees the same sequence of views derives the same rosters.
 */

/** A roster as rank 0 announces it to nodes beyond it (`train/roster`). */
export interface RosterAnnouncement {
  epoch: number
  members: Member[]
}

/** What a recovery has to rebuild, relative to the roster whose snapshots hold the state. */
export interface RecoveryPlan {
  mode: 'replace' | 'shrink' | 'resume' | 'grow'
  /** Ranks of `oldRoster` that are gone. */
  lost: number[]
  oldRoster: Member[]
  /**
   * Zone groups (the DiLoCo tier): the old rank whose state each rank of the new roster loads
   * (a replacement loads its lost rank's; a group whose zone dropped out is gone). Undefined:
   * rank r loads old rank r (replace) or every old rank (shrink).
   */
  from?: number[]
}

/** A growth the ranks agreed on: the joiners of view `epoch`, `count` of them, after `step` committed. */
export interface Growth {
  epoch: number
  count: number
  step: number
}

/** The bytes of a roster announcement: JSON { epoch, members: [{ id, zone, host }] }. */
export function encodeRoster(epoch: number, roster: readonly Member[]): Uint8Array {
  return new TextEncoder().encode(JSON.stringify({ epoch, members: roster.map(r => ({ id: r.id, zone: r.zone, host: r.host })) }))
}

/** The members of a view that may take a rank, in view order (nodes started without --train never do). */
export function trainable(view: View): Member[] {
  return view.members.filter(mayTrain)
}

/** A roster announcement, or undefined for anything malformed (checked before it is used). */
export function rosterOf(data: Uint8Array): RosterAnnouncement | undefined {
  const L = TRAIN_LIMITS
  if (data.length > L.maxRosterBytes) return undefined
  let v: unknown
  try {
    v = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(data))
  } catch {
    return undefined
  }
  if (typeof v !== 'object' || v === null) return undefined
  const { epoch, members } = v as { epoch?: unknown; members?: unknown }
  if (!Number.isSafeInteger(epoch) || (epoch as number) < 0 || !Array.isArray(members) || members.length < 1 || members.length > L.maxRosterMembers)
    return undefined
  const out: Member[] = []
  for (const m of members as unknown[]) {
    const { id, zone, host } = (typeof m === 'object' && m !== null ? m : {}) as Record<string, unknown>
    if (typeof id !== 'string' || typeof zone !== 'string' || typeof host !== 'string') return undefined
    if (id.length > L.maxRosterLabelChars || zone.length > L.maxRosterLabelChars || host.length > L.maxRosterLabelChars) return undefined
    out.push({ id, zone, host })
  }
  if (new Set(out.map(m => m.id)).size !== out.length) return undefined
  return { epoch: epoch as number, members: out }
}

/** The zone groups of a roster: its members by zone, zones in order of first appearance. */
export function zoneGroups(roster: readonly Member[]): Member[][] {
  const by = new Map<string, Member[]>()
  for (const m of roster) {
    const g = by.get(m.zone)
    if (g === undefined) by.set(m.zone, [m])
    else g.push(m)
  }
  return [...by.values()]
}

/**
 * The first roster a view gives: its first `worldSize` members; with zone groups, the first
 * `zones` zones (in order of first appearance) that have `worldSize / zones` members each,
 * zone after zone. Undefined while the view cannot field it.
 */
export function rosterFromView(view: View, worldSize: number, zones: number | undefined): Member[] | undefined {
  const members = trainable(view)
  if (zones === undefined) return members.length >= worldSize ? members.slice(0, worldSize) : undefined
  const per = worldSize / zones
  const full = zoneGroups(members)
    .filter(g => g.length >= per)
    .slice(0, zones)
  return full.length < zones ? undefined : full.flatMap(g => g.slice(0, per))
}

/**
 * {@link replan} for zone groups (the DiLoCo tier): a group's lost ranks are replaced by spares
 * of its own zone (view order), each taking the lost rank's place; a group that cannot be made
 * whole leaves the roster (its survivors become spares) and the other groups go on. Every rank
 * of the new roster then loads the state of the old rank it stands for (`from`).
 */
export function replanZones(roster: readonly Member[], view: View, prev: RecoveryPlan | undefined): Replan {
  const inView = new Set(view.members.map(m => m.id))
  const onRoster = new Set(roster.map(m => m.id))
  const spares = trainable(view).filter(m => !onRoster.has(m.id))
  const lost = roster.map((m, r) => (inView.has(m.id) ? -1 : r)).filter(r => r >= 0)
  const oldRoster = prev?.oldRoster ?? [...roster]
  const fromPrev = prev?.from ?? roster.map((_, i) => i)
  const out: Member[] = []
  const from: number[] = []
  const index = new Map(roster.map((m, i) => [m.id, i]))
  for (const group of zoneGroups(roster)) {
    const here = spares.filter(m => m.zone === group[0]!.zone)
    if (here.length < group.filter(m => !inView.has(m.id)).length) continue
    let next = 0
    for (const m of group) {
      out.push(inView.has(m.id) ? m : { ...m, id: here[next++]!.id })
      from.push(fromPrev[index.get(m.id)!]!)
    }
  }
  const held = new Set(out.map(m => m.id))
  const lostOld = oldRoster.map((m, r) => (held.has(m.id) ? -1 : r)).filter(r => r >= 0)
  const mode = out.length === roster.length ? 'replace' : 'shrink'
  const plan: RecoveryPlan = prev?.mode === 'resume' ? { mode: 'resume', lost: lostOld, oldRoster } : { mode: 'replace', lost: lostOld, oldRoster, from }
  return { roster: out, lost, mode, plan }
}

/** The roster grown by the first `count` members of `view` that are not on it (view order). */
export function grownRoster(roster: readonly Member[], view: View, count: number): Member[] {
  const on = new Set(roster.map(m => m.id))
  return [
    ...roster,
    ...trainable(view)
      .filter(m => !on.has(m.id))
      .slice(0, count)
  ]
}

/**
 * Members of both views whose order changed from `prev` to `next`: those outside the longest
 * run of common members that keeps its order (they were dropped and appended again).
 */
export function readmitted(prev: View, next: View): Set<PeerId> {
  const inNext = new Set(next.members.map(m => m.id))
  const inPrev = new Set(prev.members.map(m => m.id))
  const a = prev.members.map(m => m.id).filter(id => inNext.has(id))
  const b = next.members.map(m => m.id).filter(id => inPrev.has(id))
  if (a.length === b.length && a.every((id, i) => id === b[i])) return new Set()
  // Longest common subsequence (views are at most a few thousand members and change rarely).
  const n = a.length
  const L = Array.from({ length: n + 1 }, () => new Uint16Array(n + 1))
  for (let i = n - 1; i >= 0; i--) for (let j = n - 1; j >= 0; j--) L[i]![j] = a[i] === b[j] ? L[i + 1]![j + 1]! + 1 : Math.max(L[i + 1]![j]!, L[i]![j + 1]!)
  const kept = new Set<PeerId>()
  for (let i = 0, j = 0; i < n && j < n; ) {
    if (a[i] === b[j]) {
      kept.add(a[i]!)
      i++
      j++
    } else if (L[i + 1]![j]! >= L[i]![j + 1]!) i++
    else j++
  }
  return new Set(a.filter(id => !kept.has(id)))
}

/** The outcome of {@link replan}: the new roster and the recovery plan that goes with it. */
export interface Replan {
  roster: Member[]
  /** Ranks of `roster` (the one replanned) that the view dropped. */
  lost: number[]
  mode: 'replace' | 'shrink'
  plan: RecoveryPlan
}

/**
 * Lost ranks are replaced by spares in view order; with too few spares the run shrinks.
 * Applied to every breaking view in order. While a recovery has not finished, the plan stays
 * relative to the roster whose snapshots hold the state (`prev.oldRoster`): a replace that
 * keeps every position loads each logical rank's own state; anything else rebuilds the full
 * state and re-partitions it (shrink), which is right for any new roster. A growth that has
 * not exchanged its state yet becomes a shrink from the old ranks' snapshots.
 */
export function replan(roster: readonly Member[], view: View, prev: RecoveryPlan | undefined): Replan {
  const inView = new Set(view.members.map(m => m.id))
  const onRoster = new Set(roster.map(m => m.id))
  const spares = trainable(view).filter(m => !onRoster.has(m.id))
  const lost = roster.map((m, r) => (inView.has(m.id) ? -1 : r)).filter(r => r >= 0)
  let out: Member[]
  let mode: 'replace' | 'shrink'
  if (spares.length >= lost.length) {
    // A replacement takes the lost rank's place in the ring (its labels too), so the
    // reduction order, and with it every bit of the result, stays what it was.
    let next = 0
    out = roster.map(m => (inView.has(m.id) ? m : { ...m, id: spares[next++]!.id }))
    mode = 'replace'
  } else {
    out = roster.filter(m => inView.has(m.id))
    mode = 'shrink'
  }
  const oldRoster = prev?.oldRoster ?? [...roster]
  const held = new Set(out.map(m => m.id))
  const lostOld = oldRoster.map((m, r) => (held.has(m.id) ? -1 : r)).filter(r => r >= 0)
  let plan: RecoveryPlan
  if (prev?.mode === 'resume') plan = { mode: 'resume', lost: lostOld, oldRoster }
  else if (prev?.mode === 'grow') plan = { mode: 'shrink', lost: lostOld, oldRoster }
  else {
    const keepsPlaces = prev === undefined ? mode === 'replace' : prev.mode === 'replace' && mode === 'replace' && out.length === oldRoster.length
    plan = { mode: keepsPlaces ? 'replace' : 'shrink', lost: lostOld, oldRoster }
  }
  return { roster: out, lost, mode, plan }
}

/**
 * Installed views in order, and the nodes that were ever on a roster here. Every view
 * installed after construction is queued and consumed in order: a roster changes by each
 * view that drops one of its members, so every node must see the same sequence (the current
 * view alone can hide a member that was dropped and re-admitted in between).
 */
export class ViewQueue {
  /** The first installed view that can field the roster (the roster is derived from it). */
  firstFull: View | undefined
  private readonly fields: (v: View) => boolean
  private readonly queue: View[] = []
  private readonly recent = new Map<number, View>()
  private readonly rostered = new Set<PeerId>()
  private seenEpoch = 0
  private lastView: View | undefined

  /**
   * `current`: the view installed when the trainer is built (it may already be full); `zones`:
   * the zone groups a roster needs (see {@link rosterFromView}).
   */
  constructor(worldSize: number, current: View | undefined, zones?: number) {
    this.fields = v => rosterFromView(v, worldSize, zones) !== undefined
    if (this.full(current)) this.firstFull = current
  }

  private full(v: View | undefined): boolean {
    return v !== undefined && this.fields(v)
  }

  /** Records an installed view (the membership's `view` event). */
  push(v: View): void {
    if (this.firstFull === undefined && this.full(v)) this.firstFull = v
    this.recent.set(v.epoch, v)
    if (this.recent.size > TRAIN_LIMITS.recentViews) this.recent.delete(this.recent.keys().next().value!)
    this.queue.push(v)
    if (this.queue.length > TRAIN_LIMITS.maxQueuedViews) this.queue.shift()
  }

  /** Views queued and not yet consumed. */
  get queued(): number {
    return this.queue.length
  }

  /** A recently installed view by epoch (undefined when it is older than the last RECENT_VIEWS). */
  view(epoch: number): View | undefined {
    return this.recent.get(epoch)
  }

  /** The roster starts here: its first view is seen, and views before it never break it. */
  begin(first: View): void {
    this.seenEpoch = first.epoch
    this.lastView = first
  }

  /** Remembers every member of `roster` as one that was a rank here. */
  admit(roster: readonly Member[]): void {
    for (const m of roster) this.rostered.add(m.id)
  }

  /** Whether `id` was ever on a roster this node used (only they speak for the run). */
  wasRostered(id: PeerId): boolean {
    return this.rostered.has(id)
  }

  /**
   * The first queued view (in installation order, newer than any seen) that drops a member of
   * `roster`; views that only add members are consumed on the way. Undefined when none is queued.
   */
  nextLoss(roster: readonly Member[]): View | undefined {
    return this.scanLoss(roster, true)
  }

  /** {@link nextLoss} without consuming (`consume` false): is a breaking view queued? */
  scanLoss(roster: readonly Member[], consume: boolean): View | undefined {
    let seen = this.seenEpoch
    let last = this.lastView
    let found: View | undefined
    let i = 0
    for (; i < this.queue.length && found === undefined; i++) {
      const v = this.queue[i]!
      if (v.epoch <= seen) continue
      seen = v.epoch
      // Members keep their order from view to view (removals close up, joiners are appended),
      // so a member that moved relative to the others was dropped and re-admitted in views
      // this node did not see: it counts as lost, as it did for the nodes that saw them.
      const back = last === undefined ? new Set<PeerId>() : readmitted(last, v)
      last = v
      const eff = back.size === 0 ? v : { epoch: v.epoch, members: v.members.filter(m => !back.has(m.id)) }
      if (roster.some(m => !eff.members.some(x => x.id === m.id))) found = eff
    }
    if (consume) {
      this.queue.splice(0, i)
      this.seenEpoch = seen
      this.lastView = last
    }
    return found
  }

  /** Marks every queued view up to `v` (inclusive) as seen. */
  consumeThrough(v: View): void {
    let i = 0
    while (i < this.queue.length && this.queue[i]!.epoch <= v.epoch) i++
    this.queue.splice(0, i)
    if (v.epoch > this.seenEpoch) {
      this.seenEpoch = v.epoch
      this.lastView = v
    }
  }

  /**
   * What a rank proposes for growth after a step: `current` (the newest installed view), when
   * it keeps every roster member (no loss is queued) and holds members beyond the roster, and
   * how many of them fit under `max` ranks.
   */
  growCandidate(roster: readonly Member[], max: number, current: View | undefined): { epoch: number; count: number } | undefined {
    if (roster.length >= max || this.scanLoss(roster, false) !== undefined) return undefined
    const v = current
    if (v === undefined || v.epoch < this.seenEpoch || !this.recent.has(v.epoch)) return undefined
    if (!roster.every(m => v.members.some(x => x.id === m.id))) return undefined
    const count = Math.min(trainable(v).length - roster.length, max - roster.length)
    return count > 0 ? { epoch: v.epoch, count } : undefined
  }

  /** The view of an announced growth once this node has it (spares), else undefined. */
  pendingGrowth(roster: readonly Member[], growth: Growth | undefined, max: number): View | undefined {
    if (growth === undefined || roster.length + growth.count > max) return undefined
    return this.recent.get(growth.epoch)
  }
}
