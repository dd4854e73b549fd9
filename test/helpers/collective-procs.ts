// Starts P collective worker processes (test/helpers/collective-worker.ts): real libp2p nodes on
// loopback, for test/chaos/collective-processes.test.ts and `npm run bench -- collective` (bench/
// may use test/helpers/; tests never import bench/).
// Every child is SIGKILLed on every exit path (WorkerGroup.kill); workers also exit when
// their stdin closes, so none outlives the parent.
import { spawn, type ChildProcess } from 'node:child_process'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import type { WorkerConfig } from './collective-worker.ts'

export type { FaultOp, WorkerConfig } from './collective-worker.ts'

/**
 * What a worker in check mode reports: its rank, the ring, the transports its streams used and
 * checksums of its results; with timed rounds also the throughput (MB/s of the whole vector).
 */
export interface WorkerResult {
  rank: number
  ring: number[]
  transports: string[]
  allGather: string
  reduceScatter: string
  allReduce: string
  /** The same calls with `into` (results written into arrays the worker owns). */
  allGatherInto: string
  reduceScatterInto: string
  /** Timed rounds with `into`, then with a fresh result per call (`...Fresh...`). */
  allGatherMBps?: number
  reduceScatterMBps?: number
  allGatherFreshMBps?: number
  reduceScatterFreshMBps?: number
  /** CPU time (user + system) of this process per timed round, ms. */
  allGatherCpuMs?: number
  reduceScatterCpuMs?: number
  allGatherFreshCpuMs?: number
  reduceScatterFreshCpuMs?: number
}

/** One JSON line a worker printed (`ev` names it), or `{ ev: 'addr', addr }` for its ADDR line. */
export type WorkerEvent = { ev: string } & Record<string, unknown>

const worker = fileURLToPath(new URL('./collective-worker.ts', import.meta.url))

export interface Worker {
  readonly index: number
  readonly child: ChildProcess
  /** Resolves with the exit code (null when killed by a signal). */
  readonly exited: Promise<number | null>
  /** Whether the process has exited. */
  readonly gone: boolean
  /** The first event (received or to come) matching `pred`, consumed; rejects after `ms` or if the worker exits first. */
  next(what: string, ms: number, pred: (e: WorkerEvent) => boolean): Promise<WorkerEvent>
  /** Writes one JSON command line to the worker's stdin. */
  send(cmd: Record<string, unknown>): void
}

export interface WorkerGroup {
  readonly workers: Worker[]
  /** SIGKILLs every worker still running and removes the data dir; idempotent. */
  kill(): void
}

/**
 * Spawns P workers with `config` (index 0 first; the others bootstrap from its address).
 * Resolves once worker 0 printed its address and the others were started (they bootstrap from
 * it); on any failure every child is killed.
 */
export async function startWorkers(
  P: number,
  config: Omit<WorkerConfig, 'index' | 'P' | 'secretFile' | 'dataDir' | 'bootstrap'>,
  opts: { startMs?: number } = {}
): Promise<WorkerGroup> {
  const startMs = opts.startMs ?? 30_000
  const dir = mkdtempSync(join(tmpdir(), 'zm-cp-'))
  const secretFile = join(dir, 'secret')
  writeFileSync(secretFile, 'a collective secret of enough length')
  const workers: Worker[] = []
  let killed = false
  const group: WorkerGroup = {
    workers,
    kill() {
      if (killed) return
      killed = true
      for (const w of workers) if (!w.gone) w.child.kill('SIGKILL')
      rmSync(dir, { recursive: true, force: true })
    }
  }
  const start = (index: number, bootstrap?: string): Worker => {
    const cfg: WorkerConfig = { ...config, index, P, secretFile, dataDir: join(dir, `w${index}`), ...(bootstrap === undefined ? {} : { bootstrap }) }
    const child = spawn(process.execPath, [worker, JSON.stringify(cfg)], { stdio: ['pipe', 'pipe', 'inherit'] })
    child.stdin!.on('error', () => {}) // a killed worker's closed pipe
    const events: WorkerEvent[] = []
    const waiters: Array<{ pred: (e: WorkerEvent) => boolean; resolve: (e: WorkerEvent) => void; reject: (err: Error) => void }> = []
    let gone = false
    let tail = ''
    const exited = new Promise<number | null>(resolve =>
      child.once('exit', code => {
        gone = true
        const err = new Error(`worker ${index} exited with ${code}; last output: ${tail.slice(-500)}`)
        for (const w of waiters.splice(0)) w.reject(err)
        resolve(code)
      })
    )
    let buf = ''
    child.stdout!.on('data', (d: Buffer) => {
      buf += d.toString()
      tail = (tail + d.toString()).slice(-2000)
      const lines = buf.split('\n')
      buf = lines.pop()!
      for (const line of lines) {
        const a = /^ADDR (\S+)$/.exec(line)
        const e: WorkerEvent | undefined = a !== null ? { ev: 'addr', addr: a[1] } : line.startsWith('{') ? (JSON.parse(line) as WorkerEvent) : undefined
        if (e === undefined) continue
        const i = waiters.findIndex(x => x.pred(e))
        if (i >= 0) waiters.splice(i, 1)[0]!.resolve(e)
        else events.push(e)
      }
    })
    const w: Worker = {
      index,
      child,
      exited,
      get gone() {
        return gone
      },
      next(what, ms, pred) {
        const i = events.findIndex(pred)
        if (i >= 0) return Promise.resolve(events.splice(i, 1)[0]!)
        if (gone) return Promise.reject(new Error(`worker ${index} exited before ${what}; last output: ${tail.slice(-500)}`))
        return new Promise<WorkerEvent>((resolve, reject) => {
          const timer = setTimeout(() => {
            const j = waiters.indexOf(entry)
            if (j >= 0) waiters.splice(j, 1)
            reject(new Error(`timed out after ${ms} ms waiting for ${what} from worker ${index}`))
          }, ms)
          const entry = {
            pred,
            resolve: (e: WorkerEvent) => {
              clearTimeout(timer)
              resolve(e)
            },
            reject: (err: Error) => {
              clearTimeout(timer)
              reject(err)
            }
          }
          waiters.push(entry)
        })
      },
      send(cmd) {
        if (!gone) child.stdin!.write(JSON.stringify(cmd) + '\n')
      }
    }
    workers.push(w)
    return w
  }
  try {
    const first = start(0)
    const addr = (await first.next('its address', startMs, e => e.ev === 'addr'))['addr'] as string
    for (let i = 1; i < P; i++) start(i, addr)
    return group
  } catch (err) {
    group.kill()
    throw err
  }
}

/** Starts P worker processes in check mode and collects their results; kills them all if any fails. */
export async function runWorkers(P: number, elements: number, seed: number, opts: { ms?: number; rounds?: number } = {}): Promise<WorkerResult[]> {
  const ms = opts.ms ?? 10 * 60_000
  const g = await startWorkers(P, { mode: 'check', elements, seed, rounds: opts.rounds })
  try {
    // Every rank has its results once every rank printed them: nobody needs the others' bytes any more.
    const results = await Promise.all(g.workers.map(w => w.next('its result', ms, e => e.ev === 'result')))
    return results as unknown as WorkerResult[]
  } finally {
    g.kill()
  }
}
