// Optimizers (issue 21): AdamW against Lion, 8-bit AdamW and 8-bit Lion, on real `zeromesh start --train`
// worker processes (`up`, CPU backend), every figure with AdamW as the same-run baseline.
//
// (a) `optimizer.quality`: held-out loss of the final weights after BENCH_OPT_STEPS steps
//     (default 300) of the `small` model (3.3 M parameters) on one rank, batch 4 x seq 64,
//     seed 1, each optimizer at its default learning rate (AdamW and 8-bit AdamW 3e-3, Lion and
//     8-bit Lion 1e-4). Goal: each within 1% of AdamW.
// (b) `optimizer.state`: bytes of one rank's serialized state (what a snapshot codes and the
//     disk tier writes) per owned parameter, from the state header and the shard of a 4-rank
//     `small` run; goal <= 0.5x AdamW's.
// (c) `optimizer.kill`: 4 ranks + 1 spare, the `mini` model, SIGKILL of rank 1 at step
//     BENCH_OPT_KILL_AT of 30: the trainer's recovery (recovery point + loading the snapshots)
//     and SIGKILL to the next commit.
// BENCH_OPT_PARTS (comma-separated: quality, state, kill) picks parts; BENCH_OPT_ONLY (comma-
// separated) the optimizers of (a) and (c); BENCH_OPT_ADAMW_LR / BENCH_OPT_LION_LR /
// BENCH_OPT_ADAMW8BIT_LR / BENCH_OPT_LION8BIT_LR their learning rates.
import { loadavg } from 'node:os'
import { envNumber } from './harness.ts'
import { up, type UpKillReport } from '../cli/index.ts'
import { shardRange } from '../core/index.ts'
import { ADAM8_BLOCK, GPT_PRESETS, gptLayout } from '../gpu/index.ts'
import { stateBytes } from '../snapshot/index.ts'
import { codedMoments, decaySegments, OPTIMIZERS, trainingModel, type Optimizer } from '../node/index.ts'

const STEPS = envNumber('BENCH_OPT_STEPS', 300)
// Learning rates (default: the workers' own per optimizer, node/train/config.ts defaultLr).
const lrOf = (name: string): number | undefined => (process.env[name] === undefined ? undefined : Number(process.env[name]))
const LR: Record<Optimizer, number | undefined> = {
  adamw: lrOf('BENCH_OPT_ADAMW_LR'),
  lion: lrOf('BENCH_OPT_LION_LR'),
  adamw8bit: lrOf('BENCH_OPT_ADAMW8BIT_LR'),
  lion8bit: lrOf('BENCH_OPT_LION8BIT_LR')
}
const ONLY = process.env['BENCH_OPT_ONLY']?.split(',').map(s => s.trim())
const picked = (o: Optimizer): boolean => ONLY === undefined || ONLY.includes(o)
const KILL_AT = envNumber('BENCH_OPT_KILL_AT', 10)
const parts = (process.env['BENCH_OPT_PARTS'] ?? 'quality,state,kill').split(',').map(s => s.trim())
const r4 = (x: number): number => Number(x.toPrecision(4))
const load1 = (): number => Number(loadavg()[0]!.toFixed(2))
const emit = (line: Record<string, unknown>): void => {
  process.stdout.write(`${JSON.stringify(line)}\n`)
}

async function run(
  label: string,
  o: { optimizer: Optimizer; nodes: number; spares: number; model: string; steps: number; killAt?: number; lr?: number }
): Promise<{ code: number; heldOut: number | undefined; kill: UpKillReport | undefined; wallS: number }> {
  const lines: string[] = []
  let kill: UpKillReport | undefined
  const t0 = performance.now()
  const code = await up({
    nodes: o.nodes,
    spares: o.spares,
    device: 'cpu',
    steps: o.steps,
    killAt: o.killAt,
    model: o.model,
    data: undefined,
    zeropp: false,
    optimizer: o.optimizer,
    ...(o.lr === undefined ? {} : { lr: o.lr }),
    seed: 1,
    batch: 4,
    seq: 64,
    timeoutMs: 1800_000,
    keep: false,
    sampleTokens: 0,
    out: l => {
      lines.push(l)
      process.stderr.write(`  [${label}] ${l}\n`)
    },
    progress: () => {},
    onKill: k => {
      kill = k
    }
  })
  const held = lines.map(l => /held-out loss of the final weights: ([\d.]+)/.exec(l)?.[1]).find(x => x !== undefined)
  return { code, heldOut: held === undefined ? undefined : Number(held), kill, wallS: (performance.now() - t0) / 1000 }
}

