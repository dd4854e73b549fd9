import { checkCap, createThreadPool, InvalidArgumentError, spareThreads, throwIfAborted, ZeromeshError, type ThreadPool } from '../core/index.ts'
import { ADAM8_BLOCK, adam8Blocks, type Moments8 } from './adam8.ts'
import type { AdamWParams, LionParams } from './backend.ts'
import { checkAdamW, checkLion } from './validate.ts'

/** `--offload cpu`'s optimizer threads: their caps (docs/LIMITS.md). */
export const HOST_OPTIM_LIMITS = Object.freeze({
  /** Threads at most. */
  maxThreads: 64,
  /** Slices in flight at most. */
  maxJobs: 4096,
  /** Elements per slice at least (smaller shards are one slice). */
  minSlice: 1 << 16
})

/** An optimizer thread failed (crashed, exited, or threw on its slice). */
export class HostOptimizerError extends ZeromeshError {
  static override name = 'HostOptimizerError'
}

/** One slice's update (host-optim-worker.ts); every array a view of shared memory. */
export type OptimRequest =
  | { id: number; op: 'adamw'; w: Float32Array; g: Float32Array; m: Float32Array; v: Float32Array; p: AdamWParams }
  | { id: number; op: 'lion'; w: Float32Array; g: Float32Array; m: Float32Array; p: LionParams }
  | { id: number; op: 'adamw8bit'; w: Float32Array; g: Float32Array; mc: Uint8Array; vc: Uint8Array; sc: Float32Array; p: AdamWParams }
  | { id: number; op: 'lion8bit'; w: Float32Array; g: Float32Array; mc: Uint8Array; sc: Float32Array; p: LionParams }

export type OptimReply = { id: number; ok: true } | { id: number; ok: false; error: string }

/**
 * The optimizers on worker threads over host memory shared with them (SharedArrayBuffer: the
 * CPU backend's `shared` allocations). Each call splits its arrays into slices, one job each,
 * and resolves when every slice is updated: the same bits as the CPU backend's op on the whole
 * arrays (gpu/host-optim.ts), whatever the number of threads.
 */
export interface HostOptimizer {
  readonly threads: number
  adamw(w: Float32Array, g: Float32Array, m: Float32Array, v: Float32Array, p: AdamWParams, signal?: AbortSignal): Promise<void>
  lion(w: Float32Array, g: Float32Array, m: Float32Array, p: LionParams, signal?: AbortSignal): Promise<void>
  /** Blocks of ADAM8_BLOCK elements from w[0]; sc holds their absmax pairs. */
  adamw8bit(w: Float32Array, g: Float32Array, mc: Uint8Array, vc: Uint8Array, sc: Float32Array, p: AdamWParams, signal?: AbortSignal): Promise<void>
  /** Blocks of ADAM8_BLOCK elements from w[0]; sc holds their m absmaxes. */
  lion8bit(w: Float32Array, g: Float32Array, mc: Uint8Array, sc: Float32Array, p: LionParams, signal?: AbortSignal): Promise<void>
  /** Spawns the threads now (a trainer does before it joins, so the first update does not). */
  start(): void
  stop(): void
}

// The sources run with Node's type stripping (.ts), the package from dist/ (.js).
const ENTRY = import.meta.url.endsWith('.ts') ? new URL('./host-optim-worker.ts', import.meta.url) : new URL('./host-optim-worker.js', import.meta.url)

/** Threads by default: every core but the trainer's and one for the rest of the node, at most 16. */
export function defaultOptimizerThreads(): number {
  return spareThreads(2, 16)
}

