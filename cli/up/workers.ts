import { spawn, type ChildProcess } from 'node:child_process'
import { closeSync, openSync, readdirSync, type WriteStream } from 'node:fs'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { NODE_EVENT_LIMITS, START_OPTIONS, parseNodeEvent, type NodeEvent, type NodeStatus, type Optimizer, type TokenizerName } from '../../node/index.ts'
import { ZeromeshError, type RealClock } from '../../core/index.ts'
import { renderNodeEvent } from '../render.ts'

/**
 * The worker processes of `zeromesh up`: each runs `zeromesh start --train --events jsonl` and
 * its stdout is read as node events (node/events.ts), never as human text.
 */

/** `zeromesh up` could not run: a worker did not start, or the run did not finish in time. */
export class UpError extends ZeromeshError {
  static override name = 'UpError'
}

/** One worker process and what `up` knows of it. */
export interface Worker {
  name: string
  dataDir: string
  proc: ChildProcess
  /** Its `started` event: who it is and where it listens. */
  started: Event<'started'> | undefined
  /** Its `recovery` events, in order. */
  recoveries: Array<Event<'recovery'>>
  memory: Event<'memory'> | undefined
  done: Event<'done'> | undefined
  /** Its last `failed` event. */
  failed: Event<'failed'> | undefined
  /** Its last human lines (shown when it fails to start). */
  tail: string[]
  exit: Promise<number | null>
  exited: boolean
  killed: boolean
  /** The worker's status at the last poll that reached it. */
  status: NodeStatus | undefined
  /** Arrival time (monotonic ms) of this worker's `view` and `step` events after the kill. */
  afterKill: Array<{ ms: number; view?: number; step?: number }>
}

/** A node event of one type. */
export type Event<T extends NodeEvent['type']> = Extract<NodeEvent, { type: T }>

/** Human lines a worker keeps for its start-up error. */
const TAIL_LINES = 5

/** What every worker of one `up` run shares. */
export interface WorkerPlan {
  dir: string
  run: string
  secret: string
  /** Ranks plus spares. */
  total: number
  nodes: number
  steps: number
  device: 'cpu' | 'cuda'
  model: string
  seed: number
  batch: number
  seq: number
  zeropp: boolean
  optimizer?: Optimizer
  zo?: { eps: number }
  offload?: { threads?: number }
  deviceMemory?: number
  lr?: number
  outer?: { every: number; streaming: boolean }
  data: string | undefined
  snapshot: string | undefined
  snapshotEvery: number | undefined
  /** GPUs on this host (cuda): worker i uses GPU i mod gpuCount. */
  gpuCount: number
  /** `--init-from` for the workers: the run starts from this checkpoint. */
  initFrom?: string | undefined
  /** `--tokenizer` for the workers (default theirs, bytes). */
  tokenizer?: TokenizerName | undefined
  /** Every worker serves its dashboard on a free loopback port (`--http 127.0.0.1:0`). */
  dashboard?: boolean
}

/** Where a worker's events go besides the worker's record. */
export interface WorkerSinks {
  clock: RealClock
  /** workers.log: every worker's human lines, prefixed with its name. */
  log: Pick<WriteStream, 'write'>
  /** Whether `view` and `step` events are stamped (from the kill until its report). */
  stamping: () => boolean
  /** A line `up` shows (a malformed event line, once per worker). */
  say: (line: string) => void
  /** Sees every event of every worker as it arrives (test/helpers/zones/ keeps them all). */
  event?: (w: Worker, e: NodeEvent) => void
}

/** The launcher the workers run (bin/zeromesh.js), from the sources or from dist/. */
export const binPath = (): string =>
  fileURLToPath(new URL(import.meta.url.endsWith('.ts') ? '../../bin/zeromesh.js' : '../../../bin/zeromesh.js', import.meta.url))

/** The workers' default `--disk-every` (node/config.ts). */
const DEFAULT_DISK_EVERY: number = START_OPTIONS.diskEvery.schema.parse(undefined)

/**
 * The workers' `--disk-every`: the largest divisor of the run's steps up to the default, so
 * the disk tier holds the final step, which `up` samples from when the run ends.
 */
export function upDiskEvery(steps: number): number {
  for (let d = Math.min(DEFAULT_DISK_EVERY, steps); d > 1; d--) if (steps % d === 0) return d
  return 1
}

