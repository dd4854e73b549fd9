import { InvalidArgumentError, Rng, type Seed } from '../core/index.ts'
import type { AdamWParams, Backend, Tensor } from './backend.ts'

/**
 * A GPT-2 style decoder-only transformer written only against the {@link Backend} interface,
 * so the same code trains on the CPU reference and on CUDA (llm.c's train_gpt2 structure).
 * It lives in gpu/ because it is pure Backend code that tests and bench/gpu.ts need without
 * the CLI layer of node/.
 */

/** Model shape. `paddedVocabSize` (≥ vocabSize) is the row count of wte and the logits' row stride. */
export interface GptConfig {
  vocabSize: number
  paddedVocabSize: number
  maxT: number
  nLayer: number
  nHead: number
  C: number
}

/** Named configurations: `tiny` for CPU tests, `small` for quick GPU runs, `gpt2-124m` for the benchmark. */
export const GPT_PRESETS: Readonly<Record<'tiny' | 'small' | 'gpt2-124m', Readonly<GptConfig>>> = Object.freeze({
  tiny: Object.freeze({ vocabSize: 64, paddedVocabSize: 64, maxT: 16, nLayer: 2, nHead: 2, C: 32 }),
  small: Object.freeze({ vocabSize: 4096, paddedVocabSize: 4096, maxT: 256, nLayer: 4, nHead: 4, C: 256 }),
  'gpt2-124m': Object.freeze({ vocabSize: 50257, paddedVocabSize: 50304, maxT: 1024, nLayer: 12, nHead: 12, C: 768 })
})

export type GptPresetName = keyof typeof GPT_PRESETS

/** One parameter tensor inside the flat buffer. */
export interface GptTensorInfo {
  /** `wte`, `wpe`, `h.<layer>.<ln1w|ln1b|qkvw|qkvb|attprojw|attprojb|ln2w|ln2b|fcw|fcb|fcprojw|fcprojb>`, `lnfw`, `lnfb`. */
  name: string
  /** Element offset into the flat buffer. */
  offset: number
  shape: readonly number[]
  /** Elements (product of shape). */
  length: number
  /** Transformer block index, or null for the embeddings and the final layernorm. */
  layer: number | null
  /** AdamW applies weight decay to this tensor (2-D matrices and embeddings, not biases or layernorm). */
  decay: boolean
}

/** The flat parameter layout: every tensor, in buffer order, and the total element count. */
export interface GptLayout {
  tensors: readonly GptTensorInfo[]
  length: number
  /** Element range [start, end) of each transformer block (contiguous: what the mesh buckets). */
  layers: ReadonlyArray<{ start: number, end: number }>
}

const LAYER_TENSORS = ['ln1w', 'ln1b', 'qkvw', 'qkvb', 'attprojw', 'attprojb', 'ln2w', 'ln2b', 'fcw', 'fcb', 'fcprojw', 'fcprojb'] as const
type LayerTensor = typeof LAYER_TENSORS[number]

function layerShapes (C: number): Record<LayerTensor, number[]> {
  return {
    ln1w: [C],
    ln1b: [C],
    qkvw: [3 * C, C],
    qkvb: [3 * C],
    attprojw: [C, C],
    attprojb: [C],
    ln2w: [C],
    ln2b: [C],
    fcw: [4 * C, C],
    fcb: [4 * C],
    fcprojw: [C, 4 * C],
    fcprojb: [C]
  }
}

/** Checks a config: positive integers, Vp ≥ V, C divisible by nHead. Throws InvalidArgumentError. */
export function validateGptConfig (config: GptConfig): void {
  for (const key of ['vocabSize', 'paddedVocabSize', 'maxT', 'nLayer', 'nHead', 'C'] as const) {
    const v = config[key]
    if (!Number.isSafeInteger(v) || v < 1) throw new InvalidArgumentError(`gpt config: ${key} must be a positive integer, got ${v}`)
  }
  if (config.paddedVocabSize < config.vocabSize) {
    throw new InvalidArgumentError(`gpt config: paddedVocabSize ${config.paddedVocabSize} < vocabSize ${config.vocabSize}`)
  }
  if (config.C % config.nHead !== 0) throw new InvalidArgumentError(`gpt config: C ${config.C} is not a multiple of nHead ${config.nHead}`)
}

