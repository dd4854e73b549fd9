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
  /**
   * Resolves on a later turn of the event loop, once the I/O and timers due now have run: a
   * chain of work that never waits for I/O (a rank whose step stays on its device) awaits it
   * so heartbeats get through. Real time: `setImmediate` (no 1 ms timer floor); simulated and
   * manual clocks: a zero-delay timer.
   */
  turn(): Promise<void>
}

/**
 * `sleep` for any Clock: resolves after `ms` of that clock, rejects with AbortError as soon as
 * `signal` fires (and clears its timer). Clock implementations outside core/ use it too.
 */
export function sleepOn(clock: Clock, ms: number, signal?: AbortSignal): Promise<void> {
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

  turn(): Promise<void> {
    return new Promise(resolve => setImmediate(resolve))
  }

  now(): number {
    return Date.now()
  }
  monotonic(): number {
    return performance.now()
  }

  setTimeout(fn: () => void, ms: number): TimerId {
    const id = this.nextId++
    const handle = globalThis.setTimeout(
      () => {
        this.timers.delete(id)
        fn()
      },
      Math.max(0, ms)
    )
    this.timers.set(id, handle)
    return id
  }

  clearTimeout(id: TimerId): void {
    const handle = this.timers.get(id)
    if (handle !== undefined) {
      globalThis.clearTimeout(handle)
      this.timers.delete(id)
    }
  }

  sleep(ms: number, options: { signal?: AbortSignal } = {}): Promise<void> {
    return sleepOn(this, ms, options.signal)
  }
}

/**
 * One entry on a {@link ManualClock}'s queue. The clock fires it by calling `fire()`; a
 * simulator that schedules millions of events subclasses it and passes the instance to
 * {@link ManualClock.scheduleEvent}, so an event costs one object instead of a closure plus
 * an entry. `at`, `seq` and `id` belong to the clock.
 */
export class ClockEvent {
  at = 0
  seq = 0
  /** The TimerId of a cancellable timer; -1 for one that can never be cancelled. */
  id = -1
  /** The event due right after this one, chained to it instead of queued (see ManualClock.scheduleEvent). */
  next: ClockEvent | undefined = undefined
  fire(): void {}
}

class FnTimer extends ClockEvent {
  readonly fn: () => void
  constructor(fn: () => void) {
    super()
    this.fn = fn
  }

