import { InvalidArgumentError } from '../core/index.ts'

/**
 * Phi-accrual failure detector (Hayashibara et al.; the Cassandra/Akka form). It keeps a window
 * of heartbeat inter-arrival times per peer and turns "time since the last heartbeat" into
 * phi = -log10(P(a heartbeat arrives this late or later)), assuming normally distributed
 * intervals. A peer is suspected when phi exceeds the threshold, so timeouts follow the
 * observed latency and jitter instead of a constant.
 */
export interface PhiOptions {
  /** Suspicion threshold; 8 means a 1e-8 chance that a live peer is this late. Default 8. */
  threshold?: number
  /** Floor for the interval standard deviation (ms): loopback jitter is near zero. Default 100. */
  minStdMs?: number
  /** Extra slack added to the mean (ms), e.g. for GC pauses. Default 0. */
  acceptablePauseMs?: number
  /** Intervals kept. Default 100. */
  windowSize?: number
  /** Interval assumed before any was observed (ms): the heartbeat period. */
  firstIntervalMs: number
}

// Above the largest phi a silence at or below the mean can have (log10(2), plus rounding slack).
const PHI_AT_MEAN_BOUND = 0.302

// The detector's numbers live in one array of doubles: the sums, the last heartbeat's time
// (NaN for none), the ring's head and fill, then the ring of intervals, which grows to the
// window as intervals come in. V8 keeps a double-valued field in a box of its own, so as
// fields they were four more objects to load (each a cache miss when a simulation checks 1000
// nodes' detectors in turn); and a plain array is allocated on the JS heap where a typed array
// took a native allocation (primed detectors, made by the thousand when a leader fails, mostly
// never see a heartbeat).
const SUM = 0
const SUM_SQ = 1
const LAST = 2
const HEAD = 3
const COUNT = 4
const RING = 5

export class PhiDetector {
  readonly threshold: number
  private readonly minStd: number
  private readonly pause: number
  private readonly window: number
  // (One interval is pushed and, once the window is full, the oldest dropped on every heartbeat.)
  private readonly s: number[]

  constructor(opts: PhiOptions) {
    this.threshold = opts.threshold ?? 8
    this.minStd = opts.minStdMs ?? 100
    this.pause = opts.acceptablePauseMs ?? 0
    this.window = opts.windowSize ?? 100
    if (!(opts.firstIntervalMs > 0) || !(this.threshold > 0) || !(this.minStd > 0) || !(this.window >= 2)) {
      throw new InvalidArgumentError('phi detector needs a positive first interval, threshold and min std, and a window of at least 2')
    }
    // Seed with the expected period so the first heartbeats do not make a hair trigger: two
    // intervals of it (the sums as two adds to zero make them). The NaN makes V8 store the
    // array as unboxed doubles from the start.
    const f = opts.firstIntervalMs
    this.s = [f + f, f * f + f * f, NaN, 0, 2, f, f]
  }

  /** Records a heartbeat at time `now` (ms). */
  heartbeat(now: number): void {
    const s = this.s
    const last = s[LAST]!
    // (NaN, no heartbeat yet, compares false.)
    if (now > last) this.add(now - last)
    s[LAST] = now
  }

  /** Time of the last heartbeat, if any. */
  get lastAt(): number | undefined {
    const last = this.s[LAST]!
    return Number.isNaN(last) ? undefined : last
  }

  /** phi at time `now`; 0 before the first heartbeat. */
  phi(now: number): number {
    const last = this.s[LAST]!
    if (Number.isNaN(last)) return 0
    return phiOf(now - last, this.mean() + this.pause, this.std())
  }

  /** True if phi exceeds the threshold at `now`. */
  suspect(now: number): boolean {
    const last = this.s[LAST]!
    if (Number.isNaN(last)) return false
    const elapsed = now - last
    const mean = this.mean() + this.pause
    // A silence no longer than the mean has a tail probability of at least 1/2, so phi is at
    // most log10(2) ~ 0.30103 there: under any threshold above that the answer is no, without
    // exp and log10 (a leader checks every member each tick).
    if (elapsed <= mean && this.threshold >= PHI_AT_MEAN_BOUND) return false
    return phiOf(elapsed, mean, this.std()) > this.threshold
  }

  /** Milliseconds of silence after which the current statistics make phi cross the threshold. */
  silenceToSuspectMs(): number {
    return silenceFor(this.threshold, this.mean() + this.pause, this.std())
  }

  mean(): number {
    return this.s[SUM]! / this.s[COUNT]!
  }

  std(): number {
    const s = this.s
    const n = s[COUNT]!
    const m = s[SUM]! / n
    return Math.max(this.minStd, Math.sqrt(Math.max(0, s[SUM_SQ]! / n - m * m)))
  }

  private add(interval: number): void {
    const s = this.s
    const w = this.window
    s[SUM] = s[SUM]! + interval
    s[SUM_SQ] = s[SUM_SQ]! + interval * interval
    const head = s[HEAD]!
    const count = s[COUNT]!
    if (count < w) {
      // Filling: the head is still 0, so the next slot is the end of the array.
      s.push(interval)
      s[COUNT] = count + 1
      return
    }
    const old = s[RING + head]!
    s[RING + head] = interval
    s[HEAD] = (head + 1) % w
    s[SUM] = s[SUM]! - old
    s[SUM_SQ] = s[SUM_SQ]! - old * old
  }
}

/** phi for a silence of `elapsed` given mean and std (logistic approximation of the normal tail). */
export function phiOf(elapsed: number, mean: number, std: number): number {
  const y = (elapsed - mean) / std
  const e = Math.exp(-y * (1.5976 + 0.070566 * y * y))
  const p = elapsed > mean ? e / (1 + e) : 1 - 1 / (1 + e)
  return p <= 0 ? Infinity : -Math.log10(p)
}

/** The silence (ms) at which phi reaches `threshold` (bisection; phi grows with silence). */
export function silenceFor(threshold: number, mean: number, std: number): number {
  let lo = 0
  let hi = mean + 100 * std
  for (let i = 0; i < 60; i++) {
    const mid = (lo + hi) / 2
    if (phiOf(mid, mean, std) > threshold) hi = mid
    else lo = mid
  }
  return hi
}
