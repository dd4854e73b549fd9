import { spawn, type ChildProcess } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { closeSync, createWriteStream, mkdtempSync, openSync, readdirSync, rmSync, writeFileSync, type WriteStream } from 'node:fs'
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
  /** `--snapshot` for the workers: `k+m` or `off` (default: the workers' default, 2+1). */
  snapshot?: string
  /** `--snapshot-every` for the workers (default: theirs, every step). */
  snapshotEvery?: number
  /** How often the workers' status is polled, in ms (default 300). */
  pollMs?: number
  /** Called after every status poll (benchmarks: bench/train.ts). */
  onPoll?: (p: UpPoll) => void
  /** Called once the run commits its first step after the `--kill-at` recovery. */
  onKill?: (k: UpKillReport) => void
}

/** One status poll of the run. */
export interface UpPoll {
  /** ms since the workers were spawned (monotonic clock). */
  ms: number
  /** Steps committed by every live rank (the progress line's step). */
  step: number
  /** Rank 0's own figure for its last step (tokens of all ranks / that step's time). */
  tokensPerS: number | undefined
  ranks: number
  /** CPU ms used so far by every worker (the last status of each, killed ones included). */
  cpuMs: number
}

/** What followed the `--kill-at` SIGKILL, up to the first step committed after the recovery. */
export interface UpKillReport {
  /** The progress line's step when the rank was killed. */
  killedAtStep: number
  mode: 'replace' | 'shrink'
  /** The step the run rolled back to (the newest snapshot of every old rank). */
  fromStep: number
  /** The first step committed after the recovery (fromStep + 1). */
  nextStep: number
  /** ms from the SIGKILL to the first worker's line for a view without the killed worker. */
  viewChangeMs: number | undefined
  /** The trainer's recovery: agreeing on the recovery point and loading state from the snapshots. */
  recoveryMs: number
  /** ms from the SIGKILL to the commit of `nextStep`. */
  nextCommitMs: number
  /**
   * How the commit was seen: 'line' (a worker's `step N/M` stdout line, stamped on arrival:
   * within a few ms) or 'poll' (a status poll: up to `pollMs` late).
   */
  seenBy: 'line' | 'poll'
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
  /** Arrival time (monotonic ms) of this worker's `view` and `step` lines after the kill. */
  afterKill: Array<{ ms: number, view?: number, step?: number }>
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
  const pollMs = o.pollMs ?? 300
  let killedAt: number | undefined
  o.out(`zeromesh up: ${o.nodes} training ranks + ${o.spares} spare(s) on loopback, ${o.model} model, ${o.device}, ${o.steps} steps${o.zeropp ? ', ZeRO++' : ', flat ZeRO-3'} (logs in ${dir})`)

