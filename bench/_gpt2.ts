// The single-process GPT-2 training step the GPU benchmarks (gpu, mesh-gpu) time.
import type { Gpt } from '../gpu/index.ts'

/** A seeded batch of `B·T` token ids below `vocab`, each target the next input (wrapping). */
export function syntheticBatch(B: number, T: number, vocab: number, seed: number): { x: Int32Array; y: Int32Array } {
  const x = new Int32Array(B * T)
  const y = new Int32Array(B * T)
  let s = seed
  for (let i = 0; i < B * T; i++) {
    s = (s * 1103515245 + 12345) >>> 0
    x[i] = s % vocab
  }
  for (let i = 0; i < B * T; i++) y[i] = x[(i + 1) % (B * T)]!
  return { x, y }
}

/** One full-replica training step of `model` on (x, y) per call: forward, backward, fused AdamW. Returns the loss. */
export function replicaStep(model: Gpt, x: Int32Array, y: Int32Array): () => number {
  let step = 0
  return () => {
    step++
    model.zeroGrad()
    const loss = model.forward(x, y)
    model.backward()
    model.update({ lr: 3e-4, step, weightDecay: 0.1 })
    return loss
  }
}
