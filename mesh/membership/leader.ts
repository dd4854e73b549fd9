import type { PeerId } from '../peernet.ts'
import { liveAt } from './detector.ts'
import type { PeerState } from './peers.ts'

/**
 * Who reports to whom. Every member sends its heartbeat each period straight to its leader:
 * the lowest-ranked member it does not know to be dead (itself when there is none). So the
 * leader hears every member and every member hears the leader, O(N) messages per period.
 *
 * A node starts watching a peer it has not heard from with a primed detector, so a peer gets
 * one detection period to show up. When a node's leader dies it re-primes the quiet members
 * ranked below it, so the next leader is whoever is alive and gossiping, not the first node
 * that noticed; a node that becomes leader primes every member ranked after it, so members
 * have a detection period to redirect their heartbeats before it judges them.
 */
export interface LeaderContext {
  /** The record of `ord[i]`, if there is one yet. */
  recordAt(ord: readonly PeerId[], i: number): PeerState | undefined
  /** Starts watching `id` as if it had just sent a heartbeat. */
  prime(id: PeerId): void
  /** Whether this node watches `id` and finds it dead. */
  knownDead(id: PeerId): boolean
  /** Monotonic time now (ms). */
  now(): number
  /** Before this time nobody is suspected (this node was stalled). */
  readonly graceUntil: number
}

/**
 * This node's leader, given the ranking `ord` (which contains `me`) and the previous leader,
 * priming detectors as described on {@link LeaderContext}. (Indexed loops: this runs every
 * tick on every node.)
 */
export function chooseLeader(ctx: LeaderContext, ord: readonly PeerId[], me: PeerId, prev: PeerId | undefined): PeerId {
  if (prev !== undefined && prev !== me && ctx.knownDead(prev)) reprimeBelow(ctx, ord, me, prev)
  let next = me
  for (let i = 0; i < ord.length; i++) {
    const id = ord[i]!
    if (id === me) break
    const r = ctx.recordAt(ord, i)
    if (r?.conn === undefined || r.leaving) continue
    if (r.detector === undefined) ctx.prime(id)
    if (liveAt(r, ctx.now(), ctx.graceUntil)) {
      next = id
      break
    }
  }
  if (next === me && prev !== me) primeAfter(ctx, ord, me)
  return next
}

/**
 * The leader died: members ranked before me that were quiet only because they were not
 * leading get another detection period, so I follow whoever takes over instead of jumping ahead.
 * That is every connected one I have no fresh heartbeat from: a primed detector, or one whose
 * last heartbeat is old (heard before the first view, when heartbeats were gossiped, and
 * silent since because it sent them to the leader). Without the second kind, a node ranked
 * after such a member took over and dropped it from the next view as dead.
 */
function reprimeBelow(ctx: LeaderContext, ord: readonly PeerId[], me: PeerId, dead: PeerId): void {
  for (let i = 0; i < ord.length; i++) {
    const id = ord[i]!
    if (id === me) break
    const r = ctx.recordAt(ord, i)
    if (id === dead || r === undefined || r.conn === undefined || r.leaving) continue
    if (r.primed || r.detector === undefined || r.detector.suspect(ctx.now())) ctx.prime(id)
  }
}

/** Taking over: everyone ranked after me gets a detection period to redirect its heartbeats. */
function primeAfter(ctx: LeaderContext, ord: readonly PeerId[], me: PeerId): void {
  let after = false
  for (let i = 0; i < ord.length; i++) {
    const id = ord[i]!
    const r = ctx.recordAt(ord, i)
    if (after && r?.conn !== undefined) {
      const d = r.detector
      if (d === undefined || r.primed || d.suspect(ctx.now())) ctx.prime(id)
    }
    if (id === me) after = true
  }
}
