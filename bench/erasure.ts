// Reed-Solomon encode / reconstruct at 1 MiB fragments. Bytes counted are data bytes (k x
// fragment). Baselines in the same run: memcpy of the stripe, the package's own JS wrapper
// (encode only: its reconstruct corrupts the wasm heap, see codec/erasure.ts), and for 'simd'
// the 'wasm' coder (the same Rust module through our binding). 'simd in place' is the simd
// coder on a SimdStripe (fragments already in its wasm memory: no copies in or out). Each
// figure is the best of BENCH_REPS (default 3) medians, as the machines are shared and noisy.
//
// BENCH_ERASURE_GPU=1 (on a CUDA host) measures the CUDA coder instead, on stripes in device
// memory (BENCH_GPU_FRAGMENT_BYTES, default 32 MiB fragments), against a device-to-device copy
// of the data bytes in the same run; device time from CUDA events, best of BENCH_REPS.
import { readFileSync } from 'node:fs'
import { createRequire } from 'node:module'
import { ReedSolomonErasure } from '@subspace/reed-solomon-erasure.wasm'
import { createErasureCoder, createSimdErasureCoder, type ErasureCoderName } from '../codec/index.ts'
import { timeIt, report, filled, envNumber } from './harness.ts'
import type { CudaBackend } from '../gpu/index.ts'

const MiB = 1024 * 1024
const size = Number(process.env['BENCH_FRAGMENT_BYTES'] ?? MiB)
const impls: ErasureCoderName[] = ['wasm', 'simd']
const reps = Math.max(1, envNumber('BENCH_REPS', 3))
const best = (fn: () => void): number => Math.min(...Array.from({ length: reps }, () => timeIt(fn)))

const CODES = [
  [4, 2],
  [8, 4],
  [10, 4]
] as const

function cpuBench(): void {
  const require = createRequire(import.meta.url)
  const wrapper = ReedSolomonErasure.fromBytes(readFileSync(require.resolve('@subspace/reed-solomon-erasure.wasm/dist/reed_solomon_erasure_bg.wasm')))
  for (const [k, m] of CODES) {
    const data = Array.from({ length: k }, (_, i) => filled(size, i + 1))
    const bytes = k * size
    const stripe = new Uint8Array((k + m) * size)
    const memcpy = { impl: 'memcpy', seconds: best(() => data.forEach((d, i) => stripe.set(d, i * size))) }
    report({ bench: 'erasure.copy', impl: 'memcpy', k, m, fragment: size, bytes, seconds: memcpy.seconds })
    const pkg = {
      impl: 'package JS wrapper',
      seconds: best(() => {
        data.forEach((d, i) => stripe.set(d, i * size))
        wrapper.encode(stripe, k, m)
      })
    }
    report({ bench: 'erasure.encode', impl: pkg.impl, k, m, fragment: size, bytes, seconds: pkg.seconds }, memcpy)
    // The wasm coder (our binding of the same module) is the baseline the others are measured against.
    let base: { encode: { impl: string; seconds: number }; reconstruct: { impl: string; seconds: number } } | undefined
    for (const impl of impls) {
      const coder = createErasureCoder({ k, m, impl })
      const parity = coder.encode(data)
      const enc = { impl, seconds: best(() => coder.encode(data)) }
      report({ bench: 'erasure.encode', impl, k, m, fragment: size, bytes, seconds: enc.seconds }, base?.encode ?? pkg)
      // Worst case for a systematic code: m data fragments lost.
      const frags = [...data, ...parity].map((f, i) => (i < m ? undefined : f))
      const rec = { impl, seconds: best(() => coder.reconstruct(frags)) }
      report({ bench: 'erasure.reconstruct', impl, k, m, lost: m, fragment: size, bytes, seconds: rec.seconds }, base?.reconstruct ?? pkg)
      base ??= { encode: enc, reconstruct: rec }
    }
    const inPlace = createSimdErasureCoder({ k, m }).stripe(size)
    data.forEach((d, i) => inPlace.fragments[i]!.set(d))
    const present = inPlace.fragments.map((_, i) => i >= m)
    const enc = best(() => inPlace.encode())
    report({ bench: 'erasure.encode', impl: 'simd in place', k, m, fragment: size, bytes, seconds: enc }, base?.encode)
    const rec = best(() => inPlace.reconstruct(present))
    report({ bench: 'erasure.reconstruct', impl: 'simd in place', k, m, lost: m, fragment: size, bytes, seconds: rec }, base?.reconstruct)
  }
}

async function gpuBench(): Promise<void> {
  const { createBackend, createCudaErasureCoder } = await import('../gpu/index.ts')
  const be = (await createBackend('cuda')) as CudaBackend
  process.stderr.write(`bench erasure: ${be.description}\n`)
  const frag = envNumber('BENCH_GPU_FRAGMENT_BYTES', 32 * MiB)
  const iters = 10
  /** Best of `reps` device times (CUDA events) of `iters` calls, in seconds per call. */
  const deviceBest = (fn: () => void): number => {
    fn()
    be.synchronize()
    return Math.min(...Array.from({ length: reps }, () => be.timeMs(() => Array.from({ length: iters }, fn)) / 1000 / iters))
  }
  for (const [k, m] of CODES) {
    const bytes = k * frag
    const stripe = be.alloc('u8', [(k + m) * frag])
    const copy = be.alloc('u8', [bytes])
    const host = new Uint8Array((k + m) * frag)
    for (let i = 0; i < k; i++) host.set(filled(frag, i + 1), i * frag)
    be.write(stripe, host)
    const memcpy = { impl: 'device memcpy', seconds: deviceBest(() => be.copyBytes(copy, stripe, bytes)) }
    report({ bench: 'erasure.copy', impl: memcpy.impl, k, m, fragment: frag, bytes, seconds: memcpy.seconds })
    const coder = await createCudaErasureCoder(be, { k, m })
    report({ bench: 'erasure.encode', impl: 'cuda', k, m, fragment: frag, bytes, seconds: deviceBest(() => coder.encode(stripe, frag)) }, memcpy)
    // Worst case for a systematic code: m data fragments lost.
    const present = Array.from({ length: k + m }, (_, i) => i >= m)
    report(
      { bench: 'erasure.reconstruct', impl: 'cuda', k, m, lost: m, fragment: frag, bytes, seconds: deviceBest(() => coder.reconstruct(stripe, frag, present)) },
      memcpy
    )
    be.free(stripe)
    be.free(copy)
  }
  be.dispose()
}

if (process.env['BENCH_ERASURE_GPU'] === '1') await gpuBench()
else cpuBench()
