import { PhiDetector } from '../phi.ts'
import type { Heartbeat } from './heartbeat-codec.ts'
import type { PeerState } from './peers.ts'

/**
 * Failure detection on a peer's record: a phi-accrual detector per watched peer turns silence
 * into suspicion with timeouts that follow the observed heartbeat intervals (see phi.ts).
 */
export interface DetectorOptions {
  /** phi threshold. */
  threshold: number
  /** Floor of the interval std dev (ms). */
  minStdMs: number
  /** Heartbeat period (ms): the interval assumed before any was observed. */
  heartbeatMs: number
}

/**
 * Whether a peer's record (never self's) says it is live at time t: heard from (or primed)
 * recently, connected, not leaving; before `graceUntil` nobody is suspected. (A module
 * function, not a closure per node: it runs for every member on every leader tick.)
 */
export function liveAt(r: PeerState | undefined, t: number, graceUntil: number): boolean {
  if (r === undefined) return false
  const d = r.detector
  if (d === undefined || d.lastAt === undefined || r.conn === undefined || r.leaving) return false
  return t < graceUntil || !d.suspect(t)
}

/** How many of a view's records (undefined for self, who is always live) are live at t. */
export function countLive(recs: ReadonlyArray<PeerState | undefined>, t: number, graceUntil: number): number {
  let n = 0
  for (let i = 0; i < recs.length; i++) {
    const r = recs[i]
    if (r === undefined || liveAt(r, t, graceUntil)) n++
  }
  return n
}

/** Starts watching a peer as if it had just sent a heartbeat at `now`: it has one detection period to show up. */
export function prime(r: PeerState, now: number, o: DetectorOptions): void {
  const d = new PhiDetector({ threshold: o.threshold, minStdMs: o.minStdMs, firstIntervalMs: o.heartbeatMs })
  d.heartbeat(now)
  r.detector = d
  r.primed = true
}

/** Whether `hb` is newer than the last heartbeat in `r`: (incarnation, seq) at or below it is a replay or a stale copy. */
export function isFresh(r: PeerState | undefined, hb: Heartbeat): boolean {
  return r === undefined || !r.heard || hb.inc > r.inc || (hb.inc === r.inc && hb.seq > r.seq)
}

/** Records a fresh heartbeat (see {@link isFresh}) that arrived at `now` in the peer's record and detector. */
export function observeHeartbeat(r: PeerState, hb: Heartbeat, now: number, o: DetectorOptions): void {
  // A new incarnation, or the first real heartbeat of one after priming, starts a fresh
  // detector (a primed peer stays primed through the first heartbeat of a new incarnation).
  if (!r.heard || r.inc !== hb.inc) {
    r.detector = undefined
  } else if (r.primed) {
    r.primed = false
    r.detector = undefined
  }
  r.heard = true
  r.inc = hb.inc
  r.seq = hb.seq
  r.epoch = hb.epoch
  r.reportsPaused = hb.paused
  r.leaving = hb.leaving
  let d = r.detector
  if (d === undefined) r.detector = d = new PhiDetector({ threshold: o.threshold, minStdMs: o.minStdMs, firstIntervalMs: o.heartbeatMs })
  d.heartbeat(now)
}
