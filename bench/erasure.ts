// Reed-Solomon encode / reconstruct at 1 MiB fragments. Bytes counted are data bytes (k x
// fragment). Baselines in the same run: memcpy of the stripe, the package's own JS wrapper
// (encode only: its reconstruct corrupts the wasm heap, see codec/erasure.ts), and for 'simd'
// the 'wasm' coder (the same Rust module through our binding).
import { readFileSync } from 'node:fs'
import { createRequire } from 'node:module'
import { ReedSolomonErasure } from '@subspace/reed-solomon-erasure.wasm'
import { createErasureCoder, type ErasureCoderName } from '../codec/index.ts'
import { timeIt, report, filled } from './harness.ts'

const MiB = 1024 * 1024
const size = Number(process.env['BENCH_FRAGMENT_BYTES'] ?? MiB)
const impls: ErasureCoderName[] = ['wasm', 'simd']
const require = createRequire(import.meta.url)
const wrapper = ReedSolomonErasure.fromBytes(readFileSync(require.resolve('@subspace/reed-solomon-erasure.wasm/dist/reed_solomon_erasure_bg.wasm')))

for (const [k, m] of [
  [4, 2],
  [8, 4],
  [10, 4]
] as const) {
  const data = Array.from({ length: k }, (_, i) => filled(size, i + 1))
  const bytes = k * size
  const stripe = new Uint8Array((k + m) * size)
  const memcpy = { impl: 'memcpy', seconds: timeIt(() => data.forEach((d, i) => stripe.set(d, i * size))) }
  report({ bench: 'erasure.copy', impl: 'memcpy', k, m, fragment: size, bytes, seconds: memcpy.seconds })
  const pkg = {
    impl: 'package JS wrapper',
    seconds: timeIt(() => {
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
    const enc = { impl, seconds: timeIt(() => coder.encode(data)) }
    report({ bench: 'erasure.encode', impl, k, m, fragment: size, bytes, seconds: enc.seconds }, base?.encode ?? pkg)
    // Worst case for a systematic code: m data fragments lost.
    const frags = [...data, ...parity].map((f, i) => (i < m ? undefined : f))
    const rec = { impl, seconds: timeIt(() => coder.reconstruct(frags)) }
    report({ bench: 'erasure.reconstruct', impl, k, m, lost: m, fragment: size, bytes, seconds: rec.seconds }, base?.reconstruct ?? pkg)
    base ??= { encode: enc, reconstruct: rec }
  }
}