if (parts.includes('quality')) {
  const got = new Map<string, number>()
  for (const optimizer of OPTIMIZERS.filter(picked)) {
    const before = load1()
    const lr = LR[optimizer]
    const r = await run(`quality ${optimizer}`, { optimizer, nodes: 1, spares: 0, model: 'small', steps: STEPS, ...(lr === undefined ? {} : { lr }) })
    if (r.code !== 0 || r.heldOut === undefined) {
      emit({ bench: 'optimizer.quality', optimizer, error: `up exited ${r.code}` })
      process.exitCode = 1
      continue
    }
    got.set(optimizer, r.heldOut)
    const base = got.get('adamw')
    emit({
      bench: 'optimizer.quality',
      optimizer,
      model: 'small',
      steps: STEPS,
      lr: lr ?? 'default',
      held_out_loss: r4(r.heldOut),
      ...(base === undefined || optimizer === 'adamw' ? {} : { vs_adamw: r4(r.heldOut / base) }),
      wall_s: r4(r.wallS),
      load: [before, load1()]
    })
  }
}

if (parts.includes('state')) {
  const model = trainingModel('small', 256)
  const N = gptLayout(model).length
  const P = 4
  const n = shardRange(N, P, 0).length
  const sizes = new Map<string, number>()
  // The 8-bit optimizers run per decay segment: blocks restart at each segment of the shard.
  const blocks = decaySegments(gptLayout(model), 0, n).reduce((a, x) => a + Math.ceil(x.length / ADAM8_BLOCK), 0)
  for (const optimizer of OPTIMIZERS) {
    const empty = new Float32Array(0)
    const vec = new Float32Array(n)
    const k8 = codedMoments({ optimizer })
    const eight = k8 !== 0
    const bytes = stateBytes({
      rank: 0,
      worldSize: P,
      epoch: 1,
      step: 1,
      dataCursor: 1,
      weights: vec,
      adamM: eight ? empty : vec,
      adamV: optimizer === 'adamw' ? vec : empty,
      rng: new Uint8Array(0),
      identity: new Uint8Array(32),
      nonce: new Uint8Array(16),
      ...(optimizer === 'adamw' ? {} : { optimizer }),
      ...(eight ? { adam8: { m: new Uint8Array(n), v: new Uint8Array(k8 === 2 ? n : 0), scales: new Float32Array(k8 * blocks) } } : {})
    })
    sizes.set(optimizer, bytes)
    emit({
      bench: 'optimizer.state',
      optimizer,
      model: `small (${GPT_PRESETS.small.nLayer} layers, width ${GPT_PRESETS.small.C}), ${P} ranks`,
      params_per_rank: n,
      state_bytes: bytes,
      bytes_per_param: r4(bytes / n),
      ...(optimizer === 'adamw' ? {} : { vs_adamw: r4(bytes / sizes.get('adamw')!) })
    })
  }
}

if (parts.includes('kill')) {
  for (const optimizer of OPTIMIZERS.filter(picked)) {
    const before = load1()
    const r = await run(`kill ${optimizer}`, { optimizer, nodes: 4, spares: 1, model: 'mini', steps: 30, killAt: KILL_AT })
    if (r.code !== 0 || r.kill === undefined) {
      emit({ bench: 'optimizer.kill', optimizer, error: `up exited ${r.code}${r.kill === undefined ? ', no kill report' : ''}` })
      process.exitCode = 1
      continue
    }
    emit({
      bench: 'optimizer.kill',
      optimizer,
      model: 'mini',
      mode: r.kill.mode,
      from_step: r.kill.fromStep,
      recovery_ms: r.kill.recoveryMs,
      next_commit_ms: r.kill.nextCommitMs,
      load: [before, load1()]
    })
  }
}
