import type { Backend, Fence, GptStream, Tensor } from '../../gpu/index.ts'
import type { ParamMemory } from './config.ts'

/** Bytes sent per link tier. */
export interface TierBytes {
  host: number
  zone: number
  wan: number
}

/** One gathered bucket and what gathering it sent. */
export interface Gathered {
  data: Float32Array
  bytes: TierBytes
}

/**
 * A rank's parameter memory and traffic bookkeeping for one session: bytes of gathered
 * weights and gradient copies alive (`hold` / `release`) and their peak, and the bytes sent
 * per tier, added to the trainer's running totals.
 */
export class ParamAccounting {
  readonly memory: ParamMemory
  /** The clock (ms) the waits are measured on. */
  readonly now: () => number
  /** ms the model spent waiting for gathered buckets (the step's loop reads and resets it). */
  gatherWaitMs = 0
  private readonly sent: TierBytes
  private live = 0

  /** `sent`: the trainer's per-tier totals (updated in place). */
  constructor(memory: ParamMemory, sent: TierBytes, now: () => number) {
    this.memory = memory
    this.sent = sent
    this.now = now
  }

  /** Bytes that came alive (a gathered bucket, a gradient copy waiting to be reduced). */
  hold(bytes: number): void {
    this.live += bytes
    if (this.live > this.memory.inFlightPeak) this.memory.inFlightPeak = this.live
  }

  release(bytes: number): void {
    this.live -= bytes
  }

  /** Adds what a collective call sent to the totals. */
  account(b: TierBytes): void {
    this.sent.host += b.host
    this.sent.zone += b.zone
    this.sent.wan += b.wan
  }
}

/**
 * Serves a pass's bucket requests in `order`, each gather issued when the one before it is
 * asked for (one bucket prefetched), and writes each gathered bucket into the model's slot on
 * `be`. Every rank issues the same calls in the same order.
 */
export function streamBuckets(order: readonly number[], gather: (j: number) => Promise<Gathered>, acct: ParamAccounting, be: Backend): GptStream {
  const started = new Map<number, Promise<Float32Array>>()
  const start = (j: number): void => {
    if (started.has(j)) return
    const p = gather(j).then(r => {
      acct.account(r.bytes)
      acct.hold(r.data.byteLength)
      return r.data
    })
    p.catch(() => {}) // awaited by load(); a pass that fails first leaves it unread
    started.set(j, p)
  }
  return {
    load: async (j: number, dst: Tensor) => {
      start(j)
      const next = order[order.indexOf(j) + 1]
      if (next !== undefined) start(next)
      const waited = acct.now()
      const data = await started.get(j)!
      acct.gatherWaitMs += acct.now() - waited
      started.delete(j)
      be.write(dst, data)
      // Copied into the slot: the array is garbage once the model goes on.
      queueMicrotask(() => {
        acct.release(data.byteLength)
      })
      return undefined
    }
  }
}

/**
 * Serves bucket requests from tensors already on the model's backend (a local rank's shard):
 * the model reads them in place, nothing is gathered. Each request first takes an event-loop
 * `turn`: nothing else in such a pass waits for I/O, and background work (a snapshot's
 * placement, heartbeats) moves only in those turns.
 */
export function deviceBuckets(src: (j: number) => Tensor, turn: () => Promise<void>): GptStream {
  return {
    load: async (j: number) => {
      await turn()
      return src(j)
    }
  }
}

/**
 * Runs `next` once `fence` has passed: at once when it has (the CPU backend's fences always
 * have, so a CPU rank's schedule gains no await), else after a non-blocking wait.
 */
export function afterFence<T>(fence: Fence, options: { signal?: AbortSignal }, next: () => Promise<T>): Promise<T> {
  return fence.passed() ? next() : fence.wait(options).then(next)
}
