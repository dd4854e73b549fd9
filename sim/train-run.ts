import { createHash } from 'node:crypto'
import { readFileSync } from 'node:fs'
import { z } from 'zod'
import { silentLogger } from '../core/index.ts'
import { CpuBackend, gptLayout } from '../gpu/index.ts'
import type { MembershipInit } from '../mesh/index.ts'
import { Trainer, trainingModel, type TrainConfig, type TrainStatus } from '../node/trainer.ts'
import type { Corpus } from '../node/data.ts'
import type { Topology } from './net.ts'
import { ScenarioError } from './scenario.ts'
import { MembershipWorld } from './world.ts'

/**
 * The training workload on the simulator: the real Trainer (collectives, snapshot service,
 * recovery) on every simulated node, over SimNet and the virtual clock, with the real
 * membership underneath. Compute runs on the CPU reference backend and takes no virtual time;
 * a cost model charges each rank's forward and backward as virtual time instead, so step times,
 * detection and recovery are those of the modelled hardware and links.
 *
 * Invariants judged at the end:
 * - membership safety (MembershipWorld: one view per epoch, quorum for every view);
 * - every rank that was not crashed finishes every step;
 * - the ranks agree: one mean loss and one held-out loss across them;
 * - with a reference (`reference: true`), the final weights are bit-identical to the same run
 *   without faults when every lost rank was replaced by a spare (with a shrink, the held-out
 *   loss is within 1%).
 */
export interface TrainRunOptions {
  seed: number
  /** Simulated nodes: the training ranks plus spares. */
  nodes: number
  worldSize: number
  steps: number
  zones?: number
  /** Tokens per rank and step: batch x sequence. Defaults 2 x 16. */
  batch?: number
  seq?: number
  zeroPP?: boolean
  /** Erasure-coded snapshots (k data + m parity), default 2+1; undefined turns them off. */
  snapshot?: { k: number, m: number } | null
  /**
   * Cost model: modelled FLOP/s of one rank's device (forward + backward charged as
   * 6 x parameters x tokens FLOPs). Default 1e12 (a small GPU at modest utilisation).
   */
  flopsPerS?: number
  /** Crash these nodes when the node holding `rank` commits `atStep`. */
  kills?: Array<{ rank: number, atStep: number }>
  /** Run the same configuration without faults too and compare (the bit-identity invariant). */
  reference?: boolean
  membership?: MembershipInit
  topology?: Topology
  /** Simulated time limit (ms). Default 30 min. */
  limitMs?: number
  /** Called with the fraction of steps committed (the faulted run's). */
  progress?: (fraction: number) => void
}

export interface TrainRunResult {
  seed: number
  traceHash: string
  events: number
  simMs: number
  /** Invariant failures, one line each (empty: pass). */
  violations: string[]
  steps: number
  loss: number | undefined
  evalLoss: number | undefined
  /** SHA-256 of the assembled final weights. */
  weightsHash: string | undefined
  recoveries: TrainStatus['recoveries']
  /** Simulated ms per committed step (mean over the run). */
  stepMs: number | undefined
  /** The reference run's figures, when asked for. */
  reference?: { weightsHash: string | undefined, evalLoss: number | undefined, simMs: number }
}

// A small repetitive text, so the tiny model learns visibly in few steps without files.
function simCorpus (): Corpus {
  const text = Buffer.from('the quick brown fox jumps over the lazy dog. '.repeat(200))
  const ids = new Uint16Array(text.length)
  ids.set(text)
  return { source: 'simulator text', vocabSize: 256, train: ids, val: ids.subarray(0, 200) }
}

