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

export class PhiDetector {
  readonly threshold: number
  private readonly minStd: number
  private readonly pause: number
  private readonly window: number
  // The interval window as a ring (one is pushed and the oldest dropped on every heartbeat).
  private readonly intervals: Float64Array
  private head = 0
  private count = 0
  private sum = 0
  private sumSq = 0
  private last: number | undefined

  constructor (opts: PhiOptions) {
    this.threshold = opts.threshold ?? 8
    this.minStd = opts.minStdMs ?? 100
    this.pause = opts.acceptablePauseMs ?? 0
    this.window = opts.windowSize ?? 100
    if (!(opts.firstIntervalMs > 0) || !(this.threshold > 0) || !(this.minStd > 0) || !(this.window >= 2)) {
      throw new InvalidArgumentError('phi detector needs a positive first interval, threshold and min std, and a window of at least 2')
    }
    // Seed with the expected period so the first heartbeats do not make a hair trigger.
    this.intervals = new Float64Array(this.window)
    this.add(opts.firstIntervalMs)
    this.add(opts.firstIntervalMs)
  }

  /** Records a heartbeat at time `now` (ms). */
  heartbeat (now: number): void {
    if (this.last !== undefined && now > this.last) this.add(now - this.last)
    this.last = now
  }

  /** Time of the last heartbeat, if any. */
  get lastAt (): number | undefined { return this.last }

  /** phi at time `now`; 0 before the first heartbeat. */
  phi (now: number): number {
    if (this.last === undefined) return 0
    return phiOf(now - this.last, this.mean() + this.pause, this.std())
  }

  /** True if phi exceeds the threshold at `now`. */
  suspect (now: number): boolean {
    return this.phi(now) > this.threshold
  }

  /** Milliseconds of silence after which the current statistics make phi cross the threshold. */
  silenceToSuspectMs (): number {
    return silenceFor(this.threshold, this.mean() + this.pause, this.std())
  }

  mean (): number { return this.sum / this.count }

  std (): number {
    const n = this.count
    const m = this.sum / n
    return Math.max(this.minStd, Math.sqrt(Math.max(0, this.sumSq / n - m * m)))
  }

  private add (interval: number): void {
    this.sum += interval
    this.sumSq += interval * interval
    if (this.count < this.window) {
      this.intervals[(this.head + this.count) % this.window] = interval
      this.count++
      return
    }
    const old = this.intervals[this.head]!
    this.intervals[this.head] = interval
    this.head = (this.head + 1) % this.window
    this.sum -= old
    this.sumSq -= old * old
  }

}

/** phi for a silence of `elapsed` given mean and std (logistic approximation of the normal tail). */
export function phiOf (elapsed: number, mean: number, std: number): number {
  const y = (elapsed - mean) / std
  const e = Math.exp(-y * (1.5976 + 0.070566 * y * y))
  const p = elapsed > mean ? e / (1 + e) : 1 - 1 / (1 + e)
  return p <= 0 ? Infinity : -Math.log10(p)
}

/** The silence (ms) at which phi reaches `threshold` (bisection; phi grows with silence). */
export function silenceFor (threshold: number, mean: number, std: number): number {
  let lo = 0
  let hi = mean + 100 * std
  for (let i = 0; i < 60; i++) {
    const mid = (lo + hi) / 2
    if (phiOf(mid, mean, std) > threshold) hi = mid
    else lo = mid
  }
  return hi
}
