import test from 'ava'
import { Rng } from '../../core/index.ts'
import { CpuBackend, Gpt, GPT_PRESETS, gptBuckets, gptLayout, initGptParams, initGptParamsYielding, type GptConfig, type Tensor } from '../../gpu/index.ts'
import { seededRng } from '../helpers/seed.ts'

/** A fixed batch of random token sequences: targets are the inputs shifted by one. */
function batch(rng: Rng, B: number, T: number, V: number): { tokens: Int32Array; targets: Int32Array } {
  const tokens = new Int32Array(B * T)
  const targets = new Int32Array(B * T)
  for (let b = 0; b < B; b++) {
    const seq = Array.from({ length: T + 1 }, () => rng.int(0, V))
    for (let t = 0; t < T; t++) {
      tokens[b * T + t] = seq[t]!
      targets[b * T + t] = seq[t + 1]!
    }
  }
  return { tokens, targets }
}

test('layout: per-layer contiguous, llm.c order inside a layer, GPT-2 124M has 124,475,904 parameters', t => {
  const big = gptLayout(GPT_PRESETS['gpt2-124m'])
  t.is(big.length, 124_475_904) // llm.c's count for the padded vocabulary (50304)
  t.is(big.tensors.length, 2 + 12 * 12 + 2)
  const tiny = gptLayout(GPT_PRESETS.tiny)
  t.deepEqual(
    tiny.tensors.slice(0, 16).map(x => x.name),
    [
      'wte',
      'wpe',
      'h.0.ln1w',
      'h.0.ln1b',
      'h.0.qkvw',
      'h.0.qkvb',
      'h.0.attprojw',
      'h.0.attprojb',
      'h.0.ln2w',
      'h.0.ln2b',
      'h.0.fcw',
      'h.0.fcb',
      'h.0.fcprojw',
      'h.0.fcprojb',
      'h.1.ln1w',
      'h.1.ln1b'
    ]
  )
  t.deepEqual(
    tiny.tensors.slice(-2).map(x => x.name),
    ['lnfw', 'lnfb']
  )
  let offset = 0
  for (const x of big.tensors) {
    t.is(x.offset, offset, x.name)
    t.is(
      x.length,
      x.shape.reduce((a, b) => a * b, 1)
    )
    t.is(x.decay, x.shape.length === 2)
    offset += x.length
  }
  t.is(offset, big.length)
  t.deepEqual(big.tensors.find(x => x.name === 'h.3.fcprojw')!.shape, [768, 3072])
  for (let l = 0; l < 12; l++) {
    const inLayer = big.tensors.filter(x => x.layer === l)
    t.is(big.layers[l]!.start, inLayer[0]!.offset)
    t.is(big.layers[l]!.end, inLayer.at(-1)!.offset + inLayer.at(-1)!.length)
  }
  t.throws(() => gptLayout({ ...GPT_PRESETS.tiny, C: 33 }), { name: 'InvalidArgumentError', message: /nHead/ })
  t.throws(() => gptLayout({ ...GPT_PRESETS.tiny, paddedVocabSize: 10 }), { name: 'InvalidArgumentError', message: /paddedVocabSize/ })
})

test('init: deterministic in the seed; N(0, 0.02) weights, residual projections scaled by 1/sqrt(2L), layernorm 1, biases 0, wte padding 0', t => {
  const cfg: GptConfig = { vocabSize: 60, paddedVocabSize: 64, maxT: 16, nLayer: 2, nHead: 2, C: 64 }
  const a = initGptParams(cfg, 7)
  t.deepEqual(initGptParams(cfg, 7), a)
  t.notDeepEqual(initGptParams(cfg, 8), a)
  const layout = gptLayout(cfg)
  const get = (name: string): Float32Array => {
    const x = layout.tensors.find(e => e.name === name)!
    return a.subarray(x.offset, x.offset + x.length)
  }
  const std = (x: Float32Array): number => Math.sqrt(x.reduce((s, v) => s + v * v, 0) / x.length)
  t.true(Math.abs(std(get('h.0.fcw')) - 0.02) < 0.002, `fcw std ${std(get('h.0.fcw'))}`)
  t.true(Math.abs(std(get('h.1.fcprojw')) - 0.01) < 0.001, `fcprojw std ${std(get('h.1.fcprojw'))}`)
  t.true(get('h.1.ln2w').every(v => v === 1) && get('lnfw').every(v => v === 1))
  t.true(get('h.0.qkvb').every(v => v === 0) && get('lnfb').every(v => v === 0))
  t.true(
    get('wte')
      .subarray(60 * 64)
      .every(v => v === 0),
    'padding rows of wte are zero'
  )
  t.true(std(get('wte').subarray(0, 60 * 64)) > 0.015)
})

