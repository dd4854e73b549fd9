import { spawn, type ChildProcess } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { closeSync, createWriteStream, mkdtempSync, openSync, rmSync, writeFileSync, type WriteStream } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { RealClock, ZeromeshError } from '../core/index.ts'
import { fetchStatus } from './control.ts'
import type { NodeStatus } from './start.ts'

/**
 * `zeromesh up`: a local mesh of worker processes on loopback (the ranks plus spares) that
 * trains the default model on the default data, with a live progress line. `--kill-at STEP`
 * SIGKILLs a training worker once the run reaches that step, to show what a node loss does.
 */
export interface UpOptions {
  nodes: number
  spares: number
  device: 'cpu' | 'cuda'
  steps: number
  killAt: number | undefined
  model: string
  data: string | undefined
  zeropp: boolean
  seed: number
  batch: number
  seq: number
  /** Give up after this long (ms). */
  timeoutMs: number
  /** Keep the run directory (worker logs) afterwards. */
  keep: boolean
  out: (line: string) => void
  /** A line that replaces itself (a TTY progress line); defaults to `out` every few seconds. */
  progress?: (line: string) => void
}

export class UpError extends ZeromeshError {
  static override name = 'UpError'
}

interface Worker {
  name: string
  dataDir: string
  proc: ChildProcess
  lines: string[]
  exit: Promise<number | null>
  exited: boolean
  killed: boolean
  status: NodeStatus | undefined
}

const binPath = (): string => fileURLToPath(new URL(import.meta.url.endsWith('.ts') ? '../bin/zeromesh.js' : '../../bin/zeromesh.js', import.meta.url))