/** Runs the training workload once; deterministic in (options, code). */
export async function trainRun (o: TrainRunOptions): Promise<TrainRunResult> {
  const main = await once(o, o.kills ?? [], o.progress)
  if (o.reference !== true) return main
  const ref = await once(o, [])
  main.reference = { weightsHash: ref.weightsHash, evalLoss: ref.evalLoss, simMs: ref.simMs }
  if (ref.violations.length > 0) main.violations.push(...ref.violations.map(v => `reference run: ${v}`))
  const shrunk = main.recoveries.some(r => r.mode === 'shrink')
  if (!shrunk && main.weightsHash !== ref.weightsHash) main.violations.push('final weights differ from the run without faults (every lost rank was replaced, so they must be bit-identical)')
  if (shrunk && main.evalLoss !== undefined && ref.evalLoss !== undefined && Math.abs(main.evalLoss - ref.evalLoss) / ref.evalLoss > 0.01) {
    main.violations.push(`after a shrink the held-out loss ${main.evalLoss.toFixed(4)} is more than 1% from the run without faults (${ref.evalLoss.toFixed(4)})`)
  }
  return main
}

async function once (o: TrainRunOptions, kills: Array<{ rank: number, atStep: number }>, progress?: (f: number) => void): Promise<TrainRunResult> {
  const w = new MembershipWorld({
    seed: o.seed,
    nodes: o.nodes,
    zones: o.zones ?? 2,
    ...(o.topology === undefined ? {} : { topology: o.topology }),
    membership: { heartbeatMs: 100, ...o.membership }
  })
  const { sim } = w
  const corpus = simCorpus()
  const model = { ...trainingModel('mini', corpus.vocabSize), maxT: Math.max(16, o.seq ?? 16) }
  const cfg: TrainConfig = {
    model,
    B: o.batch ?? 2,
    T: o.seq ?? 16,
    steps: o.steps,
    lr: 1e-2,
    weightDecay: 0,
    seed: o.seed,
    worldSize: o.worldSize,
    zeroPP: o.zeroPP ?? false,
    dtype: 'f32',
    snapshot: o.snapshot === null ? undefined : (o.snapshot ?? { k: 2, m: 1 })
  }
  const params = 6 * gptLayout(model).length
  const flops = o.flopsPerS ?? 1e12
  const pending = [...kills]
  const crashed = new Set<string>()
  const ctrls = new Map<string, AbortController>()
  const trainers: Array<{ id: string, trainer: Trainer, done: Promise<TrainStatus | Error> }> = []
  const t0 = sim.now()
  // Trainers are built before membership starts, as `zeromesh start` does, so each sees the
  // first full view as installed.
  for (const n of w.nodes) {
    const ctrl = new AbortController()
    ctrls.set(n.id, ctrl)
    const boot = w.boot(n)
    const trainer = new Trainer({
      backend: new CpuBackend(),
      net: n.net,
      membership: n.m!,
      clock: n.handle.clock,
      log: silentLogger(),
      corpus,
      computeMs: tokens => (params * tokens / flops) * 1000,
      onStep: s => {
        if (s.rank === 0) progress?.(s.step / o.steps)
        for (const k of [...pending]) {
          if (s.rank !== k.rank || s.step !== k.atStep) continue
          pending.splice(pending.indexOf(k), 1)
          sim.trace('train-kill', { node: n.id, rank: s.rank, step: s.step })
          crashed.add(n.id)
          w.crash(n.id)
          ctrl.abort()
        }
      }
    }, cfg)
    await boot
    const done = trainer.run(ctrl.signal).then(s => s, (err: unknown) => (err instanceof Error ? err : new Error(String(err))))
    trainers.push({ id: n.id, trainer, done })
  }
  const settled = new Map<string, TrainStatus | Error>()
  for (const t of trainers) void t.done.then(r => { settled.set(t.id, r) })
  const limit = o.limitMs ?? 30 * 60_000
  // Run until every live rank has finished; then the spares are told the run is over.
  await sim.until(() => trainers.every(t => crashed.has(t.id) || settled.has(t.id) || t.trainer.status().role === 'spare'), limit, 50)
  for (const t of trainers) if (!settled.has(t.id) && t.trainer.status().role === 'spare') ctrls.get(t.id)!.abort()
  await sim.until(() => trainers.every(t => crashed.has(t.id) || settled.has(t.id)), 60_000, 50)
  const simMs = sim.now() - t0

  const violations = [...w.violations]
  const live = trainers.filter(t => !crashed.has(t.id))
  const ranks: TrainStatus[] = []
  for (const t of live) {
    const r = settled.get(t.id)
    if (r === undefined) violations.push(`${t.id} did not finish within ${limit / 1000} simulated s (role ${t.trainer.status().role}, step ${t.trainer.status().step})`)
    else if (r instanceof Error) violations.push(`${t.id} failed: ${r.message}`)
    else if (r.role === 'done') ranks.push(r)
  }
  if (ranks.length !== Math.min(o.worldSize, live.length) && !ranks.some(r => r.recoveries.some(x => x.mode === 'shrink'))) {
    violations.push(`${ranks.length} ranks finished, expected ${o.worldSize}`)
  }
  for (const r of ranks) if (r.step !== o.steps) violations.push(`rank ${r.rank} stopped at step ${r.step} of ${o.steps}`)
  if (new Set(ranks.map(r => r.loss)).size > 1) violations.push(`ranks disagree on the loss: ${ranks.map(r => r.loss).join(', ')}`)
  if (new Set(ranks.map(r => r.evalLoss)).size > 1) violations.push(`ranks disagree on the held-out loss: ${ranks.map(r => r.evalLoss).join(', ')}`)
  let weightsHash: string | undefined
  if (ranks.length > 0) {
    const shards = live.map(t => t.trainer.finalShard).filter(x => x !== undefined).sort((a, b) => a.start - b.start)
    const h = createHash('sha256')
    for (const s of shards) h.update(new Uint8Array(s.data.buffer, s.data.byteOffset, s.data.byteLength))
    weightsHash = h.digest('hex')
  }
  const recoveries = ranks.flatMap(r => r.recoveries).filter((r, i, a) => a.findIndex(x => x.fromStep === r.fromStep && x.mode === r.mode) === i)
  return {
    seed: o.seed,
    traceHash: sim.traceHash(),
    events: sim.events,
    simMs,
    violations,
    steps: ranks[0]?.step ?? 0,
    loss: ranks[0]?.loss,
    evalLoss: ranks[0]?.evalLoss,
    weightsHash,
    recoveries,
    stepMs: ranks.length > 0 ? simMs / o.steps : undefined
  }
}


