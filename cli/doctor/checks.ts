import { mkdirSync, openSync, fsyncSync, writeSync, closeSync, renameSync, unlinkSync, statfsSync } from 'node:fs'
import { createServer, connect } from 'node:net'
import { freemem, totalmem } from 'node:os'
import { join } from 'node:path'
import { RealClock } from '../../core/index.ts'
import { CpuBackend, probeCuda } from '../../gpu/index.ts'
import type { Connectivity } from '../../mesh/index.ts'
import { fetchStatus, type NodeStatus } from '../../node/index.ts'
import { RELAY_COST, reachLine } from '../status-format.ts'

/**
 * `zeromesh doctor`: checks a host before it joins a run, one line per check and a verdict.
 * A check is `ok`, `warn` (works, with a caveat) or `fail` (the node would not work here).
 */
export type CheckLevel = 'ok' | 'warn' | 'fail'
export interface CheckResult {
  name: string
  level: CheckLevel
  detail: string
}

export interface DoctorOptions {
  /** The backend the node will use; `cuda` turns an unavailable GPU into a failure. */
  device: 'cpu' | 'cuda'
  dataDir: string
  /** Listen multiaddr whose TCP port must be free (port 0: any). */
  listen?: string
  bootstrap: string[]
  /** Memory the node should be able to give to snapshot fragments (bytes). */
  snapshotBytes: number
  /** Per-connection timeout for reachability checks (ms). */
  timeoutMs: number
  /** The data dir of a running node: its reachability, relays and paths are checked too. */
  node?: string
}

const MIN_NODE_MAJOR = 22

export async function runDoctor(opts: DoctorOptions, onResult: (r: CheckResult) => void = () => {}): Promise<CheckResult[]> {
  const results: CheckResult[] = []
  const add = (r: CheckResult): void => {
    results.push(r)
    onResult(r)
  }

  const major = Number(process.versions.node.split('.')[0])
  add({
    name: 'node',
    level: major >= MIN_NODE_MAJOR ? 'ok' : 'fail',
    detail: `Node ${process.versions.node}${major >= MIN_NODE_MAJOR ? '' : ` (need >= ${MIN_NODE_MAJOR}; run through npx so the node@24 package is used)`}`
  })

  add(cpuCheck())

  const cuda = await probeCuda()
  if (cuda.ok) {
    add({
      name: 'gpu',
      level: 'ok',
      detail: `${cuda.device}, compute ${cuda.computeCapability}, ${gib(cuda.memoryBytes)} GiB; driver ${cuda.driverVersion}, CUDA ${cuda.cudaVersion}, NVRTC ${cuda.nvrtcVersion}, cuBLAS ${cuda.cublasVersion}`
    })
  } else {
    add({
      name: 'gpu',
      level: opts.device === 'cuda' ? 'fail' : 'warn',
      detail: `CUDA unavailable: ${cuda.reason}${opts.device === 'cuda' ? '' : ' (the CPU backend works)'}`
    })
  }

  const free = freemem()
  add({
    name: 'memory',
    level: free >= opts.snapshotBytes ? 'ok' : 'warn',
    detail: `${gib(free)} GiB free of ${gib(totalmem())} GiB; snapshots of peers need about ${gib(opts.snapshotBytes)} GiB`
  })

  add(dataDirCheck(opts.dataDir))
  if (opts.listen !== undefined) add(await portCheck(opts.listen))
  for (const b of opts.bootstrap) add(await reachCheck(b, opts.timeoutMs))
  if (opts.node !== undefined) for (const r of await nodeChecks(opts.node, opts.timeoutMs)) add(r)
  add({ name: 'clock', level: 'warn', detail: 'skew against peers is not measured before joining; `zeromesh status` shows heartbeat ages once joined' })
  return results
}

/** One line: the verdict over all checks. */
export function verdict(results: CheckResult[]): { ok: boolean; line: string } {
  const failed = results.filter(r => r.level === 'fail')
  const warned = results.filter(r => r.level === 'warn')
  if (failed.length > 0) return { ok: false, line: `not ready: ${failed.map(r => r.name).join(', ')} failed` }
  const cpuOnly = results.some(r => r.name === 'gpu' && r.level !== 'ok')
  return { ok: true, line: `ready${cpuOnly ? ' (CPU backend only)' : ''}${warned.length > 0 ? `; ${warned.length} warning(s)` : ''}` }
}

export function formatCheck(r: CheckResult): string {
  return `${r.level.padEnd(4)}  ${r.name.padEnd(9)} ${r.detail}`
}

function gib(bytes: number): string {
  return (bytes / 2 ** 30).toFixed(1)
}

function cpuCheck(): CheckResult {
  try {
    const be = new CpuBackend()
    const a = be.alloc('f32', [2, 2])
    const b = be.alloc('f32', [2, 2])
    const c = be.alloc('f32', [2, 2])
    be.write(a, Float32Array.of(1, 2, 3, 4))
    be.write(b, Float32Array.of(5, 6, 7, 8))
    be.gemm({ a, b, c, m: 2, n: 2, k: 2 })
    const got = Array.from(be.read(c))
    be.dispose()
    const want = [19, 22, 43, 50]
    const ok = got.every((v, i) => v === want[i])
    return {
      name: 'cpu',
      level: ok ? 'ok' : 'fail',
      detail: ok ? 'CPU backend computes a GEMM correctly' : `CPU backend GEMM gave ${got.join(',')}, want ${want.join(',')}`
    }
  } catch (err) {
    return { name: 'cpu', level: 'fail', detail: `CPU backend failed: ${(err as Error).message}` }
  }
}