/** The `zeromesh start` arguments of worker `name`. */
function workerArgs(p: WorkerPlan, name: string, i: number, bootstrap: string | undefined): string[] {
  return [
    binPath(),
    'start',
    '--run',
    p.run,
    '--secret-file',
    p.secret,
    '--listen',
    '/ip4/127.0.0.1/tcp/0',
    '--data-dir',
    join(p.dir, name),
    '--zone',
    `z${i % 2}`,
    '--host',
    name,
    '--expect',
    String(p.total),
    '--heartbeat-ms',
    '300',
    '--train',
    '--world-size',
    String(p.nodes),
    '--steps',
    String(p.steps),
    '--device',
    p.device,
    '--model',
    p.model,
    '--seed',
    String(p.seed),
    '--batch',
    String(p.batch),
    '--seq',
    String(p.seq),
    '--exit-when-done',
    '--events',
    'jsonl',
    ...(p.zeropp ? ['--zeropp'] : []),
    ...(p.optimizer === undefined || p.optimizer === 'adamw' ? [] : ['--optimizer', p.optimizer]),
    ...(p.zo === undefined ? [] : ['--zo', '--zo-eps', String(p.zo.eps)]),
    ...(p.offload === undefined ? [] : ['--offload', 'cpu', ...(p.offload.threads === undefined ? [] : ['--offload-threads', String(p.offload.threads)])]),
    ...(p.deviceMemory === undefined ? [] : ['--device-memory', String(p.deviceMemory)]),
    ...(p.lr === undefined ? [] : ['--lr', String(p.lr)]),
    ...(p.outer === undefined ? [] : ['--outer-every', String(p.outer.every), ...(p.outer.streaming ? ['--streaming'] : [])]),
    ...(p.snapshot === undefined ? [] : ['--snapshot', p.snapshot]),
    ...(p.snapshotEvery === undefined ? [] : ['--snapshot-every', String(p.snapshotEvery)]),
    ...(p.data === undefined ? [] : ['--data', p.data]),
    ...(p.initFrom === undefined ? [] : ['--init-from', p.initFrom]),
    ...(p.tokenizer === undefined ? [] : ['--tokenizer', p.tokenizer]),
    ...(upDiskEvery(p.steps) === DEFAULT_DISK_EVERY ? [] : ['--disk-every', String(upDiskEvery(p.steps))]),
    ...(p.dashboard === true ? ['--http', '127.0.0.1:0'] : []),
    ...(bootstrap === undefined ? [] : ['--bootstrap', bootstrap])
  ]
}

/** Starts worker `i` (bootstrapping from `bootstrap`, the first worker's address). */
export function spawnWorker(p: WorkerPlan, sinks: WorkerSinks, i: number, bootstrap: string | undefined): Worker {
  // With CUDA, workers take the host's GPUs round-robin (one process per GPU when there are
  // as many GPUs as workers; the spare shares one).
  const gpu: Record<string, string> = p.device === 'cuda' && p.gpuCount > 0 ? { ZEROMESH_CUDA_DEVICE: String(i % p.gpuCount) } : {}
  const name = `w${i}`
  return spawnWorkerProcess({ name, dir: p.dir, command: process.execPath, args: workerArgs(p, name, i, bootstrap), env: gpu }, sinks)
}

/** How to start one worker process whose stdout is `zeromesh start --events jsonl`. */
export interface WorkerCommand {
  name: string
  /** The run directory: its data dir is `<dir>/<name>`, its structured logs `<dir>/<name>.log`. */
  dir: string
  /** The program and its arguments (e.g. `ip netns exec <ns> node bin/zeromesh.js start ...`). */
  command: string
  args: string[]
  /** Added to this process's environment. */
  env?: Record<string, string>
}

/** Starts one worker process and records its events (`spawnWorker`, and test/helpers/zones/ for workers in network namespaces). */
export function spawnWorkerProcess(c: WorkerCommand, sinks: WorkerSinks): Worker {
  // A worker leaves when it is re-parented (ZEROMESH_EXIT_WITH_PARENT): when `up` dies,
  // however it dies, no worker is orphaned.
  // Structured logs (stderr) go to a file: a log write must never block on a pipe whose
  // reader is gone.
  const errFd = openSync(join(c.dir, `${c.name}.log`), 'a')
  const proc = spawn(c.command, c.args, {
    stdio: ['ignore', 'pipe', errFd],
    env: { ...process.env, ZEROMESH_EXIT_WITH_PARENT: '1', ...c.env }
  })
  closeSync(errFd)
  const w: Worker = {
    name: c.name,
    dataDir: join(c.dir, c.name),
    proc,
    started: undefined,
    recoveries: [],
    memory: undefined,
    done: undefined,
    failed: undefined,
    tail: [],
    exit: new Promise(resolve =>
      proc.once('exit', code => {
        w.exited = true
        resolve(code)
      })
    ),
    exited: false,
    killed: false,
    status: undefined,
    afterKill: []
  }
  readLines(proc, eventLines(w, sinks, join(c.dir, 'workers.log')))
  return w
}