test('whole-model gradient matches central finite differences on the largest-gradient coordinate of every tensor', t => {
  const { rng } = seededRng(t, 401)
  // Padded vocabulary (V < Vp) and T < maxT, so padding rows and unused positions are covered.
  const cfg: GptConfig = { vocabSize: 50, paddedVocabSize: 56, maxT: 12, nLayer: 2, nHead: 2, C: 16 }
  const B = 2
  const T = 8
  const be = new CpuBackend()
  const model = new Gpt(be, cfg, { B, T, dtype: 'f32', seed: 3 })
  const { tokens, targets } = batch(rng, B, T, cfg.vocabSize)
  model.zeroGrad()
  const loss0 = model.forward(tokens, targets)
  model.backward()
  const grads = model.getGrads()
  const p0 = model.getParams()
  // Padding rows of wte and the positions >= T get exactly zero gradient.
  const wte = model.layout.tensors[0]!
  t.true(grads.subarray(wte.offset + cfg.vocabSize * cfg.C, wte.offset + wte.length).every(v => v === 0))
  const wpe = model.layout.tensors[1]!
  t.true(grads.subarray(wpe.offset + T * cfg.C, wpe.offset + wpe.length).every(v => v === 0))

  // Fourth-order central differences, (8(L(x+h) - L(x-h)) - (L(x+2h) - L(x-2h))) / 12h with
  // h = 2^-8: a plain central difference is either swamped by the model's f32 rounding (small h)
  // or off by its h² term (~0.5% on biases at h = 3e-3). That rounding still moves the numeric
  // side by up to ~1.5e-5 here (measured over 30 seeds), hence atol. Accepted when
  // |num - ana| <= 3e-5 + 3e-3·max(|num|, |ana|).
  const h = 2 ** -8
  const rtol = 3e-3
  const atol = 3e-5
  let worst = 0
  let worstAt = ''
  for (const x of model.layout.tensors) {
    let best = x.offset
    for (let i = x.offset; i < x.offset + x.length; i++) if (Math.abs(grads[i]!) > Math.abs(grads[best]!)) best = i
    for (const i of [best, x.offset + rng.int(0, x.length)]) {
      const p = p0.slice()
      const at = (d: number): number => {
        p[i] = p0[i]! + d
        model.setParams(p)
        return model.forward(tokens, targets)
      }
      const num = (8 * (at(h) - at(-h)) - (at(2 * h) - at(-2 * h))) / (12 * h)
      const ana = grads[i]!
      const allowed = atol + rtol * Math.max(Math.abs(num), Math.abs(ana))
      if (Math.abs(num - ana) / allowed > worst) {
        worst = Math.abs(num - ana) / allowed
        worstAt = `${x.name}[${i - x.offset}]: numeric ${num}, analytic ${ana}`
      }
      t.true(Math.abs(num - ana) <= allowed, `${x.name}[${i - x.offset}]: numeric ${num}, analytic ${ana}`)
    }
  }
  t.log(`worst error / allowed over ${model.layout.tensors.length * 2} coordinates: ${worst.toFixed(3)} (${worstAt})`)
  model.setParams(p0)
  t.is(model.forward(tokens, targets), loss0)
})

/** Trains the tiny model on one fixed batch; returns the losses and the final params. */
function overfit(seed: number, steps: number): { losses: number[]; params: Float32Array; bytesAfterDispose: number } {
  const cfg = GPT_PRESETS.tiny
  const B = 4
  const T = 16
  const be = new CpuBackend()
  const model = new Gpt(be, cfg, { B, T, dtype: 'f32', seed })
  const { tokens, targets } = batch(Rng.fromSeed(seed).split('batch'), B, T, cfg.vocabSize)
  const losses: number[] = []
  for (let step = 1; step <= steps; step++) {
    model.zeroGrad()
    losses.push(model.forward(tokens, targets))
    model.backward()
    model.update({ lr: 1e-2, step, weightDecay: 0.01 })
  }
  const params = model.getParams()
  model.dispose()
  return { losses, params, bytesAfterDispose: be.allocatedBytes }
}