export async function up (o: UpOptions): Promise<number> {
  const clock = new RealClock()
  const dir = mkdtempSync(join(tmpdir(), 'zeromesh-up-'))
  const secret = join(dir, 'run.secret')
  writeFileSync(secret, randomBytes(32).toString('hex') + '\n', { mode: 0o600 })
  const run = `up-${process.pid}`
  const total = o.nodes + o.spares
  const log: WriteStream = createWriteStream(join(dir, 'workers.log'))
  const workers: Worker[] = []
  o.out(`zeromesh up: ${o.nodes} training ranks + ${o.spares} spare(s) on loopback, ${o.model} model, ${o.device}, ${o.steps} steps${o.zeropp ? ', ZeRO++' : ', flat ZeRO-3'} (logs in ${dir})`)

  const spawnWorker = (i: number, bootstrap: string | undefined): Worker => {
    const name = `w${i}`
    const dataDir = join(dir, name)
    const args = [
      binPath(), 'start', '--run', run, '--secret-file', secret, '--listen', '/ip4/127.0.0.1/tcp/0',
      '--data-dir', dataDir, '--zone', `z${i % 2}`, '--host', name, '--expect', String(total), '--heartbeat-ms', '300',
      '--train', '--world-size', String(o.nodes), '--steps', String(o.steps), '--device', o.device, '--model', o.model,
      '--seed', String(o.seed), '--batch', String(o.batch), '--seq', String(o.seq), '--exit-when-done',
      ...(o.zeropp ? ['--zeropp'] : []), ...(o.data === undefined ? [] : ['--data', o.data]),
      ...(bootstrap === undefined ? [] : ['--bootstrap', bootstrap])
    ]
    // A worker leaves when it is re-parented (ZEROMESH_EXIT_WITH_PARENT): when `up` dies,
    // however it dies, no worker is orphaned.
    // Structured logs (stderr) go to a file: a log write must never block on a pipe whose
    // reader is gone.
    const errFd = openSync(join(dir, `${name}.log`), 'a')
    const proc = spawn(process.execPath, args, { stdio: ['ignore', 'pipe', errFd], env: { ...process.env, ZEROMESH_EXIT_WITH_PARENT: '1' } })
    closeSync(errFd)
    const w: Worker = { name, dataDir, proc, lines: [], exit: new Promise(resolve => proc.once('exit', code => { w.exited = true; resolve(code) })), exited: false, killed: false, status: undefined }
    let buf = ''
    proc.stdout!.on('data', (d: Buffer) => {
      buf += d.toString()
      let nl
      while ((nl = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, nl)
        buf = buf.slice(nl + 1)
        w.lines.push(line)
        log.write(`${name}: ${line}\n`)
      }
    })
    workers.push(w)
    return w
  }

  const waitFor = async (w: Worker, re: RegExp, ms: number): Promise<string> => {
    const until = clock.monotonic() + ms
    for (;;) {
      const hit = w.lines.find(l => re.test(l))
      if (hit !== undefined) return hit
      if (w.exited) throw new UpError(`worker ${w.name} exited during start-up:\n${w.lines.slice(-5).join('\n')}`)
      if (clock.monotonic() > until) throw new UpError(`worker ${w.name} did not start within ${ms} ms`)
      await clock.sleep(20)
    }
  }

  const stopAll = async (): Promise<void> => {
    for (const w of workers) if (!w.exited) w.proc.kill('SIGTERM')
    const deadline = clock.sleep(5000).then(() => { for (const w of workers) if (!w.exited) w.proc.kill('SIGKILL') })
    await Promise.race([Promise.all(workers.map(w => w.exit)), deadline])
    log.end()
  }

  const onSignal = (): void => { void stopAll().then(() => process.exit(130)) }
  process.once('SIGINT', onSignal)
  process.once('SIGTERM', onSignal)
  let ok = false
  try {
    const first = spawnWorker(0, undefined)
    const addr = (await waitFor(first, /^ {2}\/ip4\/127\.0\.0\.1\/tcp\/\d+\/p2p\//, 30_000)).trim()
    for (let i = 1; i < total; i++) spawnWorker(i, addr)
    const started = clock.monotonic()
    const say = o.progress ?? ((): ((l: string) => void) => {
      let last = -Infinity
      return l => { if (clock.monotonic() - last >= 3000) { last = clock.monotonic(); o.out(l) } }
    })()
    let lastLine = ''
    const reported = new Set<string>()
    for (;;) {
      await clock.sleep(300)
      await Promise.all(workers.filter(w => !w.exited).map(async w => {
        try {
          w.status = await fetchStatus(w.dataDir, 1000) as NodeStatus
        } catch {
          // Not up yet, or gone: keep the last status.
        }
      }))
      const live = workers.filter(w => !w.killed)
      const ranks = live.filter(w => w.status?.training?.role === 'rank' || w.status?.training?.role === 'done')
      const spares = live.filter(w => w.status?.training?.role === 'spare').length
      const step = ranks.length === 0 ? 0 : Math.min(...ranks.map(w => w.status!.training!.step))
      const lead = ranks.find(w => w.status?.training?.rank === 0)?.status
      const t = lead?.training
      const epoch = Math.max(0, ...workers.map(w => w.status?.membership.epoch ?? 0))
      const line = `step ${step}/${o.steps}  loss ${t?.loss?.toFixed(4) ?? '-'}  ${t?.tokensPerS === undefined ? '-' : Math.round(t.tokensPerS)} tokens/s  view ${epoch} (${ranks.length} ranks, ${spares} spare)`
      if (line !== lastLine) {
        say(line)
        lastLine = line
      }
      for (const w of workers) {
        for (const r of w.status?.training?.recoveries ?? []) {
          const key = `${r.mode}/${r.lost.join(',')}/${r.fromStep}`
          if (reported.has(key)) continue
          reported.add(key)
          o.out(r.mode === 'replace'
            ? `recovered: a spare took rank ${r.lost.join(', ')} from the erasure-coded snapshots; the run rolled back to step ${r.fromStep} and goes on (${r.ms} ms)`
            : `recovered: no spare, so the ${w.status!.training!.worldSize} survivors rebuilt rank ${r.lost.join(', ')}'s shard from the snapshots and re-partitioned; back to step ${r.fromStep} (${r.ms} ms)`)
        }
      }
      if (o.killAt !== undefined && step >= o.killAt && !workers.some(w => w.killed)) {
        const victim = ranks.find(w => w.status?.training?.rank === Math.min(1, o.nodes - 1))
        if (victim !== undefined) {
          victim.killed = true
          victim.proc.kill('SIGKILL')
          o.out(`killed ${victim.name} (rank ${victim.status?.training?.rank}) with SIGKILL at step ${step}`)
        }
      }
      const rankWorkers = workers.filter(w => w.status?.training?.role !== 'spare' && !w.killed)
      if (rankWorkers.length > 0 && rankWorkers.every(w => w.exited)) break
      if (workers.filter(w => !w.killed).some(w => w.exited && w.proc.exitCode !== 0)) break
      if (clock.monotonic() - started > o.timeoutMs) throw new UpError(`the run did not finish within ${Math.round(o.timeoutMs / 1000)} s (logs in ${dir})`)
    }
    const failed = workers.filter(w => !w.killed && w.exited && w.proc.exitCode !== 0)
    if (failed.length > 0) {
      for (const w of failed) o.out(`${w.name} failed: ${w.lines.filter(l => /failed/.test(l)).at(-1) ?? `exit ${w.proc.exitCode}`}`)
      o.out(`logs: ${join(dir, 'workers.log')} (progress) and ${join(dir, 'w*.log')} (structured logs)`)
      return 1
    }
    const done = workers.map(w => w.lines.find(l => l.startsWith('training done:'))).filter(x => x !== undefined)
    o.out(done[0] ?? 'training done')
    const evalLoss = workers.map(w => w.status?.training?.evalLoss).find(x => x !== undefined)
    if (evalLoss !== undefined) o.out(`held-out loss of the final weights: ${evalLoss.toFixed(4)}`)
    o.out(`${Math.round((clock.monotonic() - started) / 100) / 10} s for ${o.steps} steps on ${o.nodes} ranks`)
    ok = true
    return 0
  } finally {
    process.removeListener('SIGINT', onSignal)
    process.removeListener('SIGTERM', onSignal)
    await stopAll()
    // Logs stay when something went wrong (the messages above name the file).
    if (ok && !o.keep) rmSync(dir, { recursive: true, force: true })
  }
}