  override fire(): void {
    this.fn()
  }
}

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
  // A binary min-heap on (at, seq), kept as parallel arrays: the keys in typed arrays, so a
  // sift compares numbers in a few contiguous cache lines instead of loading each event object.
  // (Moving pool slot numbers instead of event references, to spare the GC write barrier, is
  // slower in the 1000-node simulation: one more indirection per event.)
  private events: Array<ClockEvent | undefined> = []
  private ats = new Float64Array(1024)
  private seqs = new Float64Array(1024)
  private size = 0
  // The event scheduled last, while it is pending and was scheduled with scheduleEvent (it
  // cannot be cancelled), else undefined: an event scheduled next for the same time follows it
  // in (time, creation order) with nothing between, so it is chained to it rather than queued.
  private tail: ClockEvent | undefined
  private readonly live = new Set<number>()
  private readonly maxTimers: number

  /** `maxTimers` caps pending timers (default CORE_LIMITS.maxManualTimers); the simulator raises it. */
  constructor(init: { startMs?: number; epochMs?: number; maxTimers?: number } = {}) {
    this.t = init.startMs ?? 0
    this.epochMs = init.epochMs ?? 1_700_000_000_000
    this.maxTimers = init.maxTimers ?? CORE_LIMITS.maxManualTimers
  }

  turn(): Promise<void> {
    return sleepOn(this, 0)
  }

  now(): number {
    return this.epochMs + this.t
  }
  monotonic(): number {
    return this.t
  }

  /** Number of timers waiting to fire. */
  get pending(): number {
    return this.live.size + this.fixed
  }
  // Timers scheduled with `schedule` (never cancelled): counted, not tracked by id.
  private fixed = 0

  setTimeout(fn: () => void, ms: number): TimerId {
    return this.setTimeoutEvent(new FnTimer(fn), ms)
  }

  /** Like {@link setTimeout} for an event object (see {@link ClockEvent}): `ev.fire()` runs `ms` from now unless cleared. */
  setTimeoutEvent(ev: ClockEvent, ms: number): TimerId {
    if (!Number.isFinite(ms)) throw new InvalidArgumentError(`timer delay must be finite, got ${ms}`)
    if (!(this.live.size < this.maxTimers)) checkCap('manual clock timers', this.live.size + 1, this.maxTimers)
    const id = this.nextId++
    ev.id = id
    this.push(ev, ms)
    this.tail = undefined
    this.live.add(id)
    return id
  }

  clearTimeout(id: TimerId): void {
    this.live.delete(id)
  }

  /**
   * Like setTimeout for a timer that will never be cancelled (a message in flight): no id to
   * track, which matters when a simulation schedules millions of them.
   */
  schedule(fn: () => void, ms: number): void {
    this.scheduleEvent(new FnTimer(fn), ms)
  }

  /** Like {@link schedule} for an event object: `ev.fire()` runs `ms` from now. Schedule each object once. */
  scheduleEvent(ev: ClockEvent, ms: number): void {
    if (!Number.isFinite(ms)) throw new InvalidArgumentError(`timer delay must be finite, got ${ms}`)
    if (this.live.size + this.fixed >= this.maxTimers) checkCap('manual clock timers', this.live.size + this.fixed + 1, this.maxTimers)
    ev.id = -1
    const tail = this.tail
    // Same time as the event scheduled just before: it fires right after that one, so it
    // waits on it instead of in the heap (1000 simulated nodes starting schedule a million
    // link announcements at a few distinct times, and the heap held all of them).
    if (tail !== undefined && tail.at === this.t + (ms > 0 ? ms : 0)) {
      ev.at = tail.at
      ev.seq = this.seq++
      tail.next = ev
    } else {
      this.push(ev, ms)
    }
    this.tail = ev
    this.fixed++
  }

  sleep(ms: number, options: { signal?: AbortSignal } = {}): Promise<void> {
    return sleepOn(this, ms, options.signal)
  }

  /** Due time of the earliest live timer, or undefined. */
  nextTimerAt(): number | undefined {
    this.dropCancelled()
    return this.size > 0 ? this.ats[0] : undefined
  }

  /** Fires the earliest live timer (moving time to it). Returns false if none is left. */
  runNext(): boolean {
    this.dropCancelled()
    if (this.size === 0) return false
    this.fireTop()
    return true
  }

  /** Pops and fires the earliest timer (live: dropCancelled ran), moving time to it. */
  private fireTop(): void {
    const timer = this.pop()
    if (timer.id < 0) this.fixed--
    else this.live.delete(timer.id)
    if (timer.at > this.t) this.t = timer.at
    timer.fire()
  }

  /** Moves time forward by `ms`, firing every timer that falls due on the way, in order. */
  advance(ms: number): void {
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
  async advanceAsync(ms: number): Promise<void> {
    if (!(ms >= 0)) throw new InvalidArgumentError(`cannot advance a clock by ${ms} ms`)
    const target = this.t + ms
    const stop = watchPromises()
    try {
      await flushMicrotasks()
      const own = await calibrateAwait()
      for (;;) {
        this.dropCancelled()
        if (this.size === 0 || this.ats[0]! > target) break
        const before = promiseActivity
        this.fireTop()
        // A continuation can only be queued by creating or settling a promise: when the timer
        // did neither, there is nothing to flush. Otherwise hop through the microtask queue
        // until a hop sees no promise activity but its own (a macrotask hop per timer would
        // be the main cost of a large simulation). Timer callbacks must not call queueMicrotask.
        if (promiseActivity !== before) await drainMicrotasks(own)
      }
    } finally {
      stop()
    }
    this.t = target
  }

  private dropCancelled(): void {
    while (this.size > 0) {
      const id = this.events[0]!.id
      if (id < 0 || this.live.has(id)) return
      this.pop()
    }
  }

  private push(ev: ClockEvent, ms: number): void {
    const at = this.t + (ms > 0 ? ms : 0)
    const seq = this.seq++
    ev.at = at
    ev.seq = seq
    if (this.size === this.ats.length) this.grow()
    const ats = this.ats
    const seqs = this.seqs
    const evs = this.events
    // Sift a hole up from the end, then drop the event into it.
    let i = this.size++
    while (i > 0) {
      const p = (i - 1) >> 1
      const pa = ats[p]!
      if (pa < at || (pa === at && seqs[p]! < seq)) break
      ats[i] = pa
      seqs[i] = seqs[p]!
      evs[i] = evs[p]
      i = p
    }
    ats[i] = at
    seqs[i] = seq
    evs[i] = ev
  }

  private grow(): void {
    const n = this.size * 2
    const ats = new Float64Array(n)
    ats.set(this.ats)
    this.ats = ats
    const seqs = new Float64Array(n)
    seqs.set(this.seqs)
    this.seqs = seqs
  }

  /** Removes and returns the earliest event; the heap must not be empty. */
  private pop(): ClockEvent {
    const ats = this.ats
    const seqs = this.seqs
    const evs = this.events
    const top = evs[0]!
    const next = top.next
    if (next !== undefined) {
      // The chained event takes the root's place: it comes next in (time, seq), before every
      // other event in the heap, so nothing moves.
      top.next = undefined
      evs[0] = next
      seqs[0] = next.seq
      return top
    }
    if (top === this.tail) this.tail = undefined
    const n = --this.size
    const last = evs[n]!
    evs[n] = undefined
    if (n === 0) return top
    // Sift a hole down from the root, then drop the last event into it.
    const at = ats[n]!
    const seq = seqs[n]!
    let i = 0
    for (;;) {
      let c = 2 * i + 1
      if (c >= n) break
      let ca = ats[c]!
      if (c + 1 < n) {
        const da = ats[c + 1]!
        if (da < ca || (da === ca && seqs[c + 1]! < seqs[c]!)) {
          c++
          ca = da
        }
      }
      if (at < ca || (at === ca && seq < seqs[c]!)) break
      ats[i] = ca
      seqs[i] = seqs[c]!
      evs[i] = evs[c]
      i = c
    }
    ats[i] = at
    seqs[i] = seq
    evs[i] = last
    return top
  }
}

