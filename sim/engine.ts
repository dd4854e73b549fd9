import { createHash, type Hash } from 'node:crypto'
import { ManualClock, Rng, flushMicrotasks, sleepOn, type Clock, type TimerId } from '../core/index.ts'

/**
 * The discrete-event engine: one virtual clock (core's ManualClock, whose timers fire in
 * (time, creation) order), one seeded Rng from which every random choice is split, and a
 * trace. Protocol code runs unchanged on top; all its time comes from the clock and all
 * randomness from the Rng, so the same seed and the same code give the same trace, byte for
 * byte. The trace is hashed as it grows (SHA-256 over its lines) so long runs stay cheap.
 */
export class Simulation {
  readonly clock: ManualClock
  readonly rng: Rng
  readonly seed: number
  private readonly hash: Hash = createHash('sha256')
  // Lines waiting to be hashed: one update per ~64 KiB instead of one per event (the digest of
  // the concatenation is the same).
  private pending = ''
  private lines = 0
  private readonly keep: string[] | undefined

  /**
   * `maxEvents` caps the events pending at once (each message in flight is one): default
   * 20 million, about 2 GB of heap; a 1000-node all-to-all heartbeat round needs 1 million.
   */
  constructor (init: { seed: number, keepTrace?: boolean, maxEvents?: number }) {
    this.seed = init.seed
    this.clock = new ManualClock({ startMs: 0, epochMs: 1_700_000_000_000, maxTimers: init.maxEvents ?? 20_000_000 })
    this.rng = Rng.fromSeed(init.seed)
    this.keep = init.keepTrace === true ? [] : undefined
  }

  /** Simulated milliseconds since the start. */
  now (): number { return this.clock.monotonic() }

  /** Appends one event to the trace: `<time> <kind> k=v ...` with keys in the given order. */
  trace (kind: string, fields: Record<string, string | number | boolean> = {}): void {
    let line = kind
    for (const k in fields) line += ` ${k}=${String(fields[k])}`
    this.traceRaw(line)
  }

  /** Appends `<time> <text>` to the trace; for hot paths that format their own line. */
  traceRaw (text: string): void {
    const line = `${this.now().toFixed(3)} ${text}`
    this.keep?.push(line)
    this.pending += line + '\n'
    if (this.pending.length > 65536) {
      this.hash.update(this.pending)
      this.pending = ''
    }
    this.lines++
  }

  /** Number of trace events so far. */
  get events (): number { return this.lines }

  /** The kept trace lines (when constructed with keepTrace). */
  traceLines (): readonly string[] { return this.keep ?? [] }

  /** Hex SHA-256 of the trace so far (the hash object is copied, so tracing can go on). */
  traceHash (): string {
    this.hash.update(this.pending)
    this.pending = ''
    return this.hash.copy().digest('hex')
  }

  /** Runs simulated time forward by `ms`, letting promise continuations run after every timer. */
  async run (ms: number): Promise<void> {
    await this.clock.advanceAsync(ms)
  }

  /** Runs until `cond()` holds, checking every `stepMs`; returns the simulated time taken, or undefined after `limitMs`. */
  async until (cond: () => boolean, limitMs: number, stepMs = 10): Promise<number | undefined> {
    const t0 = this.now()
    while (!cond()) {
      if (this.now() - t0 >= limitMs) return undefined
      await this.clock.advanceAsync(stepMs)
    }
    return this.now() - t0
  }

  /**
   * Lets simulated time flow on its own, as fast as the host allows: whenever the process is
   * idle, jump to the next timer. For running code written against real time (the PeerNet
   * compliance suite) on the simulator. Returns a function that stops it.
   */
  autoAdvance (): () => void {
    let running = true
    const pump = async (): Promise<void> => {
      while (running) {
        await flushMicrotasks()
        if (!running) return
        const next = this.clock.nextTimerAt()
        if (next === undefined) {
          // Nothing is scheduled in simulated time: wait a real millisecond for the code under
          // test (which runs on real time in this mode) to schedule something.
          await new Promise(resolve => setTimeout(resolve, 1))
          continue
        }
        this.clock.runNext()
      }
    }
    void pump()
    return () => { running = false }
  }
}

/**
 * A node's view of the simulation clock. While the node is paused (a long GC, a frozen VM) its
 * timers do not fire; they run, in order, when it resumes. Crashing a node drops its timers.
 */
export class NodeClock implements Clock {
  private readonly base: Clock
  private paused = false
  private crashed = false
  private readonly held: Array<() => void> = []

  constructor (base: Clock) {
    this.base = base
  }

  now (): number { return this.base.now() }
  monotonic (): number { return this.base.monotonic() }

  // A crashed clock's timers stay on the shared heap until due and then do nothing (tracking
  // each timer to cancel it at the crash cost more than it saved, at 1000 nodes).
  setTimeout (fn: () => void, ms: number): TimerId {
    return this.base.setTimeout(() => {
      if (this.crashed) return
      if (this.paused) this.held.push(fn)
      else fn()
    }, ms)
  }

  clearTimeout (id: TimerId): void {
    this.base.clearTimeout(id)
  }

  sleep (ms: number, options: { signal?: AbortSignal } = {}): Promise<void> {
    return sleepOn(this, ms, options.signal)
  }

  pause (): void { this.paused = true }

  resume (): void {
    this.paused = false
    for (const fn of this.held.splice(0)) fn()
  }

  /** Drops every pending timer for good (the process is gone). */
  crash (): void {
    this.crashed = true
    this.held.length = 0
  }

  get isPaused (): boolean { return this.paused }
}
