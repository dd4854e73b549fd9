import { randomBytes } from 'node:crypto'
import { createWriteStream, mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { RealClock } from '../../core/index.ts'
import {
  TRAIN_MODELS,
  fetchStatus,
  formatStepPhases,
  type NodeStatus,
  type StepPhases,
  type Optimizer,
  type TokenizerName,
  type TrainModelName
} from '../../node/index.ts'
import { sample } from '../sample/run.ts'
import { killLine, progressLine, recoveryLine, renderNodeEvent, upBanner } from '../render.ts'
import { nextCommit, recoveryKey, type Kill, type UpKillReport } from './kill.ts'
import { UpError, countGpus, spawnWorker, stopAll, waitForAddress, type Worker, type WorkerPlan } from './workers.ts'

export { UpError } from './workers.ts'
export type { UpKillReport } from './kill.ts'

/**
 * `zeromesh up`: a local mesh of worker processes on loopback (the ranks plus spares) that
 * trains the default model on the default data, with a live progress line. `--kill-at STEP`
 * SIGKILLs a training worker once the run reaches that step, to show what a node loss does.
 * It reads the workers' events (cli/up/workers.ts) and polls their control sockets.
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
  /** `--optimizer` for the workers. */
  optimizer?: Optimizer
  /** `--zo` (and its `--zo-eps`) for the workers: zeroth-order training. */
  zo?: { eps: number }
  /** `--offload cpu` (and `--offload-threads`) for the workers. */
  offload?: { threads?: number }
  /** `--device-memory` for the workers (bytes, each). */
  deviceMemory?: number
  /** `--lr` for the workers (default: theirs, by optimizer). */
  lr?: number
  /** The DiLoCo tier across the workers' two zones (`--outer-every`, `--streaming`). */
  outer?: { every: number; streaming: boolean }
  seed: number
  batch: number
  seq: number
  /** Give up after this long (ms). */
  timeoutMs: number
  /** `--init-from` for the workers: the run starts from this checkpoint (its shape, not `model`). */
  initFrom?: string
  /** `--tokenizer` for the workers. */
  tokenizer?: TokenizerName
  /** Tokens of the sample of the trained model printed at the end (default 48; 0: none). */
  sampleTokens?: number
  /** Keep the run directory (worker logs) afterwards. */
  keep: boolean
  /** Workers serve their dashboards (`--http 127.0.0.1:0`); `up` prints the first worker's URL once it is up. */
  dashboard?: boolean
  out: (line: string) => void
  /** A line that replaces itself (a TTY progress line; `done` is the fraction of the steps committed); defaults to `out` every few seconds. */
  progress?: (line: string, done: number) => void
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
  /** Rank 0's step time by phase (mean ms per step of its roster). */
  phases: StepPhases | undefined
}

/** The poll loop's memory between polls. */
interface Watch {
  /** The last progress line shown. */
  lastLine: string
  /** Keys of the recoveries reported so far. */
  reported: Set<string>
  kill: Kill | undefined
  killReported: boolean
  /** Every rank committed the last step (the loop then polls fast). */
  lastStep: boolean
}

/** Runs `zeromesh up`; returns the exit code (0: trained; 1: a worker failed). */
export async function up(o: UpOptions): Promise<number> {
  const clock = new RealClock()
  const dir = mkdtempSync(join(tmpdir(), 'zeromesh-up-'))
  const secret = join(dir, 'run.secret')
  writeFileSync(secret, randomBytes(32).toString('hex') + '\n', { mode: 0o600 })
  const total = o.nodes + o.spares
  const log = createWriteStream(join(dir, 'workers.log'))
  const workers: Worker[] = []
  o.out(upBanner({ ...o, dir }))
  const gpuCount = o.device === 'cuda' ? countGpus() : 0
  // k + m fragments need as many holders besides the owner: small meshes get a smaller code.
  const snapshot = o.snapshot ?? (total >= 4 ? undefined : total === 3 ? '1+1' : 'off')
  if (snapshot !== o.snapshot) o.out(`snapshots: ${snapshot} (${total} processes are too few for the default 2+1)`)
  if (o.device === 'cuda')
    o.out(gpuCount > 0 ? `${gpuCount} GPU(s): worker i uses GPU i mod ${gpuCount}` : 'no /dev/nvidia* devices found: every worker uses the default GPU')
  const plan: WorkerPlan = { ...o, dir, run: `up-${process.pid}`, secret, total, snapshot, snapshotEvery: o.snapshotEvery, gpuCount }
  const watch: Watch = { lastLine: '', reported: new Set(), kill: undefined, killReported: false, lastStep: false }
  const sinks = { clock, log, stamping: () => watch.kill !== undefined && !watch.killReported, say: o.out }
  const onSignal = (): void => {
    void stopAll(workers, clock, log).then(() => process.exit(130))
  }
  process.once('SIGINT', onSignal)
  process.once('SIGTERM', onSignal)
  let ok = false
  try {
    const first = spawnWorker(plan, sinks, 0, undefined)
    workers.push(first)
    const addr = await waitForAddress(first, clock, 30_000)
    if (first.started?.dashboardUrl !== undefined)
      o.out(`dashboard: ${first.started.dashboardUrl} (served by ${first.name}; every worker serves one, linked from the page)`)
    for (let i = 1; i < total; i++) workers.push(spawnWorker(plan, sinks, i, addr))
    const started = clock.monotonic()
    await watchRun(o, workers, watch, clock, started, dir)
    const failed = workers.filter(w => !w.killed && w.exited && w.proc.exitCode !== 0)
    if (failed.length > 0) {
      for (const w of failed) o.out(`${w.name} failed: ${w.failed === undefined ? `exit ${w.proc.exitCode}` : renderNodeEvent(w.failed)[0]}`)
      phases(o, workers)
      o.out(`logs: ${join(dir, 'workers.log')} (progress) and ${join(dir, 'w*.log')} (structured logs)`)
      return 1
    }
    summary(o, workers, clock.monotonic() - started)
    await endSample(o, workers)
    ok = true
    return 0
  } finally {
    process.removeListener('SIGINT', onSignal)
    process.removeListener('SIGTERM', onSignal)
    await stopAll(workers, clock, log)
    // Logs stay when something went wrong (the messages above name the file).
    if (ok && !o.keep) rmSync(dir, { recursive: true, force: true })
  }
}