test('tiny GPT overfits a fixed batch: loss falls from ~ln(V) to under a quarter of it in 40 AdamW steps, bit-identically across two runs', t => {
  const { seed } = seededRng(t, 402)
  const a = overfit(seed, 40)
  const lnV = Math.log(GPT_PRESETS.tiny.vocabSize)
  t.true(Math.abs(a.losses[0]! - lnV) < 0.1, `initial loss ${a.losses[0]} vs ln(V) ${lnV}`)
  t.true(a.losses.at(-1)! < 0.25 * lnV, `final loss ${a.losses.at(-1)}`)
  t.log(
    `loss every 5 steps: ${a.losses
      .filter((_, i) => i % 5 === 0)
      .map(x => x.toFixed(3))
      .join(' ')} … ${a.losses.at(-1)!.toFixed(4)}`
  )
  const b = overfit(seed, 40)
  t.deepEqual(b.losses, a.losses)
  t.deepEqual(b.params, a.params)
  t.is(a.bytesAfterDispose, 0, 'dispose frees everything the model allocated')
})

test('model misuse is refused: bf16 on cpu, bad token ids, backward before forward, wrong param length, use after dispose', t => {
  const be = new CpuBackend()
  const cfg = GPT_PRESETS.tiny
  t.throws(() => new Gpt(be, cfg, { B: 1, T: 4, dtype: 'bf16', seed: 1 }), { name: 'InvalidArgumentError', message: /f32/ })
  t.throws(() => new Gpt(be, cfg, { B: 1, T: cfg.maxT + 1, dtype: 'f32', seed: 1 }), { name: 'InvalidArgumentError', message: /T must/ })
  const model = new Gpt(be, cfg, { B: 1, T: 4, dtype: 'f32', seed: 1 })
  t.throws(() => model.backward(), { name: 'InvalidArgumentError', message: /forward with targets/ })
  t.throws(() => model.forward(Int32Array.of(0, 1, 2, 64), null), { name: 'InvalidArgumentError', message: /tokens\[3\]/ })
  t.throws(() => model.forward(Int32Array.of(0, 1, 2), null), { name: 'InvalidArgumentError', message: /4 elements/ })
  t.throws(() => model.forward(Int32Array.of(0, 1, 2, 3), Int32Array.of(0, 1, -1, 3)), { name: 'InvalidArgumentError', message: /targets\[2\]/ })
  t.true(Number.isNaN(model.forward(Int32Array.of(0, 1, 2, 3), null)))
  t.throws(() => model.backward(), { name: 'InvalidArgumentError' }, 'a forward without targets leaves nothing to backpropagate')
  t.throws(() => model.setParams(new Float32Array(3)), { name: 'InvalidArgumentError' })
  const p = model.getParams()
  p[5] = 0.5
  model.setParams(p)
  t.is(model.getParams()[5], 0.5)
  model.dispose()
  t.throws(() => model.forward(Int32Array.of(0, 1, 2, 3), null), { name: 'InvalidArgumentError', message: /disposed/ })
})