/**
 * The flat layout, per-layer contiguous: `wte [Vp, C]`, `wpe [maxT, C]`, then for each block
 * its 12 tensors in llm.c's order, then `lnfw`, `lnfb`. (llm.c groups by tensor type across
 * layers
 we keep each block contiguous so the mesh can shard buckets of whole layers.) The
 * lm head is tied to wte, so it has no tensor of its own. Every offset is a multiple of C.
 */
export function gptLayout (config: GptConfig): GptLayout {
  validateGptConfig(config)
  const { C, nLayer } = config
  const tensors: GptTensorInfo[] = []
  let offset = 0
  const push = (name: string, shape: number[], layer: number | null): void => {
    const length = shape.reduce((a, b) => a * b, 1)
    tensors.push({ name, offset, shape: Object.freeze(shape), length, layer, decay: shape.length === 2 })
    offset += length
  }
  push('wte', [config.paddedVocabSize, C], null)
  push('wpe', [config.maxT, C], null)
  const layers: Array<{ start: number, end: number }> = []
  const shapes = layerShapes(C)
  for (let l = 0; l < nLayer; l++) {
    const start = offset
    for (const name of LAYER_TENSORS) push(`h.${l}.${name}`, shapes[name], l)
    layers.push({ start, end: offset })
  }
  push('lnfw', [C], null)
  push('lnfb', [C], null)
  return { tensors: Object.freeze(tensors), length: offset, layers: Object.freeze(layers) }
}

/**
 * GPT-2 initialisation, deterministic in `seed`: weights ~ N(0, 0.02²) with the residual
 * projections (attprojw, fcprojw) scaled by 1/sqrt(2·nLayer), wpe ~ N(0, 0.01²) as in GPT-2,
 * layernorm weights 1, biases 0, and wte's padding rows [V, Vp) zero. Normals come from
 * core's Rng, drawn tensor by tensor in layout order.
 */
export function initGptParams (config: GptConfig, seed: Seed): Float32Array {
  const layout = gptLayout(config)
  const out = new Float32Array(layout.length)
  const rng = Rng.fromSeed(seed).split('gpt-init')
  const residualStd = 0.02 / Math.sqrt(2 * config.nLayer)
  for (const t of layout.tensors) {
    const kind = t.name.slice(t.name.lastIndexOf('.') + 1)
    if (kind === 'ln1w' || kind === 'ln2w' || kind === 'lnfw') {
      out.fill(1, t.offset, t.offset + t.length)
      continue
    }
    if (t.shape.length !== 2) continue // biases stay 0
    const std = kind === 'wpe' ? 0.01 : (kind === 'attprojw' || kind === 'fcprojw') ? residualStd : 0.02
    const n = kind === 'wte' ? config.vocabSize * config.C : t.length
    for (let i = 0; i < n; i++) out[t.offset + i] = rng.normal() * std
  }
  return out
}

/** Per-model options: micro-batch shape, activation dtype and the init seed. */
export interface GptOptions {
  B: number
  T: number
  /** Activation / working-weight dtype. `bf16` needs a backend that computes in bf16 (cuda). */
  dtype: 'f32' | 'bf16'
  /** Initialises the parameters with {@link initGptParams}. */
  seed: Seed
}

/** AdamW settings for {@link Gpt.update}
omitted fields take llm.c's defaults. */
export interface GptUpdateParams {
  lr: number
  step: number
  beta1?: number
  beta2?: number
  eps?: number
  /** Applied only to tensors with `decay` in the layout (matrices and embeddings). Default 0. */
  weightDecay?: number
  /** Gradients are multiplied by this first (1 / micro-batches, clipping). Default 1. */
  gradScale?: number
}

