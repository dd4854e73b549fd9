import { randomBytes } from 'node:crypto'
import { createWriteStream, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { InvalidArgumentError, RealClock } from '../../../core/index.ts'
import { START_OPTIONS, type NodeEvent } from '../../../node/index.ts'
import { flagOf } from '../../../cli/flags.ts'
import { binPath, spawnWorkerProcess, stopAll, waitForAddress, type Worker } from '../../../cli/up/workers.ts'
import { ZonesError } from './errors.ts'
import { ZONES_LIMITS as L } from './limits.ts'
import type { ZoneHost, Zones } from './topology.ts'

/**
 * Real `zeromesh start --events jsonl` processes on the hosts of a topology (one or more per
 * host), started as `zeromesh up` starts its workers (cli/up/workers.ts: the same process
 * handling and event parsing, node/events.ts), but each inside its host's namespace, with its
 * zone and host labels, listening on its host's address. The harness owns the flags that place
 * a node (run, secret, listen, data dir, zone, host, expect, heartbeat, events, bootstrap); every
 * other flag comes from the caller unchanged, so new training options need no change here.
 */

/** An event of one node, stamped on arrival (ms since the nodes were started, monotonic). */
export interface StampedEvent {
  ms: number
  node: string
  event: NodeEvent
}

export interface ZoneNodesInit {
  /** Where the nodes run: a zone topology (topology.ts) or a NAT one (nat.ts); the first host bootstraps the rest. */
  zones: Pick<Zones, 'hosts' | 'exec'>
  /** Flags after the harness's own: `--train`, the model, steps, world size, ... ({@link trainFlags}). */
  args: readonly string[]
  /** Nodes per host (default 1). */
  perHost?: number
  /** `--heartbeat-ms` (default 300, as `zeromesh up`). */
  heartbeatMs?: number
  /** `--expect` (default: every node, so the first view holds them all). */
  expect?: number
  /** Where data dirs, the secret and the logs go (default: a new temporary directory). */
  dir?: string
  /** Progress lines (a malformed event line, the first node's address). */
  say?: (line: string) => void
  /** Sees every event as it arrives, after it is recorded (e.g. to read the uplink counters at a step). */
  onEvent?: (e: StampedEvent) => void
}

/** One node process. */
export interface ZoneNode {
  /** `<host>` with one node per host, else `<host>.<k>`. */
  name: string
  host: ZoneHost
  worker: Worker
  /** This node's events in arrival order. */
  events: StampedEvent[]
}

export interface ZoneNodes {
  readonly dir: string
  readonly nodes: readonly ZoneNode[]
  /** Every node's events in arrival order. */
  readonly events: readonly StampedEvent[]
  /** Milliseconds since the nodes were started (the clock of `StampedEvent.ms`). */
  now(): number
  /** The nodes on the hosts of `zone`. */
  inZone(zone: string): ZoneNode[]
  /** The last `lines` lines of a node's stderr (its structured logs). */
  stderr(node: ZoneNode, lines?: number): string[]
  /**
   * Resolves with `cond()`'s first value other than undefined, checked every 100 ms and on
   * every event; after `ms` rejects with a {@link ZonesError} naming `what` and each node's
   * last lines.
   */
  until<T>(what: string, ms: number, cond: () => T | undefined): Promise<T>
  /** Sends `signal` (default SIGKILL) to one node. */
  kill(node: ZoneNode, signal?: NodeJS.Signals): void
  /** Resolves when every node has exited (their exit codes, by name). */
  exited(): Promise<Map<string, number | null>>
  /** SIGTERM to every node, SIGKILL after 5 s; removes the directory unless `keep`. */
  stop(opts?: { keep?: boolean }): Promise<void>
}

/** Flags the harness sets itself; passing one in `args` is an error. */
const OWNED = ['run', 'secretFile', 'listen', 'dataDir', 'zone', 'host', 'expect', 'heartbeatMs', 'bootstrap'].map(flagOf)

/** Whether `zeromesh start` has the flag (`--outer-every` or `outer-every`), from node/config.ts START_OPTIONS. */
export function isStartFlag(flag: string): boolean {
  const name = flag.replace(/^--/, '')
  return Object.keys(START_OPTIONS).some(k => flagOf(k) === name)
}

/** Throws when `args` names a flag `start` does not have, or one the harness sets. */
function checkArgs(args: readonly string[]): void {
  for (const a of args) {
    const m = /^--([a-z0-9-]+)(?:=|$)/.exec(a)
    if (m === null) continue
    if (OWNED.includes(m[1]!) || m[1] === 'events') throw new InvalidArgumentError(`--${m[1]} is set by the zone harness; leave it out of args`)
    if (!isStartFlag(m[1]!)) throw new InvalidArgumentError(`zeromesh start has no flag --${m[1]} (node/config.ts START_OPTIONS)`)
  }
}

/** What a training run needs besides the harness's flags. */
export interface TrainFlags {
  worldSize: number
  steps: number
  model?: string
  batch?: number
  seq?: number
  seed?: number
  /** `k+m` or `off` (default: the node's, 2+1). */
  snapshot?: string
  zeropp?: boolean
  /** Any other `zeromesh start` flags, passed on unchanged (e.g. `['--outer-every', '20']`). */
  extra?: readonly string[]
}

/** The `zeromesh start` flags of a training run that ends when it is done (`--exit-when-done`). */
export function trainFlags(t: TrainFlags): string[] {
  const opt = (flag: string, v: string | number | undefined): string[] => (v === undefined ? [] : [flag, String(v)])
  return [
    '--train',
    '--exit-when-done',
    ...opt('--world-size', t.worldSize),
    ...opt('--steps', t.steps),
    ...opt('--model', t.model),
    ...opt('--batch', t.batch),
    ...opt('--seq', t.seq),
    ...opt('--seed', t.seed),
    ...opt('--snapshot', t.snapshot),
    ...(t.zeropp === true ? ['--zeropp'] : []),
    ...(t.extra ?? [])
  ]
}

/** The placing flags of one node. */
function ownArgs(o: {
  run: string
  secret: string
  dir: string
  name: string
  host: ZoneHost
  expect: number
  heartbeatMs: number
  bootstrap?: string
}): string[] {
  return [
    'start',
    '--run',
    o.run,
    '--secret-file',
    o.secret,
    '--listen',
    `/ip4/${o.host.ip}/tcp/0`,
    '--data-dir',
    join(o.dir, o.name),
    '--zone',
    o.host.zone,
    '--host',
    o.host.name,
    '--expect',
    String(o.expect),
    '--heartbeat-ms',
    String(o.heartbeatMs),
    '--events',
    'jsonl',
    ...(o.bootstrap === undefined ? [] : ['--bootstrap', o.bootstrap])
  ]
}

/**
 * Starts the nodes: the first host's first node, then (bootstrapping from its address) every
 * other. Resolves once every process is spawned and the first has started; a failure stops
 * what was started.
 */
export async function startZoneNodes(init: ZoneNodesInit): Promise<ZoneNodes> {
  const { zones } = init
  const perHost = init.perHost ?? 1
  if (!Number.isInteger(perHost) || perHost < 1 || perHost > L.maxNodesPerHost)
    throw new InvalidArgumentError(`perHost must be an integer in 1..${L.maxNodesPerHost}, got ${perHost}`)
  checkArgs(init.args)
  const clock = new RealClock()
  const dir = init.dir ?? mkdtempSync(join(tmpdir(), 'zeromesh-zones-'))
  mkdirSync(dir, { recursive: true })
  const secret = join(dir, 'run.secret')
  writeFileSync(secret, randomBytes(32).toString('hex') + '\n', { mode: 0o600 })
  const log = createWriteStream(join(dir, 'workers.log'))
  const t0 = clock.monotonic()
  const now = (): number => clock.monotonic() - t0
  const events: StampedEvent[] = []
  const byWorker = new Map<Worker, ZoneNode>()
  const wake = new Set<() => void>()
  const sinks = {
    clock,
    log,
    stamping: () => false,
    say: init.say ?? (() => {}),
    event: (w: Worker, e: NodeEvent) => {
      const node = byWorker.get(w)
      if (node === undefined) return
      const s = { ms: now(), node: node.name, event: e }
      node.events.push(s)
      events.push(s)
      init.onEvent?.(s)
      for (const f of wake) f()
    }
  }
  const placed = zones.hosts.flatMap(host => Array.from({ length: perHost }, (_, k) => ({ host, name: perHost === 1 ? host.name : `${host.name}.${k}` })))
  const common = { run: `zones-${process.pid}`, secret, dir, expect: init.expect ?? placed.length, heartbeatMs: init.heartbeatMs ?? 300 }
  const nodes: ZoneNode[] = []
  const spawnNode = (p: { host: ZoneHost; name: string }, bootstrap: string | undefined): ZoneNode => {
    const argv = [process.execPath, binPath(), ...ownArgs({ ...common, ...p, ...(bootstrap === undefined ? {} : { bootstrap }) }), ...init.args]
    const { command, args } = zones.exec(p.host, argv)
    // The worker record is created by spawnWorkerProcess; events that arrive before it is
    // mapped cannot exist (stdout is read on a later turn).
    const worker = spawnWorkerProcess({ name: p.name, dir, command, args }, sinks)
    const node: ZoneNode = { name: p.name, host: p.host, worker, events: [] }
    byWorker.set(worker, node)
    nodes.push(node)
    return node
  }
  const stop = async (opts: { keep?: boolean } = {}): Promise<void> => {
    await stopAll(
      nodes.map(n => n.worker),
      clock,
      log
    )
    if (opts.keep !== true) rmSync(dir, { recursive: true, force: true })
  }
  try {
    const first = spawnNode(placed[0]!, undefined)
    const addr = await waitForAddress(first.worker, clock, L.startTimeoutMs, first.host.ip)
    init.say?.(`first node ${first.name} at ${addr}`)
    for (const p of placed.slice(1)) spawnNode(p, addr)
  } catch (err) {
    await stop({ keep: true })
    throw new ZonesError(`the nodes did not start (logs in ${dir}): ${(err as Error).message}`, {}, { cause: err })
  }
  const stderr = (node: ZoneNode, lines = 20): string[] => {
    try {
      return readFileSync(join(dir, `${node.name}.log`), 'utf8')
        .trimEnd()
        .split('\n')
        .slice(-lines)
    } catch {
      return []
    }
  }
  return {
    dir,
    nodes,
    events,
    now,
    inZone: zone => nodes.filter(n => n.host.zone === zone),
    stderr,
    async until<T>(what: string, ms: number, cond: () => T | undefined): Promise<T> {
      const deadline = clock.monotonic() + ms
      for (;;) {
        const v = cond()
        if (v !== undefined) return v
        if (clock.monotonic() > deadline) {
          const state = nodes.map(n => {
            const exit = n.worker.exited ? `exited ${n.worker.proc.exitCode ?? n.worker.proc.signalCode}` : 'running'
            return `  ${n.name} (${exit}): ${n.worker.tail.slice(-2).join(' | ')}${stderr(n, 1).length > 0 ? ` | stderr: ${stderr(n, 1)[0]!.slice(0, 300)}` : ''}`
          })
          throw new ZonesError(`timed out after ${ms} ms waiting for ${what} (logs in ${dir}):\n${state.join('\n')}`)
        }
        await new Promise<void>(resolve => {
          const done = (): void => {
            wake.delete(done)
            clearTimeout(timer)
            resolve()
          }
          const timer = setTimeout(done, 100)
          wake.add(done)
        })
      }
    },
    kill(node, signal = 'SIGKILL') {
      if (signal === 'SIGKILL') node.worker.killed = true
      node.worker.proc.kill(signal)
    },
    async exited() {
      const codes = await Promise.all(nodes.map(n => n.worker.exit))
      return new Map(nodes.map((n, i) => [n.name, codes[i]!]))
    },
    stop
  }
}
