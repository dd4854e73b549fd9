import { availableParallelism } from 'node:os'
import { Worker } from 'node:worker_threads'
import { AbortError, throwIfAborted } from './errors.ts'
import { checkCap } from './limits.ts'

/** A request to a pool thread: `id` pairs it with its reply. */
export interface PoolRequest {
  id: number
}

/** A thread's reply: `ok` false carries the error as plain data (`error`). */
export interface PoolReply {
  id: number
  ok: boolean
}

/** How a pool is built. */
export interface ThreadPoolInit<Rep extends PoolReply> {
  /** Threads (each a V8 isolate, spawned on first use or start()). */
  size: number
  /** The thread's entry module. */
  entry: URL
  workerData?: unknown
  /** Names the pool in errors and caps ('snapshot coder'). */
  name: string
  /** What a job does, for an abort's message ('snapshot coding'). */
  doing: string
  /** Jobs in flight at most (a cap named "`name` jobs"). */
  maxJobs: number
  /** The typed error a failed reply stands for. */
  errorOf(reply: Rep): Error
  /** The typed error for a thread that crashed, exited or broke the protocol. */
  threadError(message: string): Error
}

export interface ThreadPool<Req extends PoolRequest, Rep extends PoolReply> {
  /** Posts the request `make(id)` to the least busy thread; the promise is its reply (`ok` true) or the reply's error. */
  submit<R extends Rep>(make: (id: number) => Req, signal?: AbortSignal): Promise<R>
  /** Spawns the threads not running yet. */
  start(): void
  /** Ends the threads; their jobs and later ones reject with AbortError. */
  stop(): void
}

interface Job<Rep> {
  resolve(reply: Rep): void
  reject(err: Error): void
  /** The caller gave up (aborted): the reply is dropped when it comes. */
  abandoned: boolean
}

interface Thread<Rep> {
  worker: Worker
  jobs: Map<number, Job<Rep>>
  dead: boolean
}

/**
 * A pool of worker threads, one request in and one reply out per job. Threads are unref'd
 * while idle, so an idle pool never keeps a process alive. A thread that crashes or exits
 * rejects its jobs with `threadError` and is replaced by the next job.
 */
export function createThreadPool<Req extends PoolRequest, Rep extends PoolReply>(init: ThreadPoolInit<Rep>): ThreadPool<Req, Rep> {
  const { size, name } = init
  const threads: Array<Thread<Rep> | undefined> = new Array(size).fill(undefined)
  let nextId = 1
  let inFlight = 0
  let stopped = false

  const settle = (t: Thread<Rep>, id: number): Job<Rep> | undefined => {
    const job = t.jobs.get(id)
    if (job === undefined) return undefined
    t.jobs.delete(id)
    inFlight--
    if (t.jobs.size === 0) t.worker.unref()
    return job
  }
  const fail = (t: Thread<Rep>, err: Error): void => {
    if (t.dead) return
    t.dead = true
    const slot = threads.indexOf(t)
    if (slot >= 0) threads[slot] = undefined
    for (const id of [...t.jobs.keys()]) settle(t, id)?.reject(err)
    void t.worker.terminate()
  }
  const onReply = (t: Thread<Rep>, reply: Rep): void => {
    const job = settle(t, reply.id)
    if (job === undefined) {
      fail(t, init.threadError(`${name} thread answered job ${String(reply.id)}, which it was not given`))
      return
    }
    if (job.abandoned) return
    if (reply.ok) job.resolve(reply)
    else job.reject(init.errorOf(reply))
  }
  const spawn = (slot: number): Thread<Rep> => {
    const worker = new Worker(init.entry, { workerData: init.workerData, execArgv: threadExecArgv(process.execArgv) })
    const t: Thread<Rep> = { worker, jobs: new Map(), dead: false }
    worker.unref()
    worker.on('message', (reply: Rep) => onReply(t, reply))
    worker.on('messageerror', err => fail(t, init.threadError(`${name} thread sent a message that does not deserialize: ${err.message}`)))
    worker.on('error', err => fail(t, init.threadError(`${name} thread failed: ${err.message}`)))
    worker.on('exit', code => fail(t, init.threadError(`${name} thread exited (code ${code})`)))
    threads[slot] = t
    return t
  }
  const pick = (): Thread<Rep> => {
    let best = 0
    for (let i = 1; i < size; i++) if ((threads[i]?.jobs.size ?? 0) < (threads[best]?.jobs.size ?? 0)) best = i
    return threads[best] ?? spawn(best)
  }

  return {
    submit<R extends Rep>(make: (id: number) => Req, signal: AbortSignal | undefined): Promise<R> {
      if (stopped) return Promise.reject(new AbortError(`the ${name} is stopped`))
      throwIfAborted(signal)
      checkCap(`${name} jobs`, inFlight + 1, init.maxJobs)
      const t = pick()
      const id = nextId++
      return new Promise<R>((resolve, reject) => {
        const onAbort = (): void => {
          job.abandoned = true
          reject(new AbortError(`${init.doing} aborted`, { reason: String(signal?.reason) }))
        }
        const job: Job<Rep> = {
          abandoned: false,
          resolve: r => {
            signal?.removeEventListener('abort', onAbort)
            resolve(r as R)
          },
          reject: e => {
            signal?.removeEventListener('abort', onAbort)
            reject(e)
          }
        }
        signal?.addEventListener('abort', onAbort, { once: true })
        t.jobs.set(id, job)
        inFlight++
        if (t.jobs.size === 1) t.worker.ref()
        t.worker.postMessage(make(id))
      })
    },
    start() {
      if (stopped) return
      for (let i = 0; i < size; i++) if (threads[i] === undefined) spawn(i)
    },
    stop() {
      stopped = true
      for (const t of threads) if (t !== undefined) fail(t, new AbortError(`the ${name} is stopped`))
    }
  }
}

/** Threads for work beside a trainer's main thread: one per core beyond `keep`, within [1, max]. */
export function spareThreads(keep: number, max: number): number {
  return Math.max(1, Math.min(max, availableParallelism() - keep))
}

/**
 * The parent's Node options a thread can take. A thread inherits them, but one started from a
 * file refuses those about how the main script was given (`--input-type`, and `-e` / `-p` with
 * its text): `node --input-type=module -e ...` could not start a thread.
 */
export function threadExecArgv(argv: readonly string[]): string[] {
  const out: string[] = []
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!
    if (a === '-e' || a === '--eval' || a === '-p' || a === '--print') i++
    else if (!a.startsWith('--input-type') && !a.startsWith('--eval=') && !a.startsWith('--print=')) out.push(a)
  }
  return out
}
