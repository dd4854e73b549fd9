// `--offload cpu` against the optimizer on the device (node/train/offload.ts), one rank, in
// one process: the real Trainer on an in-memory mesh (test/helpers/train-mesh.ts), on the
// backend of BENCH_OFFLOAD_DEVICE (cuda on the GPU host; cpu anywhere).
//
// (a) `offload.fit`: under a device memory cap (--device-memory; BENCH_OFFLOAD_CAP_GIB, default
//     8 on cuda, 0.05 on cpu) the largest GPT of a ladder (GPT-2's width and heads, more
//     layers: 12, 24, 48, 96, 144, 192 on cuda; `mini`'s width with 2-64 layers on cpu) that
//     trains two steps, with the optimizer on the device and offloaded. Parameters and the
//     device bytes at peak (CPU backend) per rung.
// (b) `offload.speed`: tokens per second of the same model both ways at a size both fit
//     (GPT-2 124M shape on cuda, batch BENCH_OFFLOAD_B x 1024; `small`'s shape on cpu), the
//     mean of the steps past the first three. Goal (issue 21): offloaded >= 0.8x.
// One JSON object per line on stdout and in $OUT/offload.jsonl when $OUT is set.
import { appendFileSync } from 'node:fs'
import { join } from 'node:path'
import { CpuBackend, createBackend, defaultOptimizerThreads, GPT_PRESETS, gptLayout, type Backend, type GptConfig } from '../gpu/index.ts'
import type { TrainConfig, TrainStatus } from '../node/index.ts'
import { base, trainMesh } from '../test/helpers/train-mesh.ts'
import { envNumber } from './harness.ts'

const device = (process.env['BENCH_OFFLOAD_DEVICE'] ?? 'cpu') as 'cpu' | 'cuda'
const cuda = device === 'cuda'
const capBytes = Math.round(envNumber('BENCH_OFFLOAD_CAP_GIB', cuda ? 8 : 0.05) * 2 ** 30)
const B = envNumber('BENCH_OFFLOAD_B', cuda ? 8 : 4)
const T = cuda ? 1024 : 64
const STEPS = envNumber('BENCH_OFFLOAD_STEPS', 10)
const threads = envNumber('BENCH_OFFLOAD_THREADS', defaultOptimizerThreads())
const out = process.env['OUT']
const emit = (line: Record<string, unknown>): void => {
  const s = JSON.stringify(line)
  process.stdout.write(s + '\n')
  if (out !== undefined) appendFileSync(join(out, 'offload.jsonl'), s + '\n')
}

const shape = (nLayer: number): GptConfig => {
  const p = cuda ? GPT_PRESETS['gpt2-124m'] : GPT_PRESETS.mini
  return { maxT: T, nLayer, nHead: p.nHead, C: p.C, vocabSize: cuda ? 50257 : 256, paddedVocabSize: cuda ? 50304 : 256 }
}
const paramsOf = (m: GptConfig): number => gptLayout(m).length

async function backend(cap: number | undefined): Promise<Backend> {
  if (!cuda) return new CpuBackend(cap === undefined ? {} : { deviceMemoryBytes: cap })
  return await createBackend('cuda', cap === undefined ? {} : { deviceMemoryBytes: cap })
}

/** One rank training `model` for `steps`: whether it fit, its per-step tokens/s, the device's peak bytes (cpu). */
async function train(
  model: GptConfig,
  offload: boolean,
  steps: number,
  cap: number | undefined
): Promise<{ ok: boolean; error?: string; tps: number[]; peak?: number }> {
  const be = await backend(cap)
  const tps: number[] = []
  const cfg: TrainConfig = {
    ...base,
    model,
    B,
    T,
    steps,
    lr: 3e-4,
    worldSize: 1,
    dtype: cuda ? 'bf16' : 'f32',
    ...(offload ? { offload: { threads } } : {})
  }
  try {
    const r = await trainMesh(1, cfg, { backendOf: () => be, onStep: (_c, _i, s: TrainStatus) => tps.push(s.tokensPerS ?? 0) })
    const peak = be instanceof CpuBackend ? be.peakAllocatedBytes : undefined
    const err = r.errors[0]
    return { ok: err === undefined, ...(err === undefined ? {} : { error: err.message.slice(0, 200) }), tps, ...(peak === undefined ? {} : { peak }) }
  } finally {
    be.dispose()
  }
}

const ladder = cuda ? [12, 24, 48, 96, 144, 192] : [2, 4, 8, 16, 32, 64]
for (const offload of [false, true]) {
  let largest: number | undefined
  for (const nLayer of ladder) {
    const m = shape(nLayer)
    const r = await train(m, offload, 2, capBytes)
    emit({
      bench: 'offload.fit',
      device,
      offload,
      capBytes,
      nLayer,
      params: paramsOf(m),
      fits: r.ok,
      ...(r.peak === undefined ? {} : { peakBytes: r.peak }),
      ...(r.error === undefined ? {} : { error: r.error })
    })
    if (!r.ok) break
    largest = paramsOf(m)
  }
  emit({ bench: 'offload.fit.largest', device, offload, capBytes, params: largest ?? 0 })
}

const speedModel: GptConfig = cuda ? shape(12) : { ...GPT_PRESETS.small, maxT: T, vocabSize: 256, paddedVocabSize: 256 }
const rates: Record<string, number> = {}
for (const offload of [false, true]) {
  const r = await train(speedModel, offload, STEPS, undefined)
  const past = r.tps.slice(3)
  const mean = past.length === 0 ? 0 : past.reduce((a, x) => a + x, 0) / past.length
  rates[String(offload)] = mean
  emit({
    bench: 'offload.speed',
    device,
    offload,
    threads,
    params: paramsOf(speedModel),
    B,
    T,
    steps: STEPS,
    tokensPerS: Math.round(mean),
    ...(r.error === undefined ? {} : { error: r.error })
  })
}
emit({ bench: 'offload.speed.ratio', device, threads, ratio: Number((rates['true']! / rates['false']!).toFixed(3)), goal: 0.8 })
