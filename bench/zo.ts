// Zeroth-order fine-tuning (`--zo`, MeZO) against first-order fine-tuning (AdamW), on real
// `zeromesh up` worker processes (CPU backend), from the same pretrained weights:
//
// 1. pretrain: the `mini` model, AdamW, BENCH_ZO_PRETRAIN steps (default 300) on the default
//    corpus (the Brown Corpus), 2 ranks; its disk tier is exported (`export`) to one file;
// 2. fine-tune from that file (`--init-from`) on another text, this repository's
//    docs/ARCHITECTURE.md (bytes, its own held-out split), 2 ranks, BENCH_ZO_STEPS steps
//    (default 200): AdamW at BENCH_ZO_ADAMW_LR (default 3e-4), then `--zo` at BENCH_ZO_LR
//    (default 1e-3) with ε BENCH_ZO_EPS (default 1e-3).
//
// One JSON line per fine-tuning run (`zo.finetune`): the held-out loss of the final weights on
// the fine-tuning text, the training loss every 20 steps (the curve; for --zo the mean of the
// two perturbed losses), wall seconds and seconds per step; the --zo line carries its ratios to
// AdamW's held-out loss and to the pretrained model's (`before`: the held-out loss after one
// fine-tuning step of AdamW at a learning rate of 1e-9, i.e. the pretrained weights scored on
// the fine-tuning text). Bytes across zones per step: `npm run bench -- zones` with
// BENCH_ZONES_CONFIGS=zo (bench/zones.ts).
import { mkdtempSync, rmSync } from 'node:fs'
import { loadavg, tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { envNumber } from './harness.ts'
import { exportModel, up } from '../cli/index.ts'

const PRETRAIN = envNumber('BENCH_ZO_PRETRAIN', 300)
const STEPS = envNumber('BENCH_ZO_STEPS', 200)
const ADAMW_LR = envNumber('BENCH_ZO_ADAMW_LR', 3e-4)
const ZO_LR = envNumber('BENCH_ZO_LR', 1e-3)
const ZO_EPS = envNumber('BENCH_ZO_EPS', 1e-3)
const DATA = fileURLToPath(new URL('../docs/ARCHITECTURE.md', import.meta.url))
const r4 = (x: number): number => Number(x.toPrecision(4))
const load1 = (): number => Number(loadavg()[0]!.toFixed(2))
const emit = (line: Record<string, unknown>): void => {
  process.stdout.write(`${JSON.stringify(line)}\n`)
}

interface Run {
  code: number
  heldOut: number | undefined
  /** The training loss at each step a poll saw (step → loss). */
  losses: Map<number, number>
  dir: string | undefined
  wallS: number
}

async function run(label: string, o: { steps: number; lr: number; data?: string; initFrom?: string; zo?: { eps: number }; keep?: boolean }): Promise<Run> {
  const lines: string[] = []
  const losses = new Map<number, number>()
  const t0 = performance.now()
  const code = await up({
    nodes: 2,
    spares: 0,
    device: 'cpu',
    steps: o.steps,
    killAt: undefined,
    model: 'mini',
    data: o.data,
    zeropp: false,
    optimizer: 'adamw',
    ...(o.zo === undefined ? {} : { zo: o.zo }),
    lr: o.lr,
    ...(o.initFrom === undefined ? {} : { initFrom: o.initFrom }),
    seed: 1,
    batch: 4,
    seq: 64,
    snapshot: 'off',
    timeoutMs: 1800_000,
    keep: o.keep === true,
    sampleTokens: 0,
    out: l => {
      lines.push(l)
      process.stderr.write(`  [${label}] ${l}\n`)
    },
    progress: l => {
      const m = /step (\d+)\/\d+\s+loss ([\d.]+)/.exec(l)
      if (m !== null) losses.set(Number(m[1]), Number(m[2]))
    }
  })
  const held = lines.map(l => /held-out loss of the final weights: ([\d.]+)/.exec(l)?.[1]).find(x => x !== undefined)
  const dir = lines.map(l => /(\S*zeromesh-up-[A-Za-z0-9]+)/.exec(l)?.[1]).find(x => x !== undefined)
  return { code, heldOut: held === undefined ? undefined : Number(held), losses, dir, wallS: (performance.now() - t0) / 1000 }
}

/** The loss near every 20th step: [the step a poll saw nearest to it, its loss]. */
function curve(losses: Map<number, number>, steps: number): Array<[number, number]> {
  const out: Array<[number, number]> = []
  const seen = [...losses.keys()]
  if (seen.length === 0) return out
  for (let s = 20; s <= steps; s += 20) {
    const at = seen.reduce((best, x) => (Math.abs(x - s) < Math.abs(best - s) ? x : best))
    out.push([at, r4(losses.get(at)!)])
  }
  return out
}

const tmp = mkdtempSync(join(tmpdir(), 'zm-bench-zo-'))
try {
  process.stderr.write(`bench zo: pretrain mini ${PRETRAIN} steps (AdamW), fine-tune ${STEPS} steps on ${DATA}; load ${load1()}\n`)
  const pre = await run('pretrain', { steps: PRETRAIN, lr: 3e-3, keep: true })
  if (pre.code !== 0 || pre.dir === undefined) throw new Error(`pretraining failed (up exited ${pre.code})`)
  const ckpt = join(tmp, 'pretrained.zms')
  await exportModel({ dataDirs: [join(pre.dir, 'w0'), join(pre.dir, 'w1')], model: 'mini', out: ckpt })
  rmSync(pre.dir, { recursive: true, force: true })
  const before = await run('before', { steps: 1, lr: 1e-9, data: DATA, initFrom: ckpt })
  const results: Record<string, Run> = {}
  for (const [name, o] of [
    ['adamw', { lr: ADAMW_LR }],
    ['zo', { lr: ZO_LR, zo: { eps: ZO_EPS } }]
  ] as const) {
    const l0 = load1()
    const r = await run(name, { steps: STEPS, data: DATA, initFrom: ckpt, ...o })
    results[name] = r
    if (r.code !== 0 || r.heldOut === undefined) {
      emit({ bench: 'zo.finetune', optimizer: name, error: `up exited ${r.code}` })
      process.exitCode = 1
      continue
    }
    const adamw = results['adamw']?.heldOut
    emit({
      bench: 'zo.finetune',
      optimizer: name,
      model: 'mini',
      pretrain_steps: PRETRAIN,
      steps: STEPS,
      lr: o.lr,
      ...('zo' in o ? { eps: o.zo.eps } : {}),
      held_out_before: before.heldOut === undefined ? null : r4(before.heldOut),
      held_out_loss: r4(r.heldOut),
      ...(name === 'zo' && adamw !== undefined ? { vs_adamw: r4(r.heldOut / adamw) } : {}),
      ...(before.heldOut === undefined ? {} : { vs_before: r4(r.heldOut / before.heldOut) }),
      train_loss_every_20: curve(r.losses, STEPS),
      wall_s: r4(r.wallS),
      s_per_step: r4(r.wallS / STEPS),
      load: [l0, load1()]
    })
  }
} finally {
  rmSync(tmp, { recursive: true, force: true })
}