/**
 * A training scenario file: `"workload": "train"` plus the run's shape and its crashes.
 * Unknown keys are errors; errors name the field.
 */
export const trainScenarioSchema = z.strictObject({
  name: z.string().min(1).max(100),
  description: z.string().max(2000).optional(),
  workload: z.literal('train'),
  seed: z.int().nonnegative().default(1),
  nodes: z.int().min(1).max(64),
  worldSize: z.int().min(1).max(64),
  steps: z.int().min(1).max(10_000),
  zones: z.int().min(1).max(64).default(2),
  batch: z.int().min(1).max(64).default(2),
  seq: z.int().min(2).max(64).default(16),
  zeropp: z.boolean().default(false),
  snapshot: z.string().regex(/^(off|[1-9]\d?\+[0-9]\d?)$/, 'must be k+m (e.g. 2+1) or off').default('2+1'),
  flopsPerS: z.number().positive().default(1e12),
  heartbeatMs: z.number().positive().max(60_000).default(100),
  kills: z.array(z.strictObject({ rank: z.int().min(0), atStep: z.int().min(1) })).max(64).default([]),
  reference: z.boolean().default(true),
  limitMs: z.number().positive().max(24 * 3600_000).default(30 * 60_000)
}).superRefine((s, ctx) => {
  if (s.worldSize > s.nodes) ctx.addIssue({ code: 'custom', path: ['worldSize'], message: `is ${s.worldSize}, more than the ${s.nodes} nodes` })
  for (const [i, k] of s.kills.entries()) {
    if (k.rank >= s.worldSize) ctx.addIssue({ code: 'custom', path: ['kills', i, 'rank'], message: `rank ${k.rank} does not exist (worldSize ${s.worldSize})` })
    if (k.atStep >= s.steps) ctx.addIssue({ code: 'custom', path: ['kills', i, 'atStep'], message: `step ${k.atStep} is not before the last step (${s.steps})` })
  }
})
export type TrainScenario = z.output<typeof trainScenarioSchema>