interface LayerParams {
  ln1w: Tensor, ln1b: Tensor, qkvw: Tensor, qkvb: Tensor, attprojw: Tensor, attprojb: Tensor
  ln2w: Tensor, ln2b: Tensor, fcw: Tensor, fcb: Tensor, fcprojw: Tensor, fcprojb: Tensor
}

interface ModelParams {
  wte: Tensor
  wpe: Tensor
  layers: LayerParams[]
  lnfw: Tensor
  lnfb: Tensor
}

interface LayerActs {
  ln1: Tensor, ln1Mean: Tensor, ln1Rstd: Tensor
  qkv: Tensor, atty: Tensor, lse: Tensor, attproj: Tensor, residual2: Tensor
  ln2: Tensor, ln2Mean: Tensor, ln2Rstd: Tensor
  fch: Tensor, fchGelu: Tensor, fcproj: Tensor, residual3: Tensor
}

/**
 * The model on one backend. Allocates everything once in the constructor: the f32 master
 * params, f32 grads, AdamW m and v (all flat, {@link gptLayout} order), a bf16 working copy of
 * the params when `dtype` is bf16, the activations of every layer (kept for the backward) and
 * the activation gradients (reused across layers). Nothing is allocated per step.
 *
 * dtype rules: activations, activation gradients and the weights the ops read are in `dtype`;
 * parameter gradients, layernorm mean/rstd, attention lse and per-token losses are f32.
 */
export class Gpt {
  readonly backend: Backend
  readonly config: Readonly<GptConfig>
  readonly layout: GptLayout
  readonly B: number
  readonly T: number
  readonly dtype: 'f32' | 'bf16'
  /** Flat f32 master parameters. */
  readonly params: Tensor
  /** Flat f32 parameter gradients (accumulated by backward; cleared by zeroGrad). */
  readonly grads: Tensor
  /** AdamW first and second moments (flat f32). */
  readonly m: Tensor
  readonly v: Tensor
  /** The bf16 copy the ops read when dtype is bf16, else null. */
  readonly paramsLowp: Tensor | null

  private readonly w: ModelParams
  private readonly g: ModelParams
  private readonly acts: LayerActs[]
  private readonly encoded: Tensor
  private readonly lnf: Tensor
  private readonly lnfMean: Tensor
  private readonly lnfRstd: Tensor
  private readonly logits: Tensor
  private readonly losses: Tensor
  private readonly tokens: Tensor
  private readonly targets: Tensor
  private readonly dresidual: Tensor
  private readonly dln: Tensor
  private readonly datty: Tensor
  private readonly dqkv: Tensor
  private readonly dfchGelu: Tensor
  private readonly dfch: Tensor
  /** [start, end, decay] runs of the flat buffer for AdamW. */
  private readonly decayRuns: Array<{ params: Tensor, grads: Tensor, m: Tensor, v: Tensor, lowp: Tensor | null, decay: boolean }>
  private readonly owned: Tensor[] = []
  private readonly hostTokens: Int32Array
  /** Set by forward with targets: logits then hold dloss/dlogits, ready for backward. */
  private haveGrad = false
  private disposed = false