  const gpuCount = o.device === 'cuda' ? countGpus() : 0
  // k + m fragments need as many holders besides the owner: small meshes get a smaller code.
  const snapshot = o.snapshot ?? (total >= 4 ? undefined : total === 3 ? '1+1' : 'off')
  if (snapshot !== o.snapshot) o.out(`snapshots: ${snapshot} (${total} processes are too few for the default 2+1)`)
  if (o.device === 'cuda') o.out(gpuCount > 0 ? `${gpuCount} GPU(s): worker i uses GPU i mod ${gpuCount}` : 'no /dev/nvidia* devices found: every worker uses the default GPU')
  const spawnWorker = (i: number, bootstrap: string | undefined): Worker => {
    const name = `w${i}`
    const dataDir = join(dir, name)
    const args = [
      binPath(), 'start', '--run', run, '--secret-file', secret, '--listen', '/ip4/127.0.0.1/tcp/0',
      '--data-dir', dataDir, '--zone', `z${i % 2}`, '--host', name, '--expect', String(total), '--heartbeat-ms', '300',
      '--train', '--world-size', String(o.nodes), '--steps', String(o.steps), '--device', o.device, '--model', o.model,
      '--seed', String(o.seed), '--batch', String(o.batch), '--seq', String(o.seq), '--exit-when-done',
      ...(o.zeropp ? ['--zeropp'] : []), ...(snapshot === undefined ? [] : ['--snapshot', snapshot]),
      ...(o.snapshotEvery === undefined ? [] : ['--snapshot-every', String(o.snapshotEvery)]), ...(o.data === undefined ? [] : ['--data', o.data]),
      ...(bootstrap === undefined ? [] : ['--bootstrap', bootstrap])
    ]
    // A worker leaves when it is re-parented (ZEROMESH_EXIT_WITH_PARENT): when `up` dies,
    // however it dies, no worker is orphaned.
    // Structured logs (stderr) go to a file: a log write must never block on a pipe whose
    // reader is gone.
    const errFd = openSync(join(dir, `${name}.log`), 'a')
    // With CUDA, workers take the host's GPUs round-robin (one process per GPU when there are
    // as many GPUs as workers; the spare shares one).
    const gpu = o.device === 'cuda' && gpuCount > 0 ? { ZEROMESH_CUDA_DEVICE: String(i % gpuCount) } : {}
    const proc = spawn(process.execPath, args, { stdio: ['ignore', 'pipe', errFd], env: { ...process.env, ZEROMESH_EXIT_WITH_PARENT: '1', ...gpu } })
    closeSync(errFd)
    const w: Worker = { name, dataDir, proc, lines: [], exit: new Promise(resolve => proc.once('exit', code => { w.exited = true; resolve(code) })), exited: false, killed: false, status: undefined, afterKill: [] }
    let buf = ''
    proc.stdout!.on('data', (d: Buffer) => {
      buf += d.toString()
      let nl
      while ((nl = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, nl)
        buf = buf.slice(nl + 1)
        w.lines.push(line)
        if (killedAt !== undefined) {
          // Stamped on arrival, for the time from the kill to the next commit (a pipe delivers
          // within milliseconds; the status polls are `pollMs` apart).
          const v = /^view \d+: (\d+) member/.exec(line)
          const st = /^step (\d+)\//.exec(line)
          if (v !== null) w.afterKill.push({ ms: clock.monotonic(), view: Number(v[1]) })
          else if (st !== null) w.afterKill.push({ ms: clock.monotonic(), step: Number(st[1]) })
        }
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
    // Without a TTY: every few seconds, and the first line with a loss (the first committed
    // step) at once.
    const say = o.progress ?? ((): ((l: string) => void) => {
      let last = -Infinity
      let lossSeen = false
      return l => {
        const first = !lossSeen && !/ loss - /.test(l)
        if (first) lossSeen = true
        if (first || clock.monotonic() - last >= 3000) { last = clock.monotonic(); o.out(l) }
      }
    })()
    let lastLine = ''
    const reported = new Set<string>()
    let killStep = 0
    let killReported = false
    let beforeKill = new Set<string>()
    let lastStep = false
    for (;;) {
      // Once the last step is committed, poll fast: a rank's held-out loss is in its status
      // only between the final evaluation and its exit.
      await clock.sleep(lastStep ? Math.min(pollMs, 50) : pollMs)
      await Promise.all(workers.filter(w => !w.exited).map(async w => {
        try {
          w.status = await fetchStatus(w.dataDir, 1000) as NodeStatus
        } catch {
          // Not up yet, or gone: keep the last status.
        }
      }))
      const live = workers.filter(w => !w.killed)
      const ranks = live.filter(w => w.status?.training?.role === 'rank' || w.status?.training?.role === 'done')
      // Counted by rank number: a dropped worker's last status can still claim the rank that
      // another node has taken since.
      const spares = live.filter(w => w.status?.training?.role === 'spare').length
      const step = ranks.length === 0 ? 0 : Math.min(...ranks.map(w => w.status!.training!.step))
      const lead = ranks.find(w => w.status?.training?.rank === 0)?.status
      const t = lead?.training
      const epoch = Math.max(0, ...workers.map(w => w.status?.membership.epoch ?? 0))
      const line = `step ${step}/${o.steps}  loss ${t?.loss?.toFixed(4) ?? '-'}  ${t?.tokensPerS === undefined ? '-' : Math.round(t.tokensPerS)} tokens/s  view ${epoch} (${new Set(ranks.map(w => w.status!.training!.rank)).size} ranks, ${spares} spare)`
      if (line !== lastLine) {
        say(line)
        lastLine = line
      }
      lastStep = step >= o.steps
      o.onPoll?.({ ms: clock.monotonic() - started, step, tokensPerS: t?.tokensPerS, ranks: ranks.length, cpuMs: workers.reduce((a, w) => a + (w.status?.cpuMs ?? 0), 0) })
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
      if (killedAt !== undefined && !killReported) {
        const k = nextCommit(live, ranks, total, beforeKill, killedAt, killStep, clock.monotonic())
        if (k !== undefined) {
          killReported = true
          const s1 = (ms: number): string => (ms / 1000).toFixed(1)
          const parts = [
            ...(k.viewChangeMs === undefined ? [] : [`detection and view change ${s1(k.viewChangeMs)} s`]),
            `recovery ${s1(k.recoveryMs)} s`,
            ...(k.viewChangeMs === undefined ? [] : [`new session and step ${k.nextStep} ${s1(k.nextCommitMs - k.viewChangeMs - k.recoveryMs)} s`])
          ]
          o.out(`next step committed ${s1(k.nextCommitMs)} s after the kill${k.seenBy === 'poll' ? ` (seen by a status poll: up to ${(pollMs / 1000).toFixed(1)} s late)` : ''}: step ${k.nextStep}; ${parts.join(', ')}`)
          o.onKill?.(k)
        }
      }
      if (o.killAt !== undefined && step >= o.killAt && !workers.some(w => w.killed)) {
        const victim = ranks.find(w => w.status?.training?.rank === Math.min(1, o.nodes - 1))
        if (victim !== undefined) {
          victim.killed = true
          victim.proc.kill('SIGKILL')
          killedAt = clock.monotonic()
          killStep = step
          beforeKill = new Set(reported)
          o.out(`killed ${victim.name} (rank ${victim.status?.training?.rank}) with SIGKILL at step ${step}`)
        }
      }
      const rankWorkers = workers.filter(w => w.status?.training?.role !== 'spare' && !w.killed)
      if (rankWorkers.length > 0 && rankWorkers.every(w => w.exited)) break
      if (workers.filter(w => !w.killed).some(w => w.exited && w.proc.exitCode !== 0)) break
      if (clock.monotonic() - started > o.timeoutMs) {
        phases()
        throw new UpError(`the run did not finish within ${Math.round(o.timeoutMs / 1000)} s (logs in ${dir})`)
      }
    }
    const failed = workers.filter(w => !w.killed && w.exited && w.proc.exitCode !== 0)
    /** What each worker was doing at the last poll (a stuck worker says where it is stuck). */
    function phases (): void {
      for (const w of workers.filter(x => !x.killed)) {
        const tr = w.status?.training
        if (tr !== undefined) o.out(`  ${w.name} (${tr.role}${tr.rank === undefined ? '' : ` ${tr.rank}`}, step ${tr.step}): ${tr.phase}`)
      }
    }
    if (failed.length > 0) {
      for (const w of failed) o.out(`${w.name} failed: ${w.lines.filter(l => /failed/.test(l)).at(-1) ?? `exit ${w.proc.exitCode}`}`)
      phases()
      o.out(`logs: ${join(dir, 'workers.log')} (progress) and ${join(dir, 'w*.log')} (structured logs)`)
      return 1
    }
    const done = workers.map(w => w.lines.find(l => l.startsWith('training done:'))).filter(x => x !== undefined)
    o.out(done[0] ?? 'training done')
    // A rank prints its held-out loss when it is done (its status holds it only until it exits).
    const printed = workers.flatMap(w => w.lines.map(l => /^training done: .*, held-out loss (\d+\.\d+)$/.exec(l)?.[1]).filter(x => x !== undefined))[0]
    const evalLoss = printed ?? workers.map(w => w.status?.training?.evalLoss).find(x => x !== undefined)?.toFixed(4)
    if (evalLoss !== undefined) o.out(`held-out loss of the final weights: ${evalLoss}`)
    const memory = workers.map(w => w.lines.find(l => l.startsWith('parameter memory per rank'))).find(x => x !== undefined)
    if (memory !== undefined) o.out(memory)
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

/**
 * The first step committed after the recovery from the kill, or undefined while there is none
 * (`before`: the recoveries already reported when the rank was killed).
 * A step counts once every live rank has recorded the recovery and the lowest committed step
 * passed the rollback point (a poll), or once a worker printed a `step N/M` line for a step past
 * it after the first line for the view without the killed worker (no step can commit between
 * the kill and that view: every step needs every rank). The line is the exact figure; workers
 * print one for every step only when a run has at most 39 steps (`start` prints 20 per run).
 */
function nextCommit (live: Worker[], ranks: Worker[], total: number, before: Set<string>, killedAt: number, killedAtStep: number, now: number): UpKillReport | undefined {
  const key = (r: { mode: string, lost: number[], fromStep: number }): string => `${r.mode}/${r.lost.join(',')}/${r.fromStep}`
  // The recovery from this kill: the first one that lost a rank and was not reported before it.
  const recs = ranks.map(w => w.status?.training?.recoveries.find(r => r.lost.length > 0 && !before.has(key(r))))
  const first = recs.find(r => r !== undefined)
  if (first === undefined) return undefined
  const fromStep = first.fromStep
  const viewAt = Math.min(...live.flatMap(w => w.afterKill.filter(e => e.view !== undefined && e.view < total).map(e => e.ms)))
  const byLine = Math.min(...live.flatMap(w => w.afterKill.filter(e => e.step === fromStep + 1 && e.ms > viewAt).map(e => e.ms)))
  const polled = recs.every(r => r !== undefined && key(r) === key(first)) && Math.min(...ranks.map(w => w.status!.training!.step)) > fromStep
  if (!Number.isFinite(byLine) && !polled) return undefined
  const seenBy = Number.isFinite(byLine) ? 'line' : 'poll'
  return {
    killedAtStep,
    mode: first.mode,
    fromStep,
    nextStep: fromStep + 1,
    viewChangeMs: Number.isFinite(viewAt) ? viewAt - killedAt : undefined,
    recoveryMs: first.ms,
    nextCommitMs: (seenBy === 'line' ? byLine : now) - killedAt,
    seenBy
  }
}

/** NVIDIA GPUs visible on this host (device nodes /dev/nvidia0, 1, ...), without loading CUDA here. */
function countGpus (): number {
  const visible = process.env['CUDA_VISIBLE_DEVICES']
  if (visible !== undefined && visible.trim() !== '') return visible.split(',').length
  try {
    return readdirSync('/dev').filter(n => /^nvidia\d+$/.test(n)).length
  } catch {
    return 0
  }
}
