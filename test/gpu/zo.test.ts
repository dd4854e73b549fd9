import { zoSeed } from '../../gpu/zo.ts'
import { cpu, gpuTest, rand, up } from './_cuda.ts'

// Zeroth-order training replays each step's perturbation on every rank: the CUDA perturbation
// must be the CPU's bit for bit, bf16 copy included, at any offset of the flat layout.
gpuTest('addSigns (seed 41, 5 steps, an offset across 2^32): bit-identical to the CPU reference, bf16 copy too', (t, be) => {
  const n = 100_003
  const p = rand(n, 41)
  const offset = 2 ** 32 - 50_000
  const results = [cpu, be].map(x => {
    const tp = up(x, 'f32', p)
    const low = x.alloc('bf16', [n])
    for (let s = 0; s < 5; s++) {
      const seed = zoSeed(41, s)
      x.addSigns(tp, 1e-3, seed, offset, low)
      x.addSigns(tp, -2e-3, seed, offset, low)
      x.addSigns(tp, 1e-3 * (s + 1), seed, offset, low)
    }
    const out = { w: new Uint8Array((x.read(tp) as Float32Array).buffer.slice(0)), low: new Uint8Array((x.read(low) as Uint16Array).buffer.slice(0)) }
    x.free(tp)
    x.free(low)
    return out
  })
  t.deepEqual(results[1]!.w, results[0]!.w, 'params')
  t.deepEqual(results[1]!.low, results[0]!.low, 'bf16 copy')
})