/** Polls the workers until every rank exited or a worker failed; throws {@link UpError} past the timeout. */
async function watchRun(o: UpOptions, workers: Worker[], watch: Watch, clock: RealClock, started: number, dir: string): Promise<void> {
  const pollMs = o.pollMs ?? 300
  const say = o.progress ?? throttled(o.out, clock)
  for (;;) {
    // Once the last step is committed, poll fast: a rank's held-out loss is in its status
    // only between the final evaluation and its exit.
    await clock.sleep(watch.lastStep ? Math.min(pollMs, 50) : pollMs)
    await pollStatuses(workers)
    const live = workers.filter(w => !w.killed)
    const ranks = live.filter(w => w.status?.training?.role === 'rank' || w.status?.training?.role === 'done')
    const step = ranks.length === 0 ? 0 : Math.min(...ranks.map(w => w.status!.training!.step))
    const t = ranks.find(w => w.status?.training?.rank === 0)?.status?.training
    const line = progressLine({
      step,
      steps: o.steps,
      loss: t?.loss,
      tokensPerS: t?.tokensPerS,
      epoch: Math.max(0, ...workers.map(w => w.status?.membership.epoch ?? 0)),
      // Counted by rank number: a dropped worker's last status can still claim the rank that
      // another node has taken since.
      ranks: new Set(ranks.map(w => w.status!.training!.rank)).size,
      spares: live.filter(w => w.status?.training?.role === 'spare').length,
      ...recovering(live)
    })
    if (line !== watch.lastLine) {
      say(line, step / Math.max(1, o.steps))
      watch.lastLine = line
    }
    watch.lastStep = step >= o.steps
    o.onPoll?.({
      ms: clock.monotonic() - started,
      step,
      tokensPerS: t?.tokensPerS,
      ranks: ranks.length,
      cpuMs: workers.reduce((a, w) => a + (w.status?.cpuMs ?? 0), 0),
      phases: t?.phases
    })
    reportRecoveries(o, workers, watch)
    if (watch.kill !== undefined && !watch.killReported) {
      const k = nextCommit(live, ranks, o.nodes + o.spares, watch.kill, clock.monotonic())
      if (k !== undefined) {
        watch.killReported = true
        o.out(killLine({ ...k, polled: k.seenBy === 'poll', pollMs }))
        o.onKill?.(k)
      }
    }
    if (o.killAt !== undefined && step >= o.killAt && !workers.some(w => w.killed)) killRank(o, ranks, watch, step, clock)
    const rankWorkers = workers.filter(w => w.status?.training?.role !== 'spare' && !w.killed)
    if (rankWorkers.length > 0 && rankWorkers.every(w => w.exited)) return
    if (workers.filter(w => !w.killed).some(w => w.exited && w.proc.exitCode !== 0)) return
    if (clock.monotonic() - started > o.timeoutMs) {
      phases(o, workers)
      throw new UpError(`the run did not finish within ${Math.round(o.timeoutMs / 1000)} s (logs in ${dir})`)
    }
  }
}

/** While a recovery runs: what a recovering worker is doing (its status phase), for the progress line. */
function recovering(live: Worker[]): { recovering?: string } {
  const phase = live.map(w => w.status?.training?.phase).find(p => p !== undefined && (p.startsWith('recovery') || p.startsWith('after a failure')))
  return phase === undefined ? {} : { recovering: phase.length > 90 ? `${phase.slice(0, 89)}…` : phase }
}

/** Without a TTY: a progress line every few seconds, and the first line with a loss (the first committed step) at once. */
function throttled(out: (line: string) => void, clock: RealClock): (line: string) => void {
  let last = -Infinity
  let lossSeen = false
  return l => {
    const first = !lossSeen && !/ loss - /.test(l)
    if (first) lossSeen = true
    if (first || clock.monotonic() - last >= 3000) {
      last = clock.monotonic()
      out(l)
    }
  }
}

