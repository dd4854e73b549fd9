import { AbortError, type Clock, sleepOn } from '../../core/index.ts'
import { NcclTimeoutError } from './nccl-errors.ts'
import { NCCL_LIMITS } from './nccl-limits.ts'

/**
 * Waiting on NCCL without blocking the event loop: NCCL's non-blocking calls and CUDA events
 * report progress only when asked, so we ask on a schedule: first on successive event-loop
 * turns (a small collective finishes within microseconds), then on timers that double up to
 * NCCL_LIMITS.pollMaxMs (an init or a large collective takes milliseconds to minutes).
 */

export interface PollOptions {
  clock: Clock
  signal?: AbortSignal | undefined
  /** `clock.monotonic()` value past which the wait fails with {@link NcclTimeoutError}. */
  deadline: number
  /** The timeout the deadline came from, for the error. */
  timeoutMs: number
  /** What is being waited for (names the operation in errors). */
  what: string
}

const nextTurn = (): Promise<void> => new Promise(resolve => setImmediate(resolve))

/**
 * Calls `step` until it returns something other than undefined and returns that. `step` may
 * throw (an NCCL or CUDA error), which ends the wait. Throws AbortError once `signal` fires and
 * NcclTimeoutError once the deadline passes; `step` is always called once more after the last
 * wait, so work that finished just in time is not reported as timed out.
 */
export async function pollUntil<T>(step: () => T | undefined, o: PollOptions): Promise<T> {
  let delay = 0
  for (let polls = 0; ; polls++) {
    const v = step()
    if (v !== undefined) return v
    if (o.signal?.aborted === true) throw new AbortError(`${o.what} aborted`, { op: o.what })
    const left = o.deadline - o.clock.monotonic()
    if (left <= 0) throw new NcclTimeoutError(o.what, o.timeoutMs)
    if (polls < NCCL_LIMITS.pollSpins) {
      await nextTurn()
      continue
    }
    delay = Math.min(NCCL_LIMITS.pollMaxMs, Math.max(NCCL_LIMITS.pollMinMs, delay * 2))
    try {
      await sleepOn(o.clock, Math.min(delay, left), o.signal)
    } catch {
      throw new AbortError(`${o.what} aborted`, { op: o.what })
    }
  }
}

/**
 * Resolves with `p`, or with undefined after `ms` if `p` has not settled (its outcome is then
 * dropped): bounds how long a caller waits on a native call that cannot be interrupted.
 */
export function waitAtMost<T>(clock: Clock, p: Promise<T>, ms: number): Promise<T | undefined> {
  return new Promise((resolve, reject) => {
    const id = clock.setTimeout(() => resolve(undefined), ms)
    p.then(
      v => {
        clock.clearTimeout(id)
        resolve(v)
      },
      err => {
        clock.clearTimeout(id)
        reject(err)
      }
    )
  })
}