/** A parsed scenario object is a training one when its workload says so. */
export function isTrainScenario (raw: unknown): boolean {
  return typeof raw === 'object' && raw !== null && (raw as { workload?: unknown }).workload === 'train'
}

/** Validates a training scenario; errors name the field. */
export function parseTrainScenario (raw: unknown, source = 'scenario'): TrainScenario {
  const r = trainScenarioSchema.safeParse(raw)
  if (!r.success) {
    const issue = r.error.issues[0]!
    throw new ScenarioError(`${source}: ${issue.path.length === 0 ? '(top level)' : issue.path.join('.')}: ${issue.message}`)
  }
  return r.data
}

/** Reads a scenario file if it is a training one (undefined otherwise, for the membership runner). */
export function readTrainScenario (path: string): TrainScenario | undefined {
  let raw: unknown
  try {
    raw = JSON.parse(readFileSync(path, 'utf8'))
  } catch {
    return undefined // the membership loader reports unreadable and malformed files
  }
  return isTrainScenario(raw) ? parseTrainScenario(raw, path) : undefined
}

/** Runs a training scenario (seed and node count may be overridden from the command line). */
export async function runTrainScenario (s: TrainScenario, opts: { seed?: number, nodes?: number, progress?: (f: number) => void } = {}): Promise<TrainRunResult & { scenario: string, ok: boolean }> {
  const snapshot = s.snapshot === 'off' ? null : (([k, m]) => ({ k: k!, m: m! }))(s.snapshot.split('+').map(Number))
  const r = await trainRun({
    seed: opts.seed ?? s.seed,
    nodes: opts.nodes ?? s.nodes,
    worldSize: s.worldSize,
    steps: s.steps,
    zones: s.zones,
    batch: s.batch,
    seq: s.seq,
    zeroPP: s.zeropp,
    snapshot,
    flopsPerS: s.flopsPerS,
    kills: s.kills,
    reference: s.reference,
    membership: { heartbeatMs: s.heartbeatMs },
    limitMs: s.limitMs,
    ...(opts.progress === undefined ? {} : { progress: opts.progress })
  })
  return { ...r, scenario: s.name, ok: r.violations.length === 0 }
}

/** A short human summary of a training scenario run. */
export function formatTrainReport (r: TrainRunResult & { scenario: string, ok: boolean }): string {
  const lines = [
    `scenario ${r.scenario}: training workload, seed ${r.seed}, ${(r.simMs / 1000).toFixed(1)} s simulated`,
    `trace ${r.traceHash.slice(0, 16)} (${r.events} events); replay with --seed ${r.seed}`,
    `steps: ${r.steps}, loss ${r.loss?.toFixed(4) ?? '-'}, held-out loss ${r.evalLoss?.toFixed(4) ?? '-'}, ${r.stepMs?.toFixed(0) ?? '-'} simulated ms per step`
  ]
  for (const x of r.recoveries) lines.push(`recovery: ${x.mode} of rank ${x.lost.join(', ')} from step ${x.fromStep} (${x.ms} simulated ms)`)
  if (r.reference !== undefined) {
    lines.push(`reference run without faults: ${(r.reference.simMs / 1000).toFixed(1)} s simulated, held-out loss ${r.reference.evalLoss?.toFixed(4) ?? '-'}, ` +
      `final weights ${r.reference.weightsHash === r.weightsHash ? 'bit-identical' : 'differ'}`)
  }
  lines.push(r.ok ? 'invariants: ok (membership safety, every rank finished, ranks agree' + (r.reference !== undefined ? ', matches the reference' : '') + ')' : 'invariants: VIOLATED')
  for (const v of r.violations) lines.push(`  - ${v}`)
  lines.push(r.ok ? 'result: PASS' : 'result: FAIL')
  return lines.join('\n')
}
