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
  private readonly sent: TierBytes
  private live = 0

  /** `sent`: the trainer's per-tier totals (updated in place). */
  constructor(memory: ParamMemory, sent: TierBytes) {
    this.memory = memory
    this.sent = sent
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

/** Serves a pass's bucket requests to the streamed model. */
export interface BucketStream {
  load: (j: number) => Promise<Float32Array>
}

/**
 * Serves a pass's bucket requests in `order`, each gather issued when the one before it is
 * asked for (one bucket prefetched). Every rank issues the same calls in the same order.
 */
export function streamBuckets(order: readonly number[], gather: (j: number) => Promise<Gathered>, acct: ParamAccounting): BucketStream {
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
    load: async (j: number) => {
      start(j)
      const next = order[order.indexOf(j) + 1]
      if (next !== undefined) start(next)
      const data = await started.get(j)!
      started.delete(j)
      // The model copies it into its slot at once; the array is garbage afterwards.
      queueMicrotask(() => {
        acct.release(data.byteLength)
      })
      return data
    }
  }
}
