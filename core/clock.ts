import { promiseHooks } from 'node:v8'
import { AbortError, InvalidArgumentError } from './errors.ts'
import { CORE_LIMITS, checkCap } from './limits.ts'

/** Opaque handle returned by {@link Clock.setTimeout}. */
export type TimerId = number

/**
 * The only source of time in zeromesh. Production code receives a {@link RealClock}; tests and
 * the simulator receive a {@link ManualClock} whose time moves only when told to.
 */
export interface Clock {
  /** Milliseconds since the Unix epoch (wall time: for logs and cross-node skew checks). */
  now(): number
  /** Monotonic milliseconds from an arbitrary origin (for durations and timeouts). */
  monotonic(): number
  /** Calls `fn` once, `ms` milliseconds from now (clamped to >= 0). */
  setTimeout(fn: () => void, ms: number): TimerId
  /** Cancels a timer; unknown or fired ids are ignored. */
  clearTimeout(id: TimerId): void
  /** Resolves after `ms`; rejects with {@link AbortError} as soon as `signal` fires. */
  sleep(ms: number, options?: { signal?: AbortSignal }): Promise<void>
}

/**
 * `sleep` for any Clock: resolves after `ms` of that clock, rejects with AbortError as soon as
 * `signal` fires (and clears its timer). Clock implementations outside core/ use it too.
 */
export function sleepOn (clock: Clock, ms: number, signal?: AbortSignal): Promise<void> {
  if (signal?.aborted === true) return Promise.reject(new AbortError('sleep aborted'))
  return new Promise((resolve, reject) => {
    const onAbort = (): void => {
      clock.clearTimeout(id)
      reject(new AbortError('sleep aborted'))
    }
    const id = clock.setTimeout(() => {
      signal?.removeEventListener('abort', onAbort)
      resolve()
    }, ms)
    signal?.addEventListener('abort', onAbort, { once: true })
  })
}

/** Wall-clock time from the operating system. */
export class RealClock implements Clock {
  private readonly timers = new Map<number, ReturnType<typeof globalThis.setTimeout>>()
  private nextId = 1

  now (): number { return Date.now() }
  monotonic (): number { return performance.now() }

  setTimeout (fn: () => void, ms: number): TimerId {
    const id = this.nextId++
    const handle = globalThis.setTimeout(() => {
      this.timers.delete(id)
      fn()
    }, Math.max(0, ms))
    this.timers.set(id, handle)
    return id
  }

  clearTimeout (id: TimerId): void {
    const handle = this.timers.get(id)
    if (handle !== undefined) {
      globalThis.clearTimeout(handle)
      this.timers.delete(id)
    }
  }

  sleep (ms: number, options: { signal?: AbortSignal } = {}): Promise<void> {
    return sleepOn(this, ms, options.signal)
  }
}

interface ManualTimer { at: number, seq: number, id: number, fn: () => void }

/**
 * Virtual time for tests and the simulator. Time stands still until {@link advance} or
 * {@link runNext} moves it; due timers fire in (due time, creation order) order, so a run is
 * deterministic. `now()` is `epochMs + monotonic()`.
 */
export class ManualClock implements Clock {
  private t: number
  private readonly epochMs: number
  private seq = 0
  private nextId = 1
  private readonly heap: ManualTimer[] = []
  private readonly live = new Set<number>()
  private readonly maxTimers: number

  /** `maxTimers` caps pending timers (default CORE_LIMITS.maxManualTimers); the simulator raises it. */
  constructor (init: { startMs?: number, epochMs?: number, maxTimers?: number } = {}) {
    this.t = init.startMs ?? 0
    this.epochMs = init.epochMs ?? 1_700_000_000_000
    this.maxTimers = init.maxTimers ?? CORE_LIMITS.maxManualTimers
  }

  now (): number { return this.epochMs + this.t }
  monotonic (): number { return this.t }

  /** Number of timers waiting to fire. */
  get pending (): number { return this.live.size + this.fixed }
  // Timers scheduled with `schedule` (never cancelled): counted, not tracked by id.
  private fixed = 0

  setTimeout (fn: () => void, ms: number): TimerId {
    if (!Number.isFinite(ms)) throw new InvalidArgumentError(`timer delay must be finite, got ${ms}`)
    checkCap('manual clock timers', this.live.size + 1, this.maxTimers)
    const id = this.nextId++
    this.push({ at: this.t + Math.max(0, ms), seq: this.seq++, id, fn })
    this.live.add(id)
    return id
  }

  clearTimeout (id: TimerId): void { this.live.delete(id) }

  /**
   * Like setTimeout for a timer that will never be cancelled (a message in flight): no id to
   * track, which matters when a simulation schedules millions of them.
   */
  schedule (fn: () => void, ms: number): void {
    if (!Number.isFinite(ms)) throw new InvalidArgumentError(`timer delay must be finite, got ${ms}`)
    checkCap('manual clock timers', this.live.size + this.fixed + 1, this.maxTimers)
    this.push({ at: this.t + Math.max(0, ms), seq: this.seq++, id: -1, fn })
    this.fixed++
  }