/** Reads every running worker's status from its control socket (a worker that does not answer keeps its last). */
async function pollStatuses(workers: Worker[]): Promise<void> {
  await Promise.all(
    workers
      .filter(w => !w.exited)
      .map(async w => {
        try {
          w.status = (await fetchStatus(w.dataDir, 1000)) as NodeStatus
        } catch {
          // Not up yet, or gone: keep the last status.
        }
      })
  )
}

/** One line per recovery a worker reported that was not reported before. */
function reportRecoveries(o: UpOptions, workers: Worker[], watch: Watch): void {
  for (const w of workers) {
    for (const r of w.recoveries) {
      const key = recoveryKey(r)
      if (watch.reported.has(key)) continue
      watch.reported.add(key)
      o.out(recoveryLine(r))
    }
  }
}

/**
 * SIGKILLs the worker holding rank 1 (rank 0 with one rank), for `--kill-at`; with
 * `--dashboard`, never the first worker, whose dashboard `up` printed (another rank instead).
 */
function killRank(o: UpOptions, ranks: Worker[], watch: Watch, step: number, clock: RealClock): void {
  const spared = o.dashboard === true ? ranks.filter(w => w.name !== 'w0') : ranks
  const victim =
    spared.find(w => w.status?.training?.rank === Math.min(1, o.nodes - 1)) ??
    (o.dashboard === true ? spared.find(w => w.status?.training?.rank !== undefined) : undefined)
  if (victim === undefined) return
  victim.killed = true
  victim.proc.kill('SIGKILL')
  watch.kill = { at: clock.monotonic(), step, before: new Set(watch.reported) }
  o.out(`killed ${victim.name} (rank ${victim.status?.training?.rank}) with SIGKILL at step ${step}`)
}

/** What each worker was doing at the last poll (a stuck worker says where it is stuck). */
function phases(o: UpOptions, workers: Worker[]): void {
  for (const w of workers.filter(x => !x.killed)) {
    const tr = w.status?.training
    if (tr !== undefined) o.out(`  ${w.name} (${tr.role}${tr.rank === undefined ? '' : ` ${tr.rank}`}, step ${tr.step}): ${tr.phase}`)
  }
}

/** The end of a run: the first rank's done line, the held-out loss, the parameter memory and the time. */
function summary(o: UpOptions, workers: Worker[], ms: number): void {
  const done = workers.map(w => w.done).find(e => e !== undefined)
  o.out(done === undefined ? 'training done' : renderNodeEvent(done)[0]!)
  // A rank reports its held-out loss when it is done (its status holds it only until it exits).
  const reported = workers.map(w => w.done?.evalLoss).find(x => x !== undefined && x !== null)
  const evalLoss =
    reported?.toFixed(4) ??
    workers
      .map(w => w.status?.training?.evalLoss)
      .find(x => x !== undefined)
      ?.toFixed(4)
  if (evalLoss !== undefined) o.out(`held-out loss of the final weights: ${evalLoss}`)
  const memory = workers.map(w => w.memory).find(e => e !== undefined)
  if (memory !== undefined) o.out(renderNodeEvent(memory)[0]!)
  const phases = workers.find(w => w.status?.training?.rank === 0)?.status?.training?.phases
  if (phases !== undefined) o.out(formatStepPhases(phases))
  o.out(`${Math.round(ms / 100) / 10} s for ${o.steps} steps on ${o.nodes} ranks`)
}

/** The prompt of the sample `up` prints at the end. */
const END_PROMPT = 'The'

/**
 * The end of a run: a short sample of the trained model, assembled from the workers' disk
 * tiers (they hold the final step: workers.ts upDiskEvery), seeded with the run's seed.
 */
async function endSample(o: UpOptions, workers: Worker[]): Promise<void> {
  const tokens = o.sampleTokens ?? 48
  if (tokens === 0) return
  try {
    const model = TRAIN_MODELS.find(m => m === o.model) as TrainModelName | undefined
    if (model === undefined && o.initFrom === undefined) return
    const r = await sample({
      source: {
        dataDirs: workers.map(w => w.dataDir),
        model: model ?? 'mini',
        ...(o.data === undefined ? {} : { data: o.data }),
        ...(o.tokenizer === undefined ? {} : { tokenizer: o.tokenizer }),
        ...(o.initFrom === undefined ? {} : { initFrom: o.initFrom })
      },
      prompt: END_PROMPT,
      tokens,
      temperature: 0.8,
      topK: 40,
      seed: o.seed,
      device: o.device,
      ...(o.tokenizer === undefined ? {} : { tokenizer: o.tokenizer })
    })
    o.out(`sample of ${r.model} (seed ${o.seed}, ${r.ids.length} tokens): ${JSON.stringify(r.prompt + r.text)}`)
  } catch (err) {
    o.out(`no sample of the trained model: ${(err as Error).message}`)
  }
}