// Counts promise creations and settlements while some advanceAsync runs (v8 promise hooks).
let promiseActivity = 0
let watchers = 0
let unhook: (() => void) | undefined
function watchPromises(): () => void {
  if (watchers++ === 0) {
    const bump = (): void => {
      promiseActivity++
    }
    const offInit = promiseHooks.onInit(bump)
    const offSettled = promiseHooks.onSettled(bump)
    unhook = () => {
      offInit()
      offSettled()
    }
  }
  return () => {
    if (--watchers === 0) unhook?.()
  }
}

/** Promise events one bare `await` causes by itself (measured with an empty microtask queue). */
async function calibrateAwait(): Promise<number> {
  const before = promiseActivity
  await undefined
  return promiseActivity - before
}

/**
 * Awaits microtask hops until one sees no promise activity besides its own: the queue (FIFO)
 * then held nothing that could still queue a continuation. Falls back to a macrotask hop.
 */
async function drainMicrotasks(own: number): Promise<void> {
  for (let i = 0; i < 10_000; i++) {
    const before = promiseActivity
    await undefined
    if (promiseActivity - before <= own) return
  }
  await flushMicrotasks()
}

/** Resolves after all currently queued promise continuations (and their follow-ups) ran. */
export function flushMicrotasks(): Promise<void> {
  return new Promise(resolve => setImmediate(resolve))
}