  sleep (ms: number, options: { signal?: AbortSignal } = {}): Promise<void> {
    return sleepOn(this, ms, options.signal)
  }

  /** Due time of the earliest live timer, or undefined. */
  nextTimerAt (): number | undefined {
    this.dropCancelled()
    return this.heap[0]?.at
  }

  /** Fires the earliest live timer (moving time to it). Returns false if none is left. */
  runNext (): boolean {
    this.dropCancelled()
    const timer = this.pop()
    if (timer === undefined) return false
    if (timer.id < 0) this.fixed--
    else this.live.delete(timer.id)
    this.t = Math.max(this.t, timer.at)
    timer.fn()
    return true
  }

  /** Moves time forward by `ms`, firing every timer that falls due on the way, in order. */
  advance (ms: number): void {
    if (!(ms >= 0)) throw new InvalidArgumentError(`cannot advance a clock by ${ms} ms`)
    const target = this.t + ms
    for (;;) {
      const at = this.nextTimerAt()
      if (at === undefined || at > target) break
      this.runNext()
    }
    this.t = target
  }

  /**
   * Like {@link advance}, but lets promise continuations run after every timer, so code that
   * awaits `sleep()` in a loop makes progress within one call.
   */
  async advanceAsync (ms: number): Promise<void> {
    if (!(ms >= 0)) throw new InvalidArgumentError(`cannot advance a clock by ${ms} ms`)
    const target = this.t + ms
    const stop = watchPromises()
    try {
      await flushMicrotasks()
      const own = await calibrateAwait()
      for (;;) {
        const at = this.nextTimerAt()
        if (at === undefined || at > target) break
        const before = promiseActivity
        this.runNext()
        // A continuation can only be queued by creating or settling a promise: when the timer
        // did neither, there is nothing to flush. Otherwise hop through the microtask queue
        // until a hop sees no promise activity but its own (a macrotask hop per timer was the
        // main cost of a large simulation). Timer callbacks must not call queueMicrotask.
        if (promiseActivity !== before) await drainMicrotasks(own)
      }
    } finally {
      stop()
    }
    this.t = target
  }

  private dropCancelled (): void {
    while (this.heap.length > 0 && this.heap[0]!.id >= 0 && !this.live.has(this.heap[0]!.id)) this.pop()
  }

  private less (a: ManualTimer, b: ManualTimer): boolean {
    return a.at < b.at || (a.at === b.at && a.seq < b.seq)
  }

  private push (timer: ManualTimer): void {
    const h = this.heap
    h.push(timer)
    let i = h.length - 1
    while (i > 0) {
      const p = (i - 1) >> 1
      if (!this.less(h[i]!, h[p]!)) break
      ;[h[i], h[p]] = [h[p]!, h[i]!]
      i = p
    }
  }

  private pop (): ManualTimer | undefined {
    const h = this.heap
    const top = h[0]
    const last = h.pop()
    if (top === undefined || last === undefined || h.length === 0) return top
    h[0] = last
    let i = 0
    for (;;) {
      const l = 2 * i + 1
      const r = l + 1
      let m = i
      if (l < h.length && this.less(h[l]!, h[m]!)) m = l
      if (r < h.length && this.less(h[r]!, h[m]!)) m = r
      if (m === i) break
      ;[h[i], h[m]] = [h[m]!, h[i]!]
      i = m
    }
    return top
  }
}

// Counts promise creations and settlements while some advanceAsync runs (v8 promise hooks).
let promiseActivity = 0
let watchers = 0
let unhook: (() => void) | undefined
function watchPromises (): () => void {
  if (watchers++ === 0) {
    const bump = (): void => { promiseActivity++ }
    const offInit = promiseHooks.onInit(bump)
    const offSettled = promiseHooks.onSettled(bump)
    unhook = () => { offInit(); offSettled() }
  }
  return () => {
    if (--watchers === 0) unhook?.()
  }
}

/** Promise events one bare `await` causes by itself (measured with an empty microtask queue). */
async function calibrateAwait (): Promise<number> {
  const before = promiseActivity
  await undefined
  return promiseActivity - before
}

/**
 * Awaits microtask hops until one sees no promise activity besides its own: the queue (FIFO)
 * then held nothing that could still queue a continuation. Falls back to a macrotask hop.
 */
async function drainMicrotasks (own: number): Promise<void> {
  for (let i = 0; i < 10_000; i++) {
    const before = promiseActivity
    await undefined
    if (promiseActivity - before <= own) return
  }
  await flushMicrotasks()
}

/** Resolves after all currently queued promise continuations (and their follow-ups) ran. */
export function flushMicrotasks (): Promise<void> {
  return new Promise(resolve => setImmediate(resolve))
}