/**
 * Handles the stdout lines of worker `w`: each is parsed as a node event and recorded; a line
 * that is not one goes to the log, and the first of them is also said once (never thrown).
 */
export function eventLines(w: Worker, sinks: WorkerSinks, logPath: string): (line: string) => void {
  let malformed = false
  return line => {
    const parsed = parseNodeEvent(line)
    if (parsed.ok) {
      onEvent(w, parsed.event, sinks)
      return
    }
    sinks.log.write(`${w.name}: not an event (${parsed.error}): ${line.slice(0, 200)}\n`)
    if (!malformed) sinks.say(`${w.name}: ignored an output line that is not a node event (${parsed.error}); more in ${logPath}`)
    malformed = true
  }
}

/** Records one event of `w`: kept where `up` reads it, stamped after the kill, rendered into the log. */
function onEvent(w: Worker, e: NodeEvent, sinks: WorkerSinks): void {
  if (e.type === 'started') w.started = e
  else if (e.type === 'recovery') w.recoveries.push(e)
  else if (e.type === 'memory') w.memory = e
  else if (e.type === 'done') w.done = e
  else if (e.type === 'failed') w.failed = e
  sinks.event?.(w, e)
  if (sinks.stamping()) {
    // Stamped on arrival, for the time from the kill to the next commit (a pipe delivers
    // within milliseconds; the status polls are `pollMs` apart).
    if (e.type === 'view') w.afterKill.push({ ms: sinks.clock.monotonic(), view: e.members })
    else if (e.type === 'step') w.afterKill.push({ ms: sinks.clock.monotonic(), step: e.step })
  }
  for (const line of renderNodeEvent(e)) {
    w.tail.push(line)
    if (w.tail.length > TAIL_LINES) w.tail.shift()
    sinks.log.write(`${w.name}: ${line}\n`)
  }
}

/** Calls `onLine` for every line of the process's stdout; a line past the cap is cut to it. */
function readLines(proc: ChildProcess, onLine: (line: string) => void): void {
  let buf = ''
  proc.stdout!.on('data', (d: Buffer) => {
    buf += d.toString()
    let nl
    while ((nl = buf.indexOf('\n')) >= 0) {
      onLine(buf.slice(0, nl))
      buf = buf.slice(nl + 1)
    }
    // No newline within the cap: hand it on (it is refused as too long) rather than grow.
    if (buf.length > NODE_EVENT_LIMITS.maxLineBytes) {
      onLine(buf)
      buf = ''
    }
  })
}

/** The first worker's TCP address on `ip` (default loopback), once it has started (its `started` event). */
export async function waitForAddress(w: Worker, clock: RealClock, ms: number, ip = '127.0.0.1'): Promise<string> {
  const until = clock.monotonic() + ms
  const prefix = `/ip4/${ip}/tcp/`
  for (;;) {
    const addr = w.started?.multiaddrs.find(a => a.startsWith(prefix) && /^\d+\/p2p\//.test(a.slice(prefix.length)))
    if (addr !== undefined) return addr
    if (w.exited) throw new UpError(`worker ${w.name} exited during start-up:\n${w.tail.join('\n')}`)
    if (clock.monotonic() > until) throw new UpError(`worker ${w.name} did not start within ${ms} ms`)
    await clock.sleep(20)
  }
}

/** SIGTERM to every worker, SIGKILL to those still there after 5 s; closes the log. */
export async function stopAll(workers: Worker[], clock: RealClock, log: Pick<WriteStream, 'end'>): Promise<void> {
  for (const w of workers) if (!w.exited) w.proc.kill('SIGTERM')
  const deadline = clock.sleep(5000).then(() => {
    for (const w of workers) if (!w.exited) w.proc.kill('SIGKILL')
  })
  await Promise.race([Promise.all(workers.map(w => w.exit)), deadline])
  log.end()
}

/** NVIDIA GPUs visible on this host (device nodes /dev/nvidia0, 1, ...), without loading CUDA here. */
export function countGpus(): number {
  const visible = process.env['CUDA_VISIBLE_DEVICES']
  if (visible !== undefined && visible.trim() !== '') return visible.split(',').length
  try {
    return readdirSync('/dev').filter(n => /^nvidia\d+$/.test(n)).length
  } catch {
    return 0
  }
}