  constructor (backend: Backend, config: GptConfig, opts: GptOptions) {
    validateGptConfig(config)
    const { B, T, dtype } = opts
    if (!Number.isSafeInteger(B) || B < 1) throw new InvalidArgumentError(`gpt: B must be a positive integer, got ${B}`)
    if (!Number.isSafeInteger(T) || T < 1 || T > config.maxT) throw new InvalidArgumentError(`gpt: T must be an integer in [1, ${config.maxT}], got ${T}`)
    if (dtype !== 'f32' && dtype !== 'bf16') throw new InvalidArgumentError(`gpt: dtype must be 'f32' or 'bf16', got ${String(dtype)}`)
    if (dtype === 'bf16' && backend.kind === 'cpu') throw new InvalidArgumentError('gpt: the cpu backend computes in f32 only; use dtype f32')
    this.backend = backend
    this.config = Object.freeze({ ...config })
    this.layout = gptLayout(config)
    this.B = B
    this.T = T
    this.dtype = dtype
    this.hostTokens = new Int32Array(B * T)

    const be = backend
    const alloc = (dt: 'f32' | 'bf16' | 'i32', shape: number[]): Tensor => {
      const t = be.alloc(dt, shape)
      this.owned.push(t)
      return t
    }
    try {
      const P = this.layout.length
      this.params = alloc('f32', [P])
      this.grads = alloc('f32', [P])
      this.m = alloc('f32', [P])
      this.v = alloc('f32', [P])
      this.paramsLowp = dtype === 'bf16' ? alloc('bf16', [P]) : null
      this.w = this.paramViews(this.paramsLowp ?? this.params)
      this.g = this.paramViews(this.grads)
      this.decayRuns = this.buildRuns()

      const { C, nLayer, nHead, paddedVocabSize: Vp } = config
      const N = B * T
      const a = (shape: number[]): Tensor => alloc(dtype, shape)
      const f = (shape: number[]): Tensor => alloc('f32', shape)
      this.encoded = a([B, T, C])
      this.acts = []
      for (let l = 0; l < nLayer; l++) {
        this.acts.push({
          ln1: a([B, T, C]),
          ln1Mean: f([N]),
          ln1Rstd: f([N]),
          qkv: a([B, T, 3 * C]),
          atty: a([B, T, C]),
          lse: f([B, nHead, T]),
          attproj: a([B, T, C]),
          residual2: a([B, T, C]),
          ln2: a([B, T, C]),
          ln2Mean: f([N]),
          ln2Rstd: f([N]),
          fch: a([B, T, 4 * C]),
          fchGelu: a([B, T, 4 * C]),
          fcproj: a([B, T, C]),
          residual3: a([B, T, C])
        })
      }
      this.lnf = a([B, T, C])
      this.lnfMean = f([N])
      this.lnfRstd = f([N])
      this.logits = a([B, T, Vp])
      this.losses = f([N])
      this.tokens = alloc('i32', [N])
      this.targets = alloc('i32', [N])
      this.dresidual = a([B, T, C])
      this.dln = a([B, T, C])
      this.datty = a([B, T, C])
      this.dqkv = a([B, T, 3 * C])
      this.dfchGelu = a([B, T, 4 * C])
      this.dfch = a([B, T, 4 * C])
    } catch (err) {
      for (const t of this.owned) be.free(t)
      throw err
    }
    this.setParams(initGptParams(config, opts.seed))
  }

  private paramViews (flat: Tensor): ModelParams {
    const be = this.backend
    const byName = new Map(this.layout.tensors.map(t => [t.name, t]))
    const get = (name: string): Tensor => {
      const t = byName.get(name)!
      return be.view(flat, t.offset, t.shape)
    }
    const layers: LayerParams[] = []
    for (let l = 0; l < this.config.nLayer; l++) {
      const p: Partial<LayerParams> = {}
      for (const name of LAYER_TENSORS) p[name] = get(`h.${l}.${name}`)
      layers.push(p as LayerParams)
    }
    return { wte: get('wte'), wpe: get('wpe'), layers, lnfw: get('lnfw'), lnfb: get('lnfb') }
  }

  /** Maximal runs of consecutive tensors with the same weight-decay flag: one AdamW call each. */
  private buildRuns (): Gpt['decayRuns'] {
    const runs: Gpt['decayRuns'] = []
    const be = this.backend
    let start = 0
    let decay = this.layout.tensors[0]!.decay
    const close = (end: number): void => {
      if (end === start) return
      const n = end - start
      runs.push({
        params: be.view(this.params, start, [n]),
        grads: be.view(this.grads, start, [n]),
        m: be.view(this.m, start, [n]),
        v: be.view(this.v, start, [n]),
        lowp: this.paramsLowp === null ? null : be.view(this.paramsLowp, start, [n]),
        decay
      })
    }
    for (const t of this.layout.tensors) {
      if (t.decay !== decay) {
        close(t.offset)
        start = t.offset
        decay = t.decay
      }
    }
    close(this.layout.length)
    return runs
  }

