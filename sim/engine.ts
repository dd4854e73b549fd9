import { createHash, type Hash } from 'node:crypto'
import { ClockEvent, ManualClock, RealClock, Rng, flushMicrotasks, sleepOn, type Clock, type TimerId } from '../core/index.ts'

/** The host's real time, for autoAdvance's wait when nothing is scheduled in simulated time. */
const HOST_CLOCK = new RealClock()

/** Formats a compact trace record's four fields as the text after `<time> ` (see {@link Simulation.recordKind}). */
export type RecordFormat = (a: number, b: number, c: number, d: number) => string

// The trace is hashed as binary records, written into one buffer and hashed a buffer at a
// time (a record is 8-byte aligned: f64 time, u32 kind, then the kind's payload).
const TRACE_BUFFER_BYTES = 1 << 16
const TEXT_KIND = 0

/**
 * The discrete-event engine: one virtual clock (core's ManualClock, whose timers fire in
 * (time, creation) order), one seeded Rng from which every random choice is split, and a
 * trace. Protocol code runs unchanged on top; all its time comes from the clock and all
 * randomness from the Rng, so the same seed and the same code give the same trace, byte for
 * byte. The trace is hashed as it grows (SHA-256) so long runs stay cheap: each event is a
 * binary record (its time as a float64, a kind, and either four integers, for the hot
 * events a caller registered with {@link recordKind}, or the UTF-8 text of the line), so the
 * hot path builds no strings. With `keepTrace` every event is also kept as a text line,
 * `<time> <text>` with the time to 3 decimals.
 */
export class Simulation {
  readonly clock: ManualClock
  readonly rng: Rng
  readonly seed: number
  private readonly hash: Hash = createHash('sha256')
  private readonly buf = Buffer.alloc(TRACE_BUFFER_BYTES)
  private readonly f64 = new Float64Array(this.buf.buffer, this.buf.byteOffset, TRACE_BUFFER_BYTES / 8)
  private readonly u32 = new Uint32Array(this.buf.buffer, this.buf.byteOffset, TRACE_BUFFER_BYTES / 4)
  // Bytes of `buf` in use (always a multiple of 8).
  private used = 0
  private lines = 0
  private readonly keep: string[] | undefined
  private readonly formats: RecordFormat[] = []

  /**
   * `maxEvents` caps the events pending at once (each message in flight is one): default
   * 20 million, about 2 GB of heap; a 1000-node all-to-all heartbeat round needs 1 million.
   */
  constructor(init: { seed: number; keepTrace?: boolean; maxEvents?: number }) {
    this.seed = init.seed
    this.clock = new ManualClock({ startMs: 0, epochMs: 1_700_000_000_000, maxTimers: init.maxEvents ?? 20_000_000 })
    this.rng = Rng.fromSeed(init.seed)
    this.keep = init.keepTrace === true ? [] : undefined
  }

  /** Simulated milliseconds since the start. */
  now(): number {
    return this.clock.monotonic()
  }

  /** Appends one event to the trace: `<time> <kind> k=v ...` with keys in the given order. */
  trace(kind: string, fields: Record<string, string | number | boolean> = {}): void {
    let line = kind
    for (const k in fields) line += ` ${k}=${String(fields[k])}`
    this.traceRaw(line)
  }

  /** Appends `<time> <text>` to the trace. */
  traceRaw(text: string): void {
    const t = this.now()
    this.keep?.push(`${t.toFixed(3)} ${text}`)
    const bytes = Buffer.byteLength(text)
    const size = 16 + ((bytes + 7) & ~7)
    if (this.used + size > TRACE_BUFFER_BYTES) this.flush()
    const at = this.used
    if (size > TRACE_BUFFER_BYTES) {
      // A line longer than the buffer is hashed on its own (same bytes as if it had fit).
      const rec = Buffer.alloc(size)
      rec.writeDoubleLE(t, 0)
      rec.writeUInt32LE(TEXT_KIND, 8)
      rec.writeUInt32LE(bytes, 12)
      rec.write(text, 16)
      this.hash.update(rec)
    } else {
      this.f64[at >> 3] = t
      this.u32[(at >> 2) + 2] = TEXT_KIND
      this.u32[(at >> 2) + 3] = bytes
      this.buf.write(text, at + 16)
      this.buf.fill(0, at + 16 + bytes, at + size)
      this.used = at + size
    }
    this.lines++
  }

  /**
   * Registers a compact record kind for a hot path: {@link record} then traces an event as
   * four unsigned 32-bit integers, and `format` turns them into the event's text (called only
   * when the trace is kept). Register kinds in a deterministic order (at construction).
   */
  recordKind(format: RecordFormat): number {
    this.formats.push(format)
    return this.formats.length
  }

