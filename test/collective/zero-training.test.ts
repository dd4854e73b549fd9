import test from 'ava'
import { Rng } from '../../core/index.ts'
import { CpuBackend, Gpt, GPT_PRESETS } from '../../gpu/index.ts'
import { createZeroComm, type ZeroOptions } from '../../mesh/collective/index.ts'
import { firstDiff, memoryGroup, zoneOf } from './helpers.ts'

const P = 4
const STEPS = Number(process.env['ZEROMESH_TRAIN_STEPS'] ?? 200)
const B = 4
const T = 16
const V = GPT_PRESETS.tiny.vocabSize

/** A noisy bigram language: next = (5 * prev + 3) mod V, or a random token with probability 0.3. */
function batch(rng: Rng): { tokens: Int32Array; targets: Int32Array } {
  const tokens = new Int32Array(B * T)
  const targets = new Int32Array(B * T)
  for (let b = 0; b < B; b++) {
    let x = rng.int(0, V)
    for (let t = 0; t <= T; t++) {
      const next = rng.bool(0.3) ? rng.int(0, V) : (5 * x + 3) % V
      if (t < T) tokens[b * T + t] = x
      if (t > 0) targets[b * T + t - 1] = x
      x = next
    }
  }
  return { tokens, targets }
}

/** AdamW on one f32 shard (no weight decay), in f32 storage. */
function adam(p: Float32Array, g: Float32Array, m: Float32Array, v: Float32Array, step: number, lr: number): void {
  const b1 = 0.9
  const b2 = 0.95
  const eps = 1e-8
  const c1 = 1 - b1 ** step
  const c2 = 1 - b2 ** step
  for (let i = 0; i < p.length; i++) {
    m[i] = b1 * m[i]! + (1 - b1) * g[i]!
    v[i] = b2 * v[i]! + (1 - b2) * g[i]! * g[i]!
    p[i] = p[i]! - (lr * (m[i]! / c1)) / (Math.sqrt(v[i]! / c2) + eps)
  }
}

/**
 * Data-parallel ZeRO-3 training of the tiny GPT over 4 ranks in 2 zones: each rank holds
 * only its shard of the master weights and Adam state, gathers the weights for forward and
 * backward, and reduce-scatters the gradients. Returns the eval loss of the final weights.
 */
async function train(options: ZeroOptions, t: import('ava').ExecutionContext): Promise<{ loss: number; wan: Record<string, number> }> {
  const g = await memoryGroup(P, r => zoneOf(r, P, 2), { chunkBytes: 16 * 1024 })
  const be = new CpuBackend()
  const models = g.colls.map(() => new Gpt(be, GPT_PRESETS.tiny, { B, T, dtype: 'f32', seed: 1 }))
  const zs = g.colls.map(c => createZeroComm(c, options))
  const N = models[0]!.layout.length
  const init = models[0]!.getParams()
  const shards = zs.map(z => {
    const s = z.shardOf(N)
    return init.slice(s.start, s.start + s.length)
  })
  const ms = shards.map(s => new Float32Array(s.length))
  const vs = shards.map(s => new Float32Array(s.length))
  const rngs = g.colls.map((_, r) => Rng.fromSeed(77).split(`data-${r}`))
  try {
    for (let step = 1; step <= STEPS; step++) {
      const fwd = await Promise.all(zs.map((z, r) => z.gatherWeights('model', shards[r]!, N, 'forward', { step })))
      const grads = models.map((model, r) => {
        model.setParams(fwd[r]!.data)
        model.zeroGrad()
        const { tokens, targets } = batch(rngs[r]!)
        model.forward(tokens, targets)
        return model
      })
      const bwd = await Promise.all(zs.map((z, r) => z.gatherWeights('model', shards[r]!, N, 'backward', { step })))
      // hpZ (or a flat re-gather) must hand the backward exactly the weights the forward used.
      bwd.forEach((b, r) => {
        if (firstDiff(b.data, fwd[r]!.data) !== -1) t.fail(`backward weights differ at step ${step}`)
      })
      const local = grads.map(model => {
        model.backward()
        return model.getGrads()
      })
      const summed = await Promise.all(zs.map((z, r) => z.reduceGradients('model', local[r]!, { step })))
      summed.forEach((s, r) => {
        const gr = s.data
        for (let i = 0; i < gr.length; i++) gr[i] = gr[i]! / P
        adam(shards[r]!, gr, ms[r]!, vs[r]!, step, 3e-3)
      })
    }
    // Evaluate the final (gathered) weights on a fixed held-out set.
    const final = await Promise.all(zs.map((z, r) => z.gatherWeights('eval', shards[r]!, N, 'forward', { step: STEPS + 1 })))
    const evalRng = Rng.fromSeed(999)
    models[0]!.setParams(final[0]!.data)
    let loss = 0
    for (let i = 0; i < 16; i++) {
      const { tokens, targets } = batch(evalRng)
      loss += models[0]!.forward(tokens, targets) / 16
    }
    const wan: Record<string, number> = {}
    for (const z of zs) for (const [op, b] of Object.entries(z.bytes())) wan[op] = (wan[op] ?? 0) + b.wan
    return { loss, wan }
  } finally {
    for (const m of models) m.dispose()
    await g.stop()
  }
}

test('tiny GPT, 4 ranks in 2 zones: ZeRO++ (qwZ int8 + hpZ + qgZ int4) ends within 1% of flat ZeRO-3 loss', async t => {
  const t0 = performance.now()
  const flat = await train({}, t)
  const zpp = await train({ qwZ: true, hpZ: true, qgZ: true }, t)
  const rel = Math.abs(zpp.loss - flat.loss) / flat.loss
  t.log(
    `steps ${STEPS}: flat ZeRO-3 loss ${flat.loss.toFixed(4)}, ZeRO++ loss ${zpp.loss.toFixed(4)}, relative difference ${(100 * rel).toFixed(3)}% (${((performance.now() - t0) / 1000).toFixed(1)} s)`
  )
  t.log(`cross-zone bytes: flat ${JSON.stringify(flat.wan)}, ZeRO++ ${JSON.stringify(zpp.wan)}`)
  t.true(flat.loss < Math.log(V) - 1, `flat training learned something (loss ${flat.loss})`)
  t.true(rel < 0.01, `ZeRO++ loss ${zpp.loss} vs flat ${flat.loss}`)
  t.is(zpp.wan['hpz_gather'], 0, 'no backward weight bytes cross zones')
})
