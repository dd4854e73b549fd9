// The mesh on a GPU against the same GPU alone (GPU host, one device run): GPT-2 124M, batch
// 16 x 1024 per rank, bf16 activations, f32 master weights, AdamW.
//
// (a) `mesh_gpu.solo` (the baseline): one process, the model as one full replica on the CUDA
//     backend, forward / backward / fused AdamW (bench/gpu.ts's step), tokens per second.
// (b) `mesh_gpu.up`: `zeromesh up --device cuda --model gpt2-124m --batch 16 --seq 1024` through
//     up() in this process, one configuration after another on the same GPU:
//       - 1 rank + 3 spares, erasure-coded snapshots (2+1) after every step (the goal: >= 0.95x solo);
//       - the same with snapshots off (what the snapshots cost);
//       - 2 ranks + 2 spares sharing the one GPU;
//       - with 2 or more GPUs: 2 ranks on 2 GPUs (goal >= 1.8x one GPU alone).
//     Throughput: committed steps per second fitted over the polls past the warm-up, times the
//     tokens of all ranks per step; rank 0's mean step time by phase (compute, waiting on the
//     wire, optimizer, snapshot) from its status.
// The data is a synthetic llm.c token file over GPT-2's vocabulary (so the model is the real
// 124M shape, 50257 tokens padded to 50304). One JSON object per line on stdout and in
// $OUT/mesh-gpu.jsonl when $OUT is set. Knobs: MESH_GPU_STEPS (default 40), MESH_GPU_WARMUP (10),
// MESH_GPU_CONFIGS (comma list of names below), MESH_GPU_B / MESH_GPU_T, MESH_GPU_KEEP=1 (keep the
// runs' worker logs).
import { appendFileSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { countGpus, type UpPoll, up } from '../cli/index.ts'
import { Gpt, GPT_PRESETS, createBackend } from '../gpu/index.ts'
import type { StepPhases } from '../node/index.ts'
import { replicaStep, syntheticBatch } from './_gpt2.ts'
import { stepsPerSecond } from './_up-fit.ts'

const B = Number(process.env['MESH_GPU_B'] ?? 16)
const T = Number(process.env['MESH_GPU_T'] ?? 1024)
const STEPS = Number(process.env['MESH_GPU_STEPS'] ?? 40)
const WARMUP = Number(process.env['MESH_GPU_WARMUP'] ?? 10)
const out = process.env['OUT']
const r4 = (x: number): number => Number(x.toPrecision(4))
const emit = (line: Record<string, unknown>): void => {
  const s = JSON.stringify(line)
  process.stdout.write(s + '\n')
  if (out !== undefined) appendFileSync(join(out, 'mesh-gpu.jsonl'), s + '\n')
}

/** A synthetic llm.c token file: GPT-2's vocabulary, seeded. */
function tokenFile(dir: string, count: number): string {
  const buf = Buffer.alloc(1024 + 2 * count)
  buf.writeInt32LE(20240520, 0)
  buf.writeInt32LE(1, 4)
  buf.writeInt32LE(count, 8)
  let s = 12345
  for (let i = 0; i < count; i++) {
    s = (s * 1103515245 + 12345) >>> 0
    buf.writeUInt16LE(s % 50257, 1024 + 2 * i)
  }
  const file = join(dir, 'tokens.bin')
  writeFileSync(file, buf)
  return file
}

/** (a) One process, one full replica: tokens per second over STEPS timed steps after WARMUP. */
async function solo(): Promise<number> {
  const be = await createBackend('cuda')
  const cfg = GPT_PRESETS['gpt2-124m']
  const model = new Gpt(be, cfg, { B, T, dtype: 'bf16', seed: 1 })
  const { x, y } = syntheticBatch(B, T, cfg.vocabSize, 777)
  const trainStep = replicaStep(model, x, y)
  for (let i = 0; i < WARMUP; i++) trainStep()
  be.synchronize()
  const t0 = performance.now()
  for (let i = 0; i < STEPS; i++) trainStep()
  be.synchronize()
  const ms = (performance.now() - t0) / STEPS
  model.dispose()
  be.dispose()
  const tokensPerS = (B * T) / (ms / 1000)
  emit({
    bench: 'mesh_gpu.solo',
    impl: 'one process, full replica (baseline)',
    model: 'gpt2-124m',
    B,
    T,
    steps: STEPS,
    step_ms: r4(ms),
    tokens_per_s: Math.round(tokensPerS)
  })
  return tokensPerS
}

/** Polls since the run last went back in steps (a recovery rolls back to its snapshot): one monotonic stretch. */
function lastStretch(polls: UpPoll[]): UpPoll[] {
  let from = 0
  for (let i = 1; i < polls.length; i++) if (polls[i]!.step < polls[i - 1]!.step) from = i
  return polls.slice(from)
}

interface Config {
  name: string
  nodes: number
  spares: number
  snapshot: string
  /** GPUs the configuration needs (skipped with fewer). */
  gpus: number
  goal?: { vs: 'solo'; ratio: number }
}

const CONFIGS: Config[] = [
  { name: '1-rank-3-spares', nodes: 1, spares: 3, snapshot: '2+1', gpus: 1, goal: { vs: 'solo', ratio: 0.95 } },
  { name: '1-rank-3-spares-nosnap', nodes: 1, spares: 3, snapshot: 'off', gpus: 1 },
  { name: '2-ranks-1-gpu', nodes: 2, spares: 2, snapshot: '2+1', gpus: 1 },
  { name: '2-ranks-2-gpus', nodes: 2, spares: 2, snapshot: '2+1', gpus: 2, goal: { vs: 'solo', ratio: 1.8 } }
]

async function meshRun(c: Config, data: string, soloTokensPerS: number, gpus: number): Promise<void> {
  if (gpus < c.gpus) {
    emit({ bench: 'mesh_gpu.up', impl: c.name, skipped: `needs ${c.gpus} GPUs, this host has ${gpus}` })
    return
  }
  const polls: UpPoll[] = []
  const lines: string[] = []
  const t0 = performance.now()
  const code = await up({
    nodes: c.nodes,
    spares: c.spares,
    device: 'cuda',
    steps: STEPS,
    killAt: undefined,
    model: 'gpt2-124m',
    data,
    zeropp: false,
    seed: 1,
    batch: B,
    seq: T,
    timeoutMs: 540_000,
    keep: process.env['MESH_GPU_KEEP'] === '1',
    snapshot: c.snapshot,
    pollMs: 100,
    out: l => {
      lines.push(l)
      process.stderr.write(`  [${c.name}] ${l}\n`)
    },
    progress: () => {},
    onPoll: p => polls.push(p)
  }).catch((err: unknown) => {
    lines.push(`up failed: ${err instanceof Error ? err.message : String(err)}`)
    return 1
  })
  if (code !== 0) {
    emit({ bench: 'mesh_gpu.up', impl: c.name, error: `zeromesh up exited ${code}`, last: lines.slice(-5) })
    return
  }
  let rate: number
  try {
    rate = stepsPerSecond(lastStretch(polls), WARMUP, STEPS, 'MESH_GPU_STEPS').rate
  } catch (err) {
    emit({ bench: 'mesh_gpu.up', impl: c.name, error: (err as Error).message, rolled_back: lastStretch(polls).length < polls.length })
    return
  }
  const tokensPerS = rate * c.nodes * B * T
  const phases: StepPhases | undefined = polls.findLast(p => p.phases !== undefined)?.phases
  const ratio = tokensPerS / soloTokensPerS
  emit({
    bench: 'mesh_gpu.up',
    impl: c.name,
    ranks: c.nodes,
    spares: c.spares,
    gpus: c.gpus,
    snapshot: c.snapshot,
    snapshot_every: 1,
    model: 'gpt2-124m',
    B,
    T,
    steps: STEPS,
    warmup: WARMUP,
    step_ms: r4(1000 / rate),
    tokens_per_s: Math.round(tokensPerS),
    baseline: 'mesh_gpu.solo',
    ratio_to_solo: r4(ratio),
    ...(c.goal === undefined ? {} : { goal_ratio: c.goal.ratio, meets_goal: ratio >= c.goal.ratio }),
    rolled_back: lastStretch(polls).length < polls.length,
    rank0_phase_ms: phases === undefined ? undefined : Object.fromEntries(Object.entries(phases).map(([k, v]) => [k, r4(v)])),
    wall_s: r4((performance.now() - t0) / 1000),
    summary: lines.filter(l => l.startsWith('parameter memory') || l.startsWith('step time'))
  })
}

const dir = mkdtempSync(join(tmpdir(), 'zm-mesh-gpu-'))
try {
  const data = tokenFile(dir, 4 * 1024 * 1024)
  const pick = process.env['MESH_GPU_CONFIGS']?.split(',').map(s => s.trim())
  const gpus = countGpus()
  const base = await solo()
  for (const c of CONFIGS.filter(x => pick === undefined || pick.includes(x.name))) await meshRun(c, data, base, gpus)
} finally {
  rmSync(dir, { recursive: true, force: true })
}
