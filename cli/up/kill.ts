import type { Worker } from './workers.ts'

/** What followed the `--kill-at` SIGKILL, up to the first step committed after the recovery. */
export interface UpKillReport {
  /** The progress line's step when the rank was killed. */
  killedAtStep: number
  mode: 'replace' | 'shrink'
  /** The step the run rolled back to (the newest snapshot of every old rank). */
  fromStep: number
  /** The first step committed after the recovery (fromStep + 1). */
  nextStep: number
  /** ms from the SIGKILL to the first worker's event for a view without the killed worker. */
  viewChangeMs: number | undefined
  /** The trainer's recovery: agreeing on the recovery point and loading state from the snapshots. */
  recoveryMs: number
  /** ms from the SIGKILL to the commit of `nextStep`. */
  nextCommitMs: number
  /**
   * How the commit was seen: 'line' (a worker's `step` event, stamped on arrival: within a few
   * ms) or 'poll' (a status poll: up to `pollMs` late).
   */
  seenBy: 'line' | 'poll'
}

type Recovery = { mode: string; lost: number[]; fromStep: number }

/** The key that tells recoveries apart (the same recovery is recorded by every rank in it). */
export function recoveryKey(r: Recovery): string {
  return `${r.mode}/${r.lost.join(',')}/${r.fromStep}`
}

/** The kill, as `up` saw it. */
export interface Kill {
  /** Monotonic ms of the SIGKILL. */
  at: number
  /** The progress line's step then. */
  step: number
  /** Keys of the recoveries already reported then. */
  before: Set<string>
}

/**
 * The first step committed after the recovery from the kill, or undefined while there is none.
 * A step counts once every live rank has recorded the recovery and the lowest committed step
 * passed the rollback point (a poll), or once a worker emitted a `step` event for a step past it
 * after the first event for the view without the killed worker (no step can commit between the
 * kill and that view: every step needs every rank); the event is the exact figure.
 */
export function nextCommit(live: Worker[], ranks: Worker[], total: number, kill: Kill, now: number): UpKillReport | undefined {
  // The recovery from this kill: the first one that lost a rank and was not reported before it.
  const recs = ranks.map(w => w.status?.training?.recoveries.find(r => r.lost.length > 0 && !kill.before.has(recoveryKey(r))))
  const first = recs.find(r => r !== undefined)
  if (first === undefined) return undefined
  const fromStep = first.fromStep
  const viewAt = Math.min(...live.flatMap(w => w.afterKill.filter(e => e.view !== undefined && e.view < total).map(e => e.ms)))
  const byLine = Math.min(...live.flatMap(w => w.afterKill.filter(e => e.step === fromStep + 1 && e.ms > viewAt).map(e => e.ms)))
  const polled = recs.every(r => r !== undefined && recoveryKey(r) === recoveryKey(first)) && Math.min(...ranks.map(w => w.status!.training!.step)) > fromStep
  if (!Number.isFinite(byLine) && !polled) return undefined
  const seenBy = Number.isFinite(byLine) ? 'line' : 'poll'
  return {
    killedAtStep: kill.step,
    mode: first.mode,
    fromStep,
    nextStep: fromStep + 1,
    viewChangeMs: Number.isFinite(viewAt) ? viewAt - kill.at : undefined,
    recoveryMs: first.ms,
    nextCommitMs: (seenBy === 'line' ? byLine : now) - kill.at,
    seenBy
  }
}
