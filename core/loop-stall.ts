/**
 * Event-loop stalls as a node sees them: a timer due every `everyMs` that fires more than
 * `thresholdMs` late was held up by synchronous work on the loop (a stall the membership's
 * failure detectors of the other nodes see as missing heartbeats, docs/LIMITS.md).
 */
export interface StallWatcher {
  /** The longest lateness seen so far (ms). */
  longestMs(): number
  stop(): void
}

export interface StallWatchOptions {
  /** Probe period (ms). Default 50. */
  everyMs?: number
  /** Lateness reported to `onStall` (ms). Default 200. */
  thresholdMs?: number
  onStall: (ms: number) => void
}

/** Starts watching this thread's event loop (real time: for real nodes; the timer is unref'd). */
export function watchStalls(o: StallWatchOptions): StallWatcher {
  const every = o.everyMs ?? 50
  const threshold = o.thresholdMs ?? 200
  let longest = 0
  let due = performance.now() + every
  const timer = setInterval(() => {
    const now = performance.now()
    const late = now - due
    due = now + every
    if (late > longest) longest = late
    if (late > threshold) o.onStall(Math.round(late))
  }, every)
  timer.unref()
  return {
    longestMs: () => Math.round(longest),
    stop: () => clearInterval(timer)
  }
}