export function createHostOptimizer(init: { threads?: number } = {}): HostOptimizer {
  const threads = init.threads ?? defaultOptimizerThreads()
  if (!Number.isSafeInteger(threads) || threads < 1) throw new InvalidArgumentError(`optimizer threads must be an integer >= 1, got ${threads}`)
  checkCap('offload optimizer threads', threads, HOST_OPTIM_LIMITS.maxThreads)
  const pool: ThreadPool<OptimRequest, OptimReply> = createThreadPool<OptimRequest, OptimReply>({
    size: threads,
    entry: ENTRY,
    name: 'offload optimizer',
    doing: 'the offloaded optimizer step',
    maxJobs: HOST_OPTIM_LIMITS.maxJobs,
    errorOf: r => new HostOptimizerError(`offload optimizer thread: ${(r as Extract<OptimReply, { ok: false }>).error}`),
    threadError: message => new HostOptimizerError(message)
  })
  // Slices in flight at most, across calls: the rest wait for a place (a shard of any size
  // stays under the pool's job cap, and every thread always has its next slice queued).
  const window = Math.min(HOST_OPTIM_LIMITS.maxJobs, 4 * threads)
  let inFlight = 0
  const waiting: Array<() => void> = []
  const place = async (): Promise<void> => {
    while (inFlight >= window) await new Promise<void>(resolve => waiting.push(resolve))
    inFlight++
  }
  const leave = (): void => {
    inFlight--
    waiting.shift()?.()
  }
  /**
   * Runs `job(lo, hi)` over slices of [0, n) (boundaries multiples of `align`) and waits until
   * every slice it handed a thread has settled. (An aborted slice settles at once, but its
   * thread finishes writing it: the caller's memory must outlive the call.)
   */
  const sliced = async (
    n: number,
    align: number,
    signal: AbortSignal | undefined,
    job: (lo: number, hi: number) => Omit<OptimRequest, 'id'>
  ): Promise<void> => {
    const per = Math.max(HOST_OPTIM_LIMITS.minSlice, Math.ceil(n / (2 * threads)))
    const step = Math.ceil(per / align) * align
    const all: Array<Promise<OptimReply>> = []
    for (let lo = 0; lo < n; lo += step) {
      const q = job(lo, Math.min(n, lo + step))
      await place()
      if (signal?.aborted === true) {
        leave()
        break
      }
      const r = pool.submit(id => ({ ...q, id }) as OptimRequest, signal)
      all.push(r)
      r.then(leave, leave)
    }
    throwIfAborted(signal)
    const done = await Promise.allSettled(all)
    const failed = done.find(d => d.status === 'rejected')
    if (failed !== undefined) throw (failed as PromiseRejectedResult).reason
  }
  const shared = (op: string, ...xs: ArrayBufferView[]): void => {
    for (const x of xs)
      if (!(x.buffer instanceof SharedArrayBuffer)) throw new InvalidArgumentError(`${op}: the offloaded optimizer's arrays must be in shared memory`)
  }
  const same = (op: string, n: number, ...xs: ArrayBufferView[]): void => {
    for (const x of xs) if ((x as Float32Array).length !== n) throw new InvalidArgumentError(`${op}: every array must have ${n} elements`)
  }
  // 8-bit states: k absmaxes per block of ADAM8_BLOCK elements (gpu/adam8.ts).
  const scalesOf = (op: string, n: number, sc: Float32Array, k: Moments8): void => {
    if (sc.length !== k * adam8Blocks(n)) throw new InvalidArgumentError(`${op}: scales must have ${k * adam8Blocks(n)} elements`)
  }
  /** The absmaxes of the blocks of elements [a, b) (a on a block boundary). */
  const blockScales = (sc: Float32Array, k: Moments8, a: number, b: number): Float32Array => sc.subarray((k * a) / ADAM8_BLOCK, k * adam8Blocks(b))
  return {
    threads,
    adamw(w, g, m, v, p, signal) {
      checkAdamW('adamw', p)
      shared('adamw', w, g, m, v)
      same('adamw', w.length, g, m, v)
      return sliced(w.length, 1, signal, (a, b) => ({ op: 'adamw', w: w.subarray(a, b), g: g.subarray(a, b), m: m.subarray(a, b), v: v.subarray(a, b), p }))
    },
    lion(w, g, m, p, signal) {
      checkLion('lion', p)
      shared('lion', w, g, m)
      same('lion', w.length, g, m)
      return sliced(w.length, 1, signal, (a, b) => ({ op: 'lion', w: w.subarray(a, b), g: g.subarray(a, b), m: m.subarray(a, b), p }))
    },
    adamw8bit(w, g, mc, vc, sc, p, signal) {
      checkAdamW('adamw8bit', p)
      shared('adamw8bit', w, g, mc, vc, sc)
      same('adamw8bit', w.length, g, mc, vc)
      scalesOf('adamw8bit', w.length, sc, 2)
      return sliced(w.length, ADAM8_BLOCK, signal, (a, b) => ({
        op: 'adamw8bit',
        w: w.subarray(a, b),
        g: g.subarray(a, b),
        mc: mc.subarray(a, b),
        vc: vc.subarray(a, b),
        sc: blockScales(sc, 2, a, b),
        p
      }))
    },
    lion8bit(w, g, mc, sc, p, signal) {
      checkLion('lion8bit', p)
      shared('lion8bit', w, g, mc, sc)
      same('lion8bit', w.length, g, mc)
      scalesOf('lion8bit', w.length, sc, 1)
      return sliced(w.length, ADAM8_BLOCK, signal, (a, b) => ({
        op: 'lion8bit',
        w: w.subarray(a, b),
        g: g.subarray(a, b),
        mc: mc.subarray(a, b),
        sc: blockScales(sc, 1, a, b),
        p
      }))
    },
    start: () => pool.start(),
    stop: () => pool.stop()
  }
}