  /** Appends a compact event of a kind from {@link recordKind}; the fields are integers in [0, 2^32). */
  record(kind: number, a: number, b: number, c: number, d: number): void {
    const t = this.now()
    if (this.keep !== undefined) this.keep.push(`${t.toFixed(3)} ${this.formats[kind - 1]!(a, b, c, d)}`)
    if (this.used + 32 > TRACE_BUFFER_BYTES) this.flush()
    const at = this.used
    this.f64[at >> 3] = t
    const w = at >> 2
    const u = this.u32
    u[w + 2] = kind
    u[w + 3] = a
    u[w + 4] = b
    u[w + 5] = c
    u[w + 6] = d
    u[w + 7] = 0
    this.used = at + 32
    this.lines++
  }

  private flush(): void {
    if (this.used === 0) return
    this.hash.update(this.buf.subarray(0, this.used))
    this.used = 0
  }

  /** Number of trace events so far. */
  get events(): number {
    return this.lines
  }

  /** The kept trace lines (when constructed with keepTrace). */
  traceLines(): readonly string[] {
    return this.keep ?? []
  }

  /** Hex SHA-256 of the trace records so far (the hash object is copied, so tracing can go on). */
  traceHash(): string {
    this.flush()
    return this.hash.copy().digest('hex')
  }

  /** Runs simulated time forward by `ms`, letting promise continuations run after every timer. */
  async run(ms: number): Promise<void> {
    await this.clock.advanceAsync(ms)
  }

  /** Runs until `cond()` holds, checking every `stepMs`; returns the simulated time taken, or undefined after `limitMs`. */
  async until(cond: () => boolean, limitMs: number, stepMs = 10): Promise<number | undefined> {
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
  autoAdvance(): () => void {
    let running = true
    const pump = async (): Promise<void> => {
      while (running) {
        await flushMicrotasks()
        if (!running) return
        const next = this.clock.nextTimerAt()
        if (next === undefined) {
          // Nothing is scheduled in simulated time: wait a real millisecond for the code under
          // test (which runs on real time in this mode) to schedule something. autoAdvance bridges
          // simulated time to code written against real time, so it waits on core's RealClock,
          // the one definition of real time, not on the simulated clock.
          await HOST_CLOCK.sleep(1)
          continue
        }
        this.clock.runNext()
      }
    }
    void pump()
    return () => {
      running = false
    }
  }
}

/**
 * A node's view of the simulation clock. While the node is paused (a long GC, a frozen VM) its
 * timers do not fire; they run, in order, when it resumes. Crashing a node drops its timers.
 */
export class NodeClock implements Clock {
  private readonly base: ManualClock
  private paused = false
  private crashed = false
  private readonly held: Array<() => void> = []

  constructor(base: ManualClock) {
    this.base = base
  }

  turn(): Promise<void> {
    return sleepOn(this, 0)
  }

  now(): number {
    return this.base.now()
  }
  monotonic(): number {
    return this.base.monotonic()
  }

  // A crashed clock's timers stay on the shared heap until due and then do nothing (tracking
  // each timer to cancel it at the crash cost more than it saved, at 1000 nodes).
  setTimeout(fn: () => void, ms: number): TimerId {
    return this.base.setTimeoutEvent(new NodeTimer(this, fn), ms)
  }

  /** Runs a due timer: dropped after a crash, held while paused. */
  fireTimer(fn: () => void): void {
    if (this.crashed) return
    if (this.paused) this.held.push(fn)
    else fn()
  }

  clearTimeout(id: TimerId): void {
    this.base.clearTimeout(id)
  }

  sleep(ms: number, options: { signal?: AbortSignal } = {}): Promise<void> {
    return sleepOn(this, ms, options.signal)
  }

  pause(): void {
    this.paused = true
  }

  resume(): void {
    this.paused = false
    for (const fn of this.held.splice(0)) fn()
  }

  /** Drops every pending timer for good (the process is gone). */
  crash(): void {
    this.crashed = true
    this.held.length = 0
  }

  get isPaused(): boolean {
    return this.paused
  }
}

/** A NodeClock timer on the shared clock: one object, no wrapping closure. */
class NodeTimer extends ClockEvent {
  private readonly owner: NodeClock
  private readonly fn: () => void
  constructor(owner: NodeClock, fn: () => void) {
    super()
    this.owner = owner
    this.fn = fn
  }

  override fire(): void {
    this.owner.fireTimer(this.fn)
  }
}