test('stream mode: the same loss and gradients as full mode, holding only the edge buckets and two block slots', async t => {
  const cfg: GptConfig = { vocabSize: 64, paddedVocabSize: 64, maxT: 8, nLayer: 3, nHead: 2, C: 16 }
  const B = 2
  const T = 8
  const be = new CpuBackend()
  const full = new Gpt(be, cfg, { B, T, dtype: 'f32', seed: 9 })
  const stream = new Gpt(be, cfg, { B, T, dtype: 'f32', seed: 9, params: 'stream' })
  const { tokens, targets } = batch(Rng.fromSeed(9).split('batch'), B, T, cfg.vocabSize)
  const params = initGptParams(cfg, 9)
  const buckets = gptBuckets(full.layout)
  t.deepEqual(
    buckets.map(b => b.name),
    ['emb', 'h.0', 'h.1', 'h.2', 'lnf']
  )
  t.is(buckets.at(-1)!.end, full.layout.length)
  full.zeroGrad()
  const want = full.forward(tokens, targets)
  full.backward()
  const wantGrads = full.getGrads()
  const loads: string[] = []
  const grads = new Float32Array(full.layout.length)
  const got: string[] = []
  const io = {
    load: async (j: number, dst: Tensor): Promise<undefined> => {
      loads.push(buckets[j]!.name)
      await Promise.resolve()
      be.write(dst, params.slice(buckets[j]!.start, buckets[j]!.end))
      return undefined
    },
    grad: (j: number, g: Tensor): void => {
      got.push(buckets[j]!.name)
      grads.set(be.read(g) as Float32Array, buckets[j]!.start)
    }
  }
  const loss = await stream.forwardStreamed(tokens, targets, io)
  t.is(loss, want, 'the same loss, bit for bit')
  await stream.backwardStreamed(io)
  t.deepEqual(loads, ['emb', 'h.0', 'h.1', 'h.2', 'lnf', 'h.2', 'h.1', 'h.0'], 'forward loads every bucket; backward reloads the blocks only')
  t.deepEqual(got, ['lnf', 'h.2', 'h.1', 'h.0', 'emb'], 'gradients are handed back as each bucket completes')
  t.deepEqual(grads, wantGrads, 'the same gradients, bit for bit')
  // Memory: edge buckets and two block slots (weights and gradients) instead of the whole model with AdamW state.
  const block = buckets[1]!.end - buckets[1]!.start
  const edges = buckets[0]!.end - buckets[0]!.start + (buckets[4]!.end - buckets[4]!.start)
  t.is(stream.paramBytes(), (edges + 2 * block) * 2 * 4)
  t.is(full.paramBytes(), full.layout.length * 4 * 4)
  // Misuse: full-mode calls on a streamed model, a load that writes past the bucket's slot, a streamed call on a full model.
  t.throws(() => stream.forward(tokens, targets), { name: 'InvalidArgumentError', message: /streamed/ })
  t.throws(() => stream.getParams(), { name: 'InvalidArgumentError', message: /streamed/ })
  // A caller whose weights are already on the backend lends them: the same loss, and a tensor of the wrong size is refused.
  const held = be.alloc('f32', [params.length])
  be.write(held, params)
  const lent = { load: async (j: number) => be.view(held, buckets[j]!.start, [buckets[j]!.end - buckets[j]!.start]) }
  t.is(await stream.forwardStreamed(tokens, targets, lent), want, 'weights read in place give the same loss')
  await t.throwsAsync(stream.forwardStreamed(tokens, targets, { load: async () => be.view(held, 0, [3]) }), {
    name: 'InvalidArgumentError',
    message: /bucket emb needs/
  })
  be.free(held)
  await t.throwsAsync(
    stream.forwardStreamed(tokens, targets, {
      load: async (_j, dst) => {
        be.write(dst, new Float32Array(dst.length + 1))
        return undefined
      }
    }),
    { name: 'InvalidArgumentError', message: /exceeds/ }
  )
  await t.throwsAsync(full.forwardStreamed(tokens, targets, io), { name: 'InvalidArgumentError', message: /stream/ })
  full.dispose()
  stream.dispose()
  t.is(be.allocatedBytes, 0)
})

test('initGptParamsYielding: the same values as initGptParams, turning every `every` draws on a large model and never on a small one', async t => {
  const cfg = GPT_PRESETS.tiny
  const want = initGptParams(cfg, 11)
  let turns = 0
  const small = initGptParamsYielding(cfg, 11, async () => {
    turns++
  })
  t.true(small instanceof Float32Array, 'a model under the threshold comes back at once')
  // `atOnce`, not `every`, decides: small pieces, a model under the threshold, no turn.
  const under = initGptParamsYielding(cfg, 11, async () => void turns++, 1000, 1e9)
  t.true(under instanceof Float32Array)
  t.deepEqual(under, want)
  t.deepEqual(small, want)
  t.is(turns, 0)
  const every = 1000
  const big = initGptParamsYielding(
    cfg,
    11,
    async () => {
      turns++
    },
    every,
    2 * every
  )
  t.true(big instanceof Promise)
  t.deepEqual(await big, want)
  // Random draws: the matrices (wte over the real vocabulary), not the layernorm ones or the biases.
  const draws = gptLayout(cfg)
    .tensors.filter(x => x.shape.length === 2)
    .reduce((a, x) => a + (x.name === 'wte' ? cfg.vocabSize * cfg.C : x.length), 0)
  t.is(turns, Math.floor(draws / every))
})