  private live (op: string): void {
    if (this.disposed) throw new InvalidArgumentError(`gpt.${op}: the model has been disposed`)
  }

  /**
   * Runs the model on `tokens` (i32[B·T], each in [0, vocabSize)). With `targets` it returns
   * the mean cross-entropy loss and leaves dloss/dlogits (scaled by 1/(B·T)) in the logits
   * buffer for {@link backward}
   without, it returns NaN.
   */
  forward (tokens: Int32Array, targets: Int32Array | null): number {
    this.live('forward')
    const { B, T } = this
    const { C, nLayer, nHead: NH, vocabSize: V, paddedVocabSize: Vp } = this.config
    const N = B * T
    this.checkIds('tokens', tokens)
    if (targets !== null) this.checkIds('targets', targets)
    const be = this.backend
    this.hostTokens.set(tokens)
    be.write(this.tokens, tokens)
    const w = this.w
    be.encoderForward(this.encoded, this.tokens, w.wte, w.wpe, B, T, C)
    let residual = this.encoded
    for (let l = 0; l < nLayer; l++) {
      const p = w.layers[l]!
      const a = this.acts[l]!
      be.layernormForward(a.ln1, a.ln1Mean, a.ln1Rstd, residual, p.ln1w, p.ln1b, N, C)
      be.matmulForward(a.qkv, a.ln1, p.qkvw, p.qkvb, N, C, 3 * C)
      be.attentionForward(a.atty, a.lse, a.qkv, B, T, C, NH)
      be.matmulForward(a.attproj, a.atty, p.attprojw, p.attprojb, N, C, C)
      be.residualForward(a.residual2, residual, a.attproj)
      be.layernormForward(a.ln2, a.ln2Mean, a.ln2Rstd, a.residual2, p.ln2w, p.ln2b, N, C)
      be.matmulForward(a.fch, a.ln2, p.fcw, p.fcb, N, C, 4 * C)
      be.geluForward(a.fchGelu, a.fch)
      be.matmulForward(a.fcproj, a.fchGelu, p.fcprojw, p.fcprojb, N, 4 * C, C)
      be.residualForward(a.residual3, a.residual2, a.fcproj)
      residual = a.residual3
    }
    be.layernormForward(this.lnf, this.lnfMean, this.lnfRstd, residual, w.lnfw, w.lnfb, N, C)
    be.matmulForward(this.logits, this.lnf, w.wte, null, N, C, Vp)
    this.haveGrad = false
    if (targets === null) return NaN
    be.write(this.targets, targets)
    // Fused: losses and dlogits (in place of the logits) in one pass.
    be.crossEntropy(this.losses, this.logits, this.logits, this.targets, N, V, Vp, 1 / N)
    this.haveGrad = true
    const losses = be.read(this.losses) as Float32Array
    let sum = 0
    for (let i = 0; i < losses.length; i++) sum += losses[i]!
    return sum / N
  }

  private checkIds (name: string, ids: Int32Array): void {
    const n = this.B * this.T
    if (!(ids instanceof Int32Array) || ids.length !== n) throw new InvalidArgumentError(`gpt.forward: ${name} must be an Int32Array of ${n} elements`)
    const V = this.config.vocabSize
    for (let i = 0; i < n; i++) {
      const x = ids[i]!
      if (x < 0 || x >= V) throw new InvalidArgumentError(`gpt.forward: ${name}[${i}] = ${x} is outside [0, ${V})`)
    }
  }

