// A few GPT training steps on CUDA match the CPU reference: f32 (tight) and bf16 (loose, through
// the flash-attention path: head size 64, T a multiple of 64).
import { Gpt, GPT_PRESETS } from '../../gpu/gpt.ts'
import { cpu, gpuTest } from './_cuda.ts'
import type { Backend } from '../../gpu/backend.ts'

function batch(n: number, V: number, seed: number): { x: Int32Array; y: Int32Array } {
  const x = new Int32Array(n).map((_, i) => (i * 31 + seed * 7 + ((i * i) % 13)) % V)
  const y = new Int32Array(n).map((_, i) => x[(i + 1) % n]!)
  return { x, y }
}

function train(be: Backend, preset: 'tiny' | 'small', B: number, T: number, dtype: 'f32' | 'bf16', steps: number): number[] {
  const cfg = GPT_PRESETS[preset]
  const model = new Gpt(be, cfg, { B, T, dtype, seed: 1 })
  const { x, y } = batch(B * T, cfg.vocabSize, 3)
  const losses: number[] = []
  for (let s = 1; s <= steps; s++) {
    model.zeroGrad()
    losses.push(model.forward(x, y))
    model.backward()
    model.update({ lr: 1e-3, step: s, weightDecay: 0.1 })
  }
  model.dispose()
  return losses
}

gpuTest('tiny GPT, f32: 4 steps of losses match the CPU (rtol 1e-4)', (t, be) => {
  const want = train(cpu, 'tiny', 2, 16, 'f32', 4)
  const got = train(be, 'tiny', 2, 16, 'f32', 4)
  t.log(`cpu ${want.join(' ')}`)
  t.log(`cuda ${got.join(' ')}`)
  for (let i = 0; i < want.length; i++) t.true(Math.abs(got[i]! - want[i]!) <= 1e-4 * Math.abs(want[i]!), `step ${i + 1}: ${got[i]} vs ${want[i]}`)
  t.true(got[3]! < got[0]!, 'the loss falls')
})

gpuTest('small GPT, bf16 + flash attention: 3 steps within 2% of the CPU f32 losses', (t, be) => {
  const want = train(cpu, 'small', 2, 64, 'f32', 3)
  const got = train(be, 'small', 2, 64, 'bf16', 3)
  t.log(`cpu f32 ${want.join(' ')}`)
  t.log(`cuda bf16 ${got.join(' ')}`)
  for (let i = 0; i < want.length; i++) t.true(Math.abs(got[i]! - want[i]!) <= 0.02 * Math.abs(want[i]!), `step ${i + 1}: ${got[i]} vs ${want[i]}`)
})