function dataDirCheck(dir: string): CheckResult {
  try {
    mkdirSync(dir, { recursive: true, mode: 0o700 })
    const tmp = join(dir, `.doctor-${process.pid}.tmp`)
    const fd = openSync(tmp, 'w', 0o600)
    writeSync(fd, 'zeromesh doctor\n')
    fsyncSync(fd)
    closeSync(fd)
    renameSync(tmp, `${tmp}.done`)
    unlinkSync(`${tmp}.done`)
    const fs = statfsSync(dir)
    return { name: 'data-dir', level: 'ok', detail: `${dir} is writable (write, fsync, rename); ${gib(fs.bavail * fs.bsize)} GiB free` }
  } catch (err) {
    return { name: 'data-dir', level: 'fail', detail: `${dir} is not usable: ${(err as Error).message}` }
  }
}

/** Parses `/ip4|ip6|dns4|dns6/<host>/tcp/<port>[/...]`. */
function hostPort(addr: string): { host: string; port: number } | undefined {
  const m = /^\/(ip4|ip6|dns4|dns6|dns)\/([^/]+)\/tcp\/(\d{1,5})(\/|$)/.exec(addr)
  if (m === null) return undefined
  const port = Number(m[3])
  return port <= 65535 ? { host: m[2]!, port } : undefined
}

async function portCheck(listen: string): Promise<CheckResult> {
  const hp = hostPort(listen)
  if (hp === undefined) return { name: 'port', level: 'fail', detail: `cannot parse listen address ${listen} (want /ip4/<ip>/tcp/<port>)` }
  if (hp.port === 0) return { name: 'port', level: 'ok', detail: `${listen}: any free port` }
  return await new Promise(resolve => {
    const srv = createServer()
    srv.once('error', err =>
      resolve({ name: 'port', level: 'fail', detail: `cannot listen on ${hp.host}:${hp.port}: ${(err as NodeJS.ErrnoException).code ?? err.message}` })
    )
    srv.listen(hp.port, hp.host, () => srv.close(() => resolve({ name: 'port', level: 'ok', detail: `${hp.host}:${hp.port} is free` })))
  })
}

async function reachCheck(addr: string, timeoutMs: number): Promise<CheckResult> {
  const hp = hostPort(addr)
  if (hp === undefined) return { name: 'bootstrap', level: 'fail', detail: `cannot parse ${addr} (want /ip4/<ip>/tcp/<port>/p2p/<id>)` }
  const t0 = performance.now()
  return await new Promise(resolve => {
    const sock = connect({ host: hp.host, port: hp.port })
    const clock = new RealClock()
    const done = (r: CheckResult): void => {
      clock.clearTimeout(timer)
      sock.destroy()
      resolve(r)
    }
    const timer = clock.setTimeout(
      () => done({ name: 'bootstrap', level: 'fail', detail: `${hp.host}:${hp.port} did not answer within ${timeoutMs} ms` }),
      timeoutMs
    )
    sock.once('connect', () =>
      done({ name: 'bootstrap', level: 'ok', detail: `${hp.host}:${hp.port} reachable (TCP connect in ${(performance.now() - t0).toFixed(1)} ms)` })
    )
    sock.once('error', err =>
      done({ name: 'bootstrap', level: 'fail', detail: `${hp.host}:${hp.port} unreachable: ${(err as NodeJS.ErrnoException).code ?? err.message}` })
    )
  })
}

/** The network checks of a running node, from its status (its control socket in `dataDir`). */
async function nodeChecks(dataDir: string, timeoutMs: number): Promise<CheckResult[]> {
  let c: Connectivity | undefined
  try {
    c = ((await fetchStatus(dataDir, timeoutMs)) as NodeStatus).network
  } catch (err) {
    return [{ name: 'node', level: 'fail', detail: (err as Error).message }]
  }
  if (c === undefined) return [{ name: 'node', level: 'warn', detail: 'the node reports no network state (an older version?)' }]
  return networkChecks(c)
}

/** Reachability, relays and paths as checks: what a user behind NAT needs to know. */
export function networkChecks(c: Connectivity): CheckResult[] {
  const relayedOnly = c.reach === 'nat' && c.punches.ok === 0 && c.punches.failed > 0
  const out: CheckResult[] = [
    { name: 'reach', level: c.reach === 'unknown' || relayedOnly ? 'warn' : 'ok', detail: reachLine(c).replace(/^reachability: /, '') }
  ]
  if (c.reach === 'nat')
    out.push({
      name: 'relays',
      level: c.relays.length > 0 ? 'ok' : 'warn',
      detail:
        c.relays.length > 0
          ? `holds a slot on ${c.relays.join(', ')}`
          : 'holds no relay slot: peers that cannot dial it cannot reach it (a run needs one public member)'
    })
  else if (c.reach === 'public') out.push({ name: 'relays', level: 'ok', detail: `serves ${c.relayServing} reservation(s) to members behind NAT` })
  const relayed = c.peers.filter(p => p.link === 'relayed')
  const slow = c.peers.filter(p => p.bulk === 'libp2p')
  out.push({
    name: 'peers',
    level: slow.length > 0 ? 'warn' : 'ok',
    detail: `${c.peers.length - relayed.length} direct, ${relayed.length} relayed${relayed.length > 0 ? ` (${relayed.map(p => `${p.id}: bulk ${p.bulk}`).join(', ')})` : ''}${slow.length > 0 ? `; bulk bytes to ${slow.map(p => p.id).join(', ')} ride libp2p: ${RELAY_COST}` : ''}`
  })
  return out
}
