// GPU benchmark (CUDA backend): GPT-2 124M training throughput (B=16, T=1024, bf16 activations,
// f32 master weights, AdamW) and the quantizers' bandwidth against a device-to-device copy.
// One JSON object per line on stdout, and in $OUT/gpu.jsonl when $OUT is set. For the ratio to
// PyTorch eager / torch.compile in the same run, run a PyTorch GPT-2 124M baseline in the same
// device job and pass its JSON lines as $BASELINE_JSONL: lines with anchor 'pytorch-gpt2-124m',
// tokens_per_s and compile (true for torch.compile) are read.
//
// FLOPs per token (the baseline script's formula, so MFU and TFLOP/s compare like for like):
//   6·N_params + 12·L·C·T   (weights fwd+bwd, plus QKᵀ and PV fwd+bwd without the causal half)
// MFU divides by the H200's dense bf16 peak, 989 TFLOP/s.
import { appendFileSync, existsSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import { createBackend, Gpt, GPT_PRESETS, type Backend, type CudaBackend, type GptConfig } from '../gpu/index.ts'
import { replicaStep, syntheticBatch } from './_gpt2.ts'

const PEAK_BF16_FLOPS = 989e12
const out = process.env['OUT']
const emit = (line: Record<string, unknown>): void => {
  const s = JSON.stringify(line)
  process.stdout.write(s + '\n')
  if (out !== undefined) appendFileSync(join(out, 'gpu.jsonl'), s + '\n')
}
const r4 = (x: number): number => Number(x.toPrecision(4))

const be = (await createBackend('cuda')) as CudaBackend
emit({ bench: 'gpu.device', description: be.description })

const t0 = performance.now()
be.warmup()
emit({ bench: 'gpu.compile', ms: r4(performance.now() - t0), ...be.compileStats })

// ---- quantizer bandwidth vs cuMemcpyDtoD ---------------------------------------------------
{
  const n = 1 << 28 // 1 GiB of f32
  const src = be.alloc('f32', [n])
  const host = new Float32Array(1 << 20)
  for (let i = 0; i < host.length; i++) host[i] = Math.sin(i) * 3
  for (let off = 0; off < n; off += host.length) be.write(src, host, off)
  const dst = be.alloc('f32', [n])
  const reps = 10
  const timeOp = (fn: () => void): number => {
    fn()
    return (
      be.timeMs(() => {
        for (let i = 0; i < reps; i++) fn()
      }) /
      reps /
      1000
    )
  }
  const copyS = timeOp(() => be.copyBytes(dst, src, n * 4))
  const copyGbps = (2 * n * 4) / copyS / 1e9
  emit({ bench: 'gpu.memcpy_dtod', bytes: n * 4, seconds: r4(copyS), gbps: r4(copyGbps), note: 'read + write bytes per second' })
  for (const k of ['quant_fast', 'dequant_fast']) emit({ bench: 'gpu.kernel', kernel: k, ...be.kernelInfo(k) })
  for (const bits of [8, 4] as const) {
    for (const blockSize of [256, 1024, 2048, 4096]) {
      const blocks = Math.ceil(n / blockSize)
      const codeBytes = bits === 8 ? n : n / 2
      const codes = be.alloc('u8', [codeBytes])
      const scales = be.alloc('f32', [blocks])
      const moved = n * 4 + codeBytes + blocks * 4
      const qs = timeOp(() => be.quantize(codes, scales, src, bits, blockSize))
      emit({
        bench: 'gpu.quantize',
        bits,
        blockSize,
        elements: n,
        bytes: moved,
        seconds: r4(qs),
        gbps: r4(moved / qs / 1e9),
        fractionOfCopy: r4(moved / qs / 1e9 / copyGbps)
      })
      for (const accumulate of [false, true]) {
        const dmoved = n * 4 * (accumulate ? 2 : 1) + codeBytes + blocks * 4
        const ds = timeOp(() => be.dequantize(dst, codes, scales, bits, blockSize, accumulate))
        emit({
          bench: 'gpu.dequantize',
          bits,
          blockSize,
          accumulate,
          elements: n,
          bytes: dmoved,
          seconds: r4(ds),
          gbps: r4(dmoved / ds / 1e9),
          fractionOfCopy: r4(dmoved / ds / 1e9 / copyGbps)
        })
      }
      be.free(codes)
      be.free(scales)
    }
  }
  be.synchronize()
  be.free(src)
  be.free(dst)
}

// ---- GPT-2 124M training step ----------------------------------------------------------------
// (--quant-only stops after the quantizers.)
if (process.argv.includes('--quant-only')) process.exit(0)
{
  const cfg = GPT_PRESETS['gpt2-124m']
  const B = Number(process.env['GPU_BENCH_B'] ?? 16)
  const T = Number(process.env['GPU_BENCH_T'] ?? 1024)
  const steps = Number(process.env['GPU_BENCH_STEPS'] ?? 20)
  const model = new Gpt(be, cfg, { B, T, dtype: 'bf16', seed: 1 })
  const nParams = model.layout.length
  const { x, y } = syntheticBatch(B, T, cfg.vocabSize, 12345)
  let step = 0
  let loss = 0
  const replica = replicaStep(model, x, y)
  const trainStep = (): void => {
    step++
    loss = replica()
  }
  for (let i = 0; i < 5; i++) trainStep()
  be.synchronize()
  // Phase breakdown of one step, on device time.
  const fwd = be.timeMs(() => {
    model.zeroGrad()
    loss = model.forward(x, y)
  })
  const bwd = be.timeMs(() => model.backward())
  const upd = be.timeMs(() => {
    step++
    model.update({ lr: 3e-4, step, weightDecay: 0.1 })
  })
  emit({ bench: 'gpu.gpt2_124m.phases', fwd_ms: r4(fwd), bwd_ms: r4(bwd), adamw_ms: r4(upd) })
  if (process.env['GPU_BENCH_PROFILE'] === '1') profileStep(cfg, B, T, x, y)
  const t1 = performance.now()
  for (let i = 0; i < steps; i++) trainStep()
  be.synchronize()
  const dt = (performance.now() - t1) / 1000 / steps
  const tokPerS = (B * T) / dt
  const flopsPerToken = 6 * nParams + 12 * cfg.nLayer * cfg.C * T
  const line: Record<string, unknown> = {
    bench: 'gpu.gpt2_124m.train',
    impl: 'zeromesh-cuda',
    dtype: 'bf16',
    B,
    T,
    params: nParams,
    steps,
    step_ms: r4(dt * 1000),
    tokens_per_s: Math.round(tokPerS),
    tflops: r4((flopsPerToken * tokPerS) / 1e12),
    mfu: r4((flopsPerToken * tokPerS) / PEAK_BF16_FLOPS),
    loss: r4(loss),
    flops_per_token: 'flops/token = 6*N_params + 12*L*C*T'
  }
  const basePath = process.env['BASELINE_JSONL']
  if (basePath !== undefined && existsSync(basePath)) {
    for (const l of readFileSync(basePath, 'utf8').split('\n')) {
      if (!l.startsWith('{')) continue
      const b = JSON.parse(l) as { anchor?: string; compile?: boolean; tokens_per_s?: number }
      if (b.anchor !== 'pytorch-gpt2-124m' || b.tokens_per_s === undefined) continue
      line[b.compile === true ? 'vs_torch_compile' : 'vs_torch_eager'] = r4(tokPerS / b.tokens_per_s)
      line[b.compile === true ? 'torch_compile_tokens_per_s' : 'torch_eager_tokens_per_s'] = b.tokens_per_s
    }
  }
  emit(line)
  model.dispose()
}
be.dispose()

/**
 * GPU_BENCH_PROFILE=1: one training step through a proxy that brackets every backend call with
 * device events (each call is synchronized, so small ops include launch latency), aggregated
 * per op and size, biggest first.
 */
function profileStep(cfg: GptConfig, B: number, T: number, x: Int32Array, y: Int32Array): void {
  const skip = new Set(['alloc', 'view', 'free', 'timeMs', 'kind', 'description'])
  const totals = new Map<string, { ms: number; calls: number }>()
  const proxy = new Proxy(be, {
    get(target, prop, recv) {
      const v = Reflect.get(target, prop, recv) as unknown
      if (typeof v !== 'function' || typeof prop !== 'string' || skip.has(prop))
        return typeof v === 'function' ? (v as (...a: unknown[]) => unknown).bind(target) : v
      return (...args: unknown[]) => {
        let ret: unknown
        const ms = target.timeMs(() => {
          ret = (v as (...a: unknown[]) => unknown).apply(target, args)
        })
        const key = `${prop}(${args.filter(a => typeof a === 'number').join(',')})`
        const e = totals.get(key) ?? { ms: 0, calls: 0 }
        e.ms += ms
        e.calls++
        totals.set(key, e)
        return ret
      }
    }
  }) as unknown as Backend
  const m = new Gpt(proxy, cfg, { B, T, dtype: 'bf16', seed: 1 })
  m.zeroGrad()
  m.forward(x, y)
  m.backward()
  m.update({ lr: 3e-4, step: 1, weightDecay: 0.1 })
  totals.clear()
  m.zeroGrad()
  m.forward(x, y)
  m.backward()
  m.update({ lr: 3e-4, step: 2, weightDecay: 0.1 })
  const rows = [...totals.entries()].sort((a, b) => b[1].ms - a[1].ms)
  const total = rows.reduce((s, r) => s + r[1].ms, 0)
  emit({ bench: 'gpu.gpt2_124m.profile_total', ms: r4(total) })
  for (const [op, e] of rows.slice(0, 30)) emit({ bench: 'gpu.gpt2_124m.profile', op, calls: e.calls, ms: r4(e.ms), us_per_call: r4((e.ms * 1000) / e.calls) })
  m.dispose()
}