  /** Accumulates d(mean loss)/d(params) into {@link grads}. Needs a forward with targets first. */
  backward (): void {
    this.live('backward')
    if (!this.haveGrad) throw new InvalidArgumentError('gpt.backward: call forward with targets first')
    this.haveGrad = false
    const be = this.backend
    const { B, T } = this
    const { C, nLayer, nHead: NH, paddedVocabSize: Vp } = this.config
    const N = B * T
    const w = this.w
    const g = this.g
    const lastResidual = nLayer > 0 ? this.acts[nLayer - 1]!.residual3 : this.encoded
    be.matmulBackward(this.dln, g.wte, null, this.logits, this.lnf, w.wte, N, C, Vp)
    be.fill(this.dresidual, 0)
    be.layernormBackward(this.dresidual, g.lnfw, g.lnfb, this.dln, lastResidual, w.lnfw, this.lnfMean, this.lnfRstd, N, C)
    for (let l = nLayer - 1; l >= 0; l--) {
      const p = w.layers[l]!
      const dp = g.layers[l]!
      const a = this.acts[l]!
      const residual = l === 0 ? this.encoded : this.acts[l - 1]!.residual3
      // residual3 = residual2 + fcproj: dresidual is the gradient of both.
      be.matmulBackward(this.dfchGelu, dp.fcprojw, dp.fcprojb, this.dresidual, a.fchGelu, p.fcprojw, N, 4 * C, C)
      be.geluBackward(this.dfch, a.fch, this.dfchGelu)
      be.matmulBackward(this.dln, dp.fcw, dp.fcb, this.dfch, a.ln2, p.fcw, N, C, 4 * C)
      be.layernormBackward(this.dresidual, dp.ln2w, dp.ln2b, this.dln, a.residual2, p.ln2w, a.ln2Mean, a.ln2Rstd, N, C)
      // residual2 = residual + attproj.
      be.matmulBackward(this.datty, dp.attprojw, dp.attprojb, this.dresidual, a.atty, p.attprojw, N, C, C)
      be.attentionBackward(this.dqkv, this.datty, a.qkv, a.atty, a.lse, B, T, C, NH)
      be.matmulBackward(this.dln, dp.qkvw, dp.qkvb, this.dqkv, a.ln1, p.qkvw, N, C, 3 * C)
      be.layernormBackward(this.dresidual, dp.ln1w, dp.ln1b, this.dln, residual, p.ln1w, a.ln1Mean, a.ln1Rstd, N, C)
    }
    be.encoderBackward(g.wte, g.wpe, this.dresidual, this.tokens, B, T, C)
  }

  /** Clears the gradients. */
  zeroGrad (): void {
    this.live('zeroGrad')
    this.backend.fill(this.grads, 0)
  }

  /** One fused AdamW step over the flat buffers (and the bf16 copy, when there is one). */
  update (hp: GptUpdateParams): void {
    this.live('update')
    const base: AdamWParams = {
      lr: hp.lr,
      beta1: hp.beta1 ?? 0.9,
      beta2: hp.beta2 ?? 0.95,
      eps: hp.eps ?? 1e-8,
      weightDecay: 0,
      step: hp.step,
      gradScale: hp.gradScale ?? 1
    }
    const wd = hp.weightDecay ?? 0
    const plain = { ...base, weightDecay: 0 }
    const decayed = { ...base, weightDecay: wd }
    for (const r of this.decayRuns) this.backend.adamw(r.params, r.grads, r.m, r.v, r.decay ? decayed : plain, r.lowp)
  }

  /** Replaces the master params (and refreshes the bf16 copy). */
  setParams (src: Float32Array): void {
    this.live('setParams')
    if (!(src instanceof Float32Array) || src.length !== this.layout.length) {
      throw new InvalidArgumentError(`gpt.setParams: expected a Float32Array of ${this.layout.length} elements`)
    }
    this.backend.write(this.params, src)
    if (this.paramsLowp !== null) this.backend.cast(this.paramsLowp, this.params)
  }

  getParams (): Float32Array {
    this.live('getParams')
    return this.backend.read(this.params) as Float32Array
  }

  getGrads (): Float32Array {
    this.live('getGrads')
    return this.backend.read(this.grads) as Float32Array
  }

  /** Frees every buffer the model allocated
  the model is unusable afterwards. */
  dispose (): void {
    if (this.disposed) return
    this.disposed = true
    for (const t of this.owned) this.backend.free(t)
    this.owned.length = 0
  }
}
