import { bf16ToF32 } from '../codec/index.ts'
import { InvalidArgumentError, Rng, type Seed } from '../core/index.ts'
import type { AdamWParams, Backend, Tensor } from './backend.ts'
import type { ZoSeed } from './zo.ts'

/**
 * A GPT-2 style decoder-only transformer written only against the {@link Backend} interface,
 * so the same code trains on the CPU reference and on CUDA (llm.c's train_gpt2 structure).
 * It lives in gpu/ because it is pure Backend code: tests and bench/gpu.ts use it without the
 * mesh or the trainer.
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
export const GPT_PRESETS: Readonly<Record<'tiny' | 'mini' | 'small' | 'gpt2-124m', Readonly<GptConfig>>> = Object.freeze({
  tiny: Object.freeze({ vocabSize: 64, paddedVocabSize: 64, maxT: 16, nLayer: 2, nHead: 2, C: 32 }),
  // ~0.1 M parameters at a byte vocabulary: trains visibly on a CPU in seconds (`zeromesh up`'s default).
  mini: Object.freeze({ vocabSize: 256, paddedVocabSize: 256, maxT: 64, nLayer: 2, nHead: 4, C: 64 }),
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
  layers: ReadonlyArray<{ start: number; end: number }>
}

const LAYER_TENSORS = ['ln1w', 'ln1b', 'qkvw', 'qkvb', 'attprojw', 'attprojb', 'ln2w', 'ln2b', 'fcw', 'fcb', 'fcprojw', 'fcprojb'] as const
type LayerTensor = (typeof LAYER_TENSORS)[number]

function layerShapes(C: number): Record<LayerTensor, number[]> {
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

/** Layer norm ε of the model (gpu/cpu.ts; `LN_EPS` in gpu/cuda/kernels/layernorm.cu; llm.c's and GPT-2's). */
export const GPT_LAYERNORM_EPS = 1e-5

/**
 * The row count of wte (and the logits' stride) for a vocabulary: rounded up to a multiple of
 * 64 for the kernels (llm.c pads GPT-2's 50257 to 50304). The padding rows are zero and never
 * a target.
 */
export function paddedVocabSize(vocabSize: number): number {
  return Math.ceil(vocabSize / 64) * 64
}

/** Checks a config: positive integers, Vp ≥ V, C divisible by nHead. Throws InvalidArgumentError. */
export function validateGptConfig(config: GptConfig): void {
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
 * layers; we keep each block contiguous so the mesh can shard buckets of whole layers.) The
 * lm head is tied to wte, so it has no tensor of its own. Every offset is a multiple of C.
 */
export function gptLayout(config: GptConfig): GptLayout {
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
  const layers: Array<{ start: number; end: number }> = []
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
export function initGptParams(config: GptConfig, seed: Seed): Float32Array {
  const out = new Float32Array(gptLayout(config).length)
  for (const _ of initSteps(config, seed, out, Infinity));
  return out
}

/**
 * {@link initGptParams} (the same values) that awaits `turn` after every `every` elements, so
 * a process that initialises a large model on its event loop keeps answering heartbeats
 * (0.5 Mi normal draws take about 40 ms; 4 Mi, the step before, held a GPU rank's loop for
 * 340 ms at a time, 19 times in a row for GPT-2 124M, and its peers replaced it). A model of
 * at most `atOnce` parameters is returned at once, without an await (a simulated schedule
 * stays what it was).
 */
export function initGptParamsYielding(
  config: GptConfig,
  seed: Seed,
  turn: () => Promise<void>,
  every = 1 << 19,
  atOnce = 1 << 22
): Float32Array | Promise<Float32Array> {
  const out = new Float32Array(gptLayout(config).length)
  const steps = initSteps(config, seed, out, every)
  if (out.length <= atOnce) {
    for (const _ of steps);
    return out
  }
  return (async () => {
    for (const _ of steps) await turn()
    return out
  })()
}

/** Fills `out` with the initial parameters, yielding after every `every` random draws. */
function* initSteps(config: GptConfig, seed: Seed, out: Float32Array, every: number): Generator<void> {
  const layout = gptLayout(config)
  const rng = Rng.fromSeed(seed).split('gpt-init')
  const residualStd = 0.02 / Math.sqrt(2 * config.nLayer)
  // Draws left before the next yield (Infinity never reaches 0): a countdown, no division per draw.
  let left = every
  for (const t of layout.tensors) {
    const kind = t.name.slice(t.name.lastIndexOf('.') + 1)
    if (kind === 'ln1w' || kind === 'ln2w' || kind === 'lnfw') {
      out.fill(1, t.offset, t.offset + t.length)
      continue
    }
    if (t.shape.length !== 2) continue // biases stay 0
    const std = kind === 'wpe' ? 0.01 : kind === 'attprojw' || kind === 'fcprojw' ? residualStd : 0.02
    const n = kind === 'wte' ? config.vocabSize * config.C : t.length
    for (let i = 0; i < n; i++) {
      out[t.offset + i] = rng.normal() * std
      if (--left === 0) {
        left = every
        yield
      }
    }
  }
}

/** Per-model options: micro-batch shape, activation dtype and the init seed. */
export interface GptOptions {
  B: number
  T: number
  /** Activation / working-weight dtype. `bf16` needs a backend that computes in bf16 (cuda). */
  dtype: 'f32' | 'bf16'
  /** Initialises the parameters with {@link initGptParams} (full and forward modes). */
  seed: Seed
  /** false: leave the parameters unset (the caller writes them: {@link Gpt.weights}); default true. */
  init?: boolean
  /**
   * `full` (default): the model holds every parameter, its gradient and AdamW state.
   * `stream`: it holds only the embeddings, the final layernorm and two block slots (weights
   * and gradients); {@link Gpt.forwardStreamed} and {@link Gpt.backwardStreamed} ask their
   * caller for each bucket's weights as they reach it and hand back each bucket's gradient
   * as soon as it is complete (ZeRO-3: the mesh gathers one bucket at a time).
   * `forward`: every parameter (f32, and the bf16 copy) and no gradients or optimizer state:
   * forward passes only (zeroth-order training, {@link Gpt.addSigns}); backward and update refuse.
   */
  params?: 'full' | 'stream' | 'forward'
}

/** A contiguous range [start, end) of the flat layout that the mesh gathers as one. */
export interface GptBucket {
  name: string
  start: number
  end: number
}

/**
 * The buckets of a layout, in forward order: `emb` (wte, wpe), one per block (`h.<l>`), then
 * `lnf`. Bucket j+1 is block j.
 */
export function gptBuckets(layout: GptLayout): GptBucket[] {
  const first = layout.layers[0]!.start
  const last = layout.layers.at(-1)!.end
  return [
    { name: 'emb', start: 0, end: first },
    ...layout.layers.map((r, l) => ({ name: `h.${l}`, start: r.start, end: r.end })),
    { name: 'lnf', start: last, end: layout.length }
  ]
}

/**
 * What a streamed pass asks of its caller. Both sides are tensors of the model's backend, so
 * a caller whose weights already live on the device copies them there without a host trip.
 */
export interface GptStream {
  /**
   * Bucket j ({@link gptBuckets}) is needed now: write its f32 weights, its whole range, into
   * `dst` (issued on the model's backend before this resolves), or resolve to a tensor of the
   * backend that already holds them (f32, the bucket's length, left unchanged until the pass
   * asks for the next bucket): a bf16 model then casts from it in place, saving a copy.
   */
  load(j: number, dst: Tensor): Promise<Tensor | undefined>
  /**
   * Bucket j's gradient is complete in `g` (f32, the bucket's range). Backward only. `g` is
   * reused for a later bucket: copy what you keep before returning (a copy or download issued
   * on the model's backend now is ordered before that reuse).
   */
  grad?(j: number, g: Tensor): void
}

/** AdamW settings for {@link Gpt.update}; omitted fields take llm.c's defaults. */
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
  ln1w: Tensor
  ln1b: Tensor
  qkvw: Tensor
  qkvb: Tensor
  attprojw: Tensor
  attprojb: Tensor
  ln2w: Tensor
  ln2b: Tensor
  fcw: Tensor
  fcb: Tensor
  fcprojw: Tensor
  fcprojb: Tensor
}

interface ModelParams {
  wte: Tensor
  wpe: Tensor
  layers: LayerParams[]
  lnfw: Tensor
  lnfb: Tensor
}

interface LayerActs {
  ln1: Tensor
  ln1Mean: Tensor
  ln1Rstd: Tensor
  qkv: Tensor
  atty: Tensor
  lse: Tensor
  attproj: Tensor
  residual2: Tensor
  ln2: Tensor
  ln2Mean: Tensor
  ln2Rstd: Tensor
  fch: Tensor
  fchGelu: Tensor
  fcproj: Tensor
  residual3: Tensor
}

/** The full-mode buffers: every parameter (f32 master, bf16 copy), gradient and AdamW moment. */
interface FullState {
  params: Tensor
  grads: Tensor
  m: Tensor
  v: Tensor
  lowp: Tensor | null
  /** Maximal runs of consecutive tensors with the same weight-decay flag: one AdamW call each. */
  runs: Array<{ params: Tensor; grads: Tensor; m: Tensor; v: Tensor; lowp: Tensor | null; decay: boolean }>
}

/** A stream-mode weight buffer for one bucket range: f32 (what the mesh delivers) and the bf16 copy the ops read. */
interface Slot {
  bucket: GptBucket
  f32: Tensor
  lowp: Tensor | null
  grad: Tensor
}

/** Yielded by the shared pass code: a bucket's weights are needed, or its gradient is complete. */
type PassEvent = { load: number } | { grad: number }

/**
 * The model on one backend. Allocates everything once in the constructor: the parameters
 * (see {@link GptOptions.params}), the activations of every layer (kept for the backward)
 * and the activation gradients (reused across layers). Nothing is allocated per step.
 *
 * dtype rules: activations, activation gradients and the weights the ops read are in `dtype`;
 * parameter gradients, layernorm mean/rstd, attention lse and per-token losses are f32.
 */
export class Gpt {
  readonly backend: Backend
  readonly config: Readonly<GptConfig>
  readonly layout: GptLayout
  readonly buckets: readonly GptBucket[]
  readonly B: number
  readonly T: number
  readonly dtype: 'f32' | 'bf16'
  readonly mode: 'full' | 'stream' | 'forward'

  private readonly full: FullState | null
  /** Stream mode: emb, lnf and two block slots. */
  private readonly slots: { emb: Slot; lnf: Slot; blocks: [Slot, Slot] } | null
  /** Weights the ops read: embeddings and final layernorm, and each block (full mode) or slot. */
  private readonly w: ModelParams
  private readonly g: ModelParams
  private readonly slotW: LayerParams[] = []
  private readonly slotG: LayerParams[] = []
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
  private readonly owned: Tensor[] = []
  private readonly hostTokens: Int32Array
  /** Set by forward with targets: logits then hold dloss/dlogits, ready for backward. */
  private haveGrad = false
  /** Set by forward without targets: the logits buffer holds the logits ({@link logitsAt}). */
  private haveLogits = false
  private busy = false
  private disposed = false

  constructor(backend: Backend, config: GptConfig, opts: GptOptions) {
    validateGptConfig(config)
    const { B, T, dtype } = opts
    const mode = opts.params ?? 'full'
    if (!Number.isSafeInteger(B) || B < 1) throw new InvalidArgumentError(`gpt: B must be a positive integer, got ${B}`)
    if (!Number.isSafeInteger(T) || T < 1 || T > config.maxT) throw new InvalidArgumentError(`gpt: T must be an integer in [1, ${config.maxT}], got ${T}`)
    if (dtype !== 'f32' && dtype !== 'bf16') throw new InvalidArgumentError(`gpt: dtype must be 'f32' or 'bf16', got ${String(dtype)}`)
    if (dtype === 'bf16' && backend.kind === 'cpu') throw new InvalidArgumentError('gpt: the cpu backend computes in f32 only; use dtype f32')
    if (mode !== 'full' && mode !== 'stream' && mode !== 'forward')
      throw new InvalidArgumentError(`gpt: params must be 'full', 'stream' or 'forward', got ${String(mode)}`)
    this.backend = backend
    this.config = Object.freeze({ ...config })
    this.layout = gptLayout(config)
    this.buckets = Object.freeze(gptBuckets(this.layout))
    this.B = B
    this.T = T
    this.dtype = dtype
    this.mode = mode
    this.hostTokens = new Int32Array(B * T)

    const be = backend
    const alloc = (dt: 'f32' | 'bf16' | 'i32', shape: number[]): Tensor => {
      const t = be.alloc(dt, shape)
      this.owned.push(t)
      return t
    }
    try {
      if (mode === 'full') {
        const P = this.layout.length
        const params = alloc('f32', [P])
        const grads = alloc('f32', [P])
        const lowp = dtype === 'bf16' ? alloc('bf16', [P]) : null
        this.full = { params, grads, m: alloc('f32', [P]), v: alloc('f32', [P]), lowp, runs: [] }
        this.full.runs = this.buildRuns(this.full)
        this.slots = null
        this.w = this.paramViews(lowp ?? params)
        this.g = this.paramViews(grads)
      } else if (mode === 'forward') {
        // No gradient or optimizer buffers: one element stands in for them (never read: the
        // ops that would are refused, needTrainable), and the gradient views are the weights'.
        const P = this.layout.length
        const params = alloc('f32', [P])
        const lowp = dtype === 'bf16' ? alloc('bf16', [P]) : null
        const none = alloc('f32', [1])
        this.full = { params, grads: none, m: none, v: none, lowp, runs: [] }
        this.slots = null
        this.w = this.paramViews(lowp ?? params)
        this.g = this.w
      } else {
        const slot = (bucket: GptBucket): Slot => {
          const n = bucket.end - bucket.start
          return { bucket, f32: alloc('f32', [n]), lowp: dtype === 'bf16' ? alloc('bf16', [n]) : null, grad: alloc('f32', [n]) }
        }
        const b = this.buckets
        const block = b[1]!
        this.slots = { emb: slot(b[0]!), lnf: slot(b.at(-1)!), blocks: [slot(block), slot(block)] }
        this.full = null
        const { emb, lnf } = this.slots
        this.w = this.edgeViews(emb.lowp ?? emb.f32, lnf.lowp ?? lnf.f32)
        this.g = this.edgeViews(emb.grad, lnf.grad)
        for (const s of this.slots.blocks) {
          this.slotW.push(this.blockViews(s.lowp ?? s.f32, 0, block.start))
          this.slotG.push(this.blockViews(s.grad, 0, block.start))
        }
      }

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
    if (mode !== 'stream' && opts.init !== false) this.setParams(initGptParams(config, opts.seed))
  }

  /**
   * Bytes this model holds for parameters and their gradients (and, in full mode, AdamW
   * state): what ZeRO-3's stream mode keeps near the buckets in flight.
   */
  paramBytes(): number {
    const size = (t: Tensor): number => t.length * (t.dtype === 'bf16' ? 2 : 4)
    if (this.full !== null) {
      const f = this.full
      const train = this.mode === 'full' ? size(f.grads) + size(f.m) + size(f.v) : 0
      return size(f.params) + train + (f.lowp === null ? 0 : size(f.lowp))
    }
    const s = this.slots!
    return [s.emb, s.lnf, ...s.blocks].reduce((sum, x) => sum + size(x.f32) + size(x.grad) + (x.lowp === null ? 0 : size(x.lowp)), 0)
  }

  /** A view of the named tensor in `flat`, whose element 0 is layout offset `base`. */
  private tensor(flat: Tensor, name: string, base: number): Tensor {
    const t = this.layout.tensors.find(x => x.name === name)!
    return this.backend.view(flat, t.offset - base, t.shape)
  }

  /** Views of every tensor in `flat` (the whole flat layout). */
  private paramViews(flat: Tensor): ModelParams {
    const layers: LayerParams[] = []
    for (let l = 0; l < this.config.nLayer; l++) layers.push(this.blockViews(flat, l, 0))
    const v = (name: string): Tensor => this.tensor(flat, name, 0)
    return { wte: v('wte'), wpe: v('wpe'), layers, lnfw: v('lnfw'), lnfb: v('lnfb') }
  }

  /** Stream mode: the embeddings and final layernorm in their own buffers (no blocks). */
  private edgeViews(emb: Tensor, lnf: Tensor): ModelParams {
    const e = this.buckets[0]!.start
    const f = this.buckets.at(-1)!.start
    return {
      wte: this.tensor(emb, 'wte', e),
      wpe: this.tensor(emb, 'wpe', e),
      layers: [],
      lnfw: this.tensor(lnf, 'lnfw', f),
      lnfb: this.tensor(lnf, 'lnfb', f)
    }
  }

  /** Views of block `l`'s tensors in `flat`, whose element 0 is layout offset `base`. */
  private blockViews(flat: Tensor, l: number, base: number): LayerParams {
    const p: Partial<LayerParams> = {}
    for (const name of LAYER_TENSORS) p[name] = this.tensor(flat, `h.${l}.${name}`, base)
    return p as LayerParams
  }

  private buildRuns(f: FullState): FullState['runs'] {
    const runs: FullState['runs'] = []
    const be = this.backend
    let start = 0
    let decay = this.layout.tensors[0]!.decay
    const close = (end: number): void => {
      if (end === start) return
      const n = end - start
      runs.push({
        params: be.view(f.params, start, [n]),
        grads: be.view(f.grads, start, [n]),
        m: be.view(f.m, start, [n]),
        v: be.view(f.v, start, [n]),
        lowp: f.lowp === null ? null : be.view(f.lowp, start, [n]),
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

  private live(op: string): void {
    if (this.disposed) throw new InvalidArgumentError(`gpt.${op}: the model has been disposed`)
    if (this.busy) throw new InvalidArgumentError(`gpt.${op}: a streamed pass is still running`)
  }

  private needFull(op: string): FullState {
    this.live(op)
    if (this.full === null)
      throw new InvalidArgumentError(`gpt.${op}: a streamed model (params 'stream') holds no full parameters; use forwardStreamed / backwardStreamed`)
    return this.full
  }

  /** The full model with gradients and optimizer state (not a forward-only one). */
  private needTrainable(op: string): FullState {
    const f = this.needFull(op)
    if (this.mode === 'forward') throw new InvalidArgumentError(`gpt.${op}: a forward-only model (params 'forward') holds no gradients or optimizer state`)
    return f
  }

  private needStream(op: string): NonNullable<Gpt['slots']> {
    this.live(op)
    if (this.slots === null) throw new InvalidArgumentError(`gpt.${op}: needs a model created with params 'stream'`)
    return this.slots
  }

  /** Block l's weights (full mode: in place; stream mode: its slot) and gradients. */
  private blockW(l: number): LayerParams {
    return this.full !== null ? this.w.layers[l]! : this.slotW[l % 2]!
  }

  private blockG(l: number): LayerParams {
    return this.full !== null ? this.g.layers[l]! : this.slotG[l % 2]!
  }

  /**
   * Runs the model on `tokens` (i32[B·T], each in [0, vocabSize)). With `targets` it returns
   * the mean cross-entropy loss and leaves dloss/dlogits (scaled by 1/(B·T)) in the logits
   * buffer for {@link backward}; without, it returns NaN.
   */
  forward(tokens: Int32Array, targets: Int32Array | null): number {
    this.needFull('forward')
    const pass = this.forwardPass(tokens, targets)
    for (let e = pass.next(); ; e = pass.next()) if (e.done === true) return e.value
  }

  /** {@link forward} of a streamed model: asks `stream.load` for each bucket's weights in turn. */
  async forwardStreamed(tokens: Int32Array, targets: Int32Array | null, stream: GptStream): Promise<number> {
    this.needStream('forwardStreamed')
    const pass = this.forwardPass(tokens, targets)
    this.busy = true
    try {
      for (let e = pass.next(); ; e = pass.next()) {
        if (e.done === true) return e.value
        if ('load' in e.value) await this.fill(e.value.load, stream)
      }
    } finally {
      this.busy = false
    }
  }

  /** Accumulates d(mean loss)/d(params) into the gradients. Needs a forward with targets first. */
  backward(): void {
    this.needTrainable('backward')
    const pass = this.backwardPass()
    for (let e = pass.next(); e.done !== true; e = pass.next());
  }

  /**
   * {@link backward} of a streamed model: asks `stream.load` for each block's weights again
   * (last to first; the embeddings and final layernorm stay from the forward) and hands each
   * bucket's gradient to `stream.grad` as soon as it is complete: lnf, the blocks from the
   * last, then emb.
   */
  async backwardStreamed(stream: GptStream): Promise<void> {
    const s = this.needStream('backwardStreamed')
    if (!this.haveGrad) throw new InvalidArgumentError('gpt.backwardStreamed: call forwardStreamed with targets first')
    const be = this.backend
    be.fill(s.emb.grad, 0)
    be.fill(s.lnf.grad, 0)
    const pass = this.backwardPass()
    this.busy = true
    try {
      for (let e = pass.next(); e.done !== true; e = pass.next()) {
        if ('load' in e.value) {
          await this.fill(e.value.load, stream)
          be.fill(s.blocks[(e.value.load - 1) % 2]!.grad, 0)
        } else {
          stream.grad?.(e.value.grad, this.slotOf(e.value.grad).grad)
        }
      }
    } finally {
      this.busy = false
    }
  }

  private slotOf(j: number): Slot {
    const s = this.slots!
    if (j === 0) return s.emb
    if (j === this.buckets.length - 1) return s.lnf
    return s.blocks[(j - 1) % 2]!
  }

  /** Stream mode: puts bucket j's weights (from the caller) into its slot. */
  private async fill(j: number, stream: GptStream): Promise<void> {
    const slot = this.slotOf(j)
    const held = await stream.load(j, slot.f32)
    const src = held ?? slot.f32
    if (src.dtype !== 'f32' || src.length !== slot.f32.length) {
      const b = this.buckets[j]!
      throw new InvalidArgumentError(`gpt: bucket ${b.name} needs ${slot.f32.length} f32 weights, got a ${src.dtype} tensor of ${src.length}`)
    }
    if (slot.lowp !== null) this.backend.cast(slot.lowp, src)
    else if (src !== slot.f32) this.backend.copy(slot.f32, src)
  }

  /** The forward ops, shared by both modes; yields before each bucket's weights are read. */
  private *forwardPass(tokens: Int32Array, targets: Int32Array | null): Generator<PassEvent, number> {
    const { B, T } = this
    const { C, nLayer, nHead: NH, vocabSize: V, paddedVocabSize: Vp } = this.config
    const N = B * T
    this.checkIds('tokens', tokens)
    if (targets !== null) this.checkIds('targets', targets)
    const be = this.backend
    this.haveGrad = false
    this.haveLogits = false
    this.hostTokens.set(tokens)
    be.write(this.tokens, tokens)
    const w = this.w
    yield { load: 0 }
    be.encoderForward(this.encoded, this.tokens, w.wte, w.wpe, B, T, C)
    let residual = this.encoded
    for (let l = 0; l < nLayer; l++) {
      yield { load: 1 + l }
      const p = this.blockW(l)
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
    yield { load: nLayer + 1 }
    be.layernormForward(this.lnf, this.lnfMean, this.lnfRstd, residual, w.lnfw, w.lnfb, N, C)
    be.matmulForward(this.logits, this.lnf, w.wte, null, N, C, Vp)
    if (targets === null) {
      this.haveLogits = true
      return NaN
    }
    be.write(this.targets, targets)
    // Fused: losses and dlogits (in place of the logits) in one pass.
    be.crossEntropy(this.losses, this.logits, this.logits, this.targets, N, V, Vp, 1 / N)
    this.haveGrad = true
    const losses = be.read(this.losses) as Float32Array
    let sum = 0
    for (let i = 0; i < losses.length; i++) sum += losses[i]!
    return sum / N
  }

  /**
   * The logits of sequence `b` at position `t` (the real vocabulary's V values, f32) after a
   * forward without targets. Causal attention makes them depend on tokens 0..t only, so a
   * caller may pad the positions after t with anything (sampling reads the last real one).
   */
  logitsAt(b: number, t: number): Float32Array {
    this.live('logitsAt')
    if (!this.haveLogits)
      throw new InvalidArgumentError('gpt.logitsAt: run forward without targets first (a forward with targets turns the logits into gradients)')
    if (!Number.isSafeInteger(b) || b < 0 || b >= this.B || !Number.isSafeInteger(t) || t < 0 || t >= this.T) {
      throw new InvalidArgumentError(`gpt.logitsAt: position (${b}, ${t}) is outside [0, ${this.B}) x [0, ${this.T})`)
    }
    const { vocabSize: V, paddedVocabSize: Vp } = this.config
    const row = this.backend.read(this.backend.view(this.logits, (b * this.T + t) * Vp, [V]))
    if (row instanceof Float32Array) return row
    // bf16 activations: widen the row.
    const out = new Float32Array(V)
    for (let i = 0; i < V; i++) out[i] = bf16ToF32(row[i]!)
    return out
  }

  private checkIds(name: string, ids: Int32Array): void {
    const n = this.B * this.T
    if (!(ids instanceof Int32Array) || ids.length !== n) throw new InvalidArgumentError(`gpt.forward: ${name} must be an Int32Array of ${n} elements`)
    const V = this.config.vocabSize
    for (let i = 0; i < n; i++) {
      const x = ids[i]!
      if (x < 0 || x >= V) throw new InvalidArgumentError(`gpt.forward: ${name}[${i}] = ${x} is outside [0, ${V})`)
    }
  }

  /** The backward ops, shared by both modes; yields before a block's weights are read and after a bucket's gradient is complete. */
  private *backwardPass(): Generator<PassEvent, void> {
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
    yield { grad: nLayer + 1 }
    for (let l = nLayer - 1; l >= 0; l--) {
      yield { load: 1 + l }
      const p = this.blockW(l)
      const dp = this.blockG(l)
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
      yield { grad: 1 + l }
    }
    be.encoderBackward(g.wte, g.wpe, this.dresidual, this.tokens, B, T, C)
    yield { grad: 0 }
  }

  /** Clears the gradients (full mode; a streamed backward clears its own). */
  zeroGrad(): void {
    this.live('zeroGrad')
    if (this.full !== null && this.mode === 'full') this.backend.fill(this.full.grads, 0)
  }

  /** One fused AdamW step over the flat buffers (and the bf16 copy, when there is one). */
  update(hp: GptUpdateParams): void {
    const f = this.needTrainable('update')
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
    for (const r of f.runs) this.backend.adamw(r.params, r.grads, r.m, r.v, r.decay ? decayed : plain, r.lowp)
  }

  /** Replaces the master params (and refreshes the bf16 copy). */
  setParams(src: Float32Array): void {
    const f = this.needFull('setParams')
    if (!(src instanceof Float32Array) || src.length !== this.layout.length) {
      throw new InvalidArgumentError(`gpt.setParams: expected a Float32Array of ${this.layout.length} elements`)
    }
    this.backend.write(f.params, src)
    if (f.lowp !== null) this.backend.cast(f.lowp, f.params)
  }

  getParams(): Float32Array {
    return this.backend.read(this.needFull('getParams').params) as Float32Array
  }

  getGrads(): Float32Array {
    return this.backend.read(this.needTrainable('getGrads').grads) as Float32Array
  }

  /**
   * Zeroth-order perturbation of every parameter (full or forward mode): params[i] += ±scale,
   * the sign of `zoNegative(seed, i)` (gpu/zo.ts), and the bf16 copy refreshed in the same pass.
   */
  addSigns(scale: number, seed: ZoSeed): void {
    const f = this.needFull('addSigns')
    this.backend.addSigns(f.params, scale, seed, 0, f.lowp)
  }

  /**
   * The f32 parameters themselves (full and forward modes), for a caller that writes them in
   * place (piece by piece, say): it calls {@link refreshLowp} afterwards.
   */
  weights(): Tensor {
    return this.needFull('weights').params
  }

  /** Casts the f32 parameters into the bf16 copy the ops read (a no-op for an f32 model). */
  refreshLowp(): void {
    const f = this.needFull('refreshLowp')
    if (f.lowp !== null) this.backend.cast(f.lowp, f.params)
  }

  /** Copies params[start, start + dst.length) into `dst` (f32), on the backend. */
  copyParams(dst: Tensor, start: number): void {
    const f = this.needFull('copyParams')
    if (!Number.isSafeInteger(start) || start < 0 || start + dst.length > f.params.length) {
      throw new InvalidArgumentError(`gpt.copyParams: [${start}, ${start + dst.length}) is outside the ${f.params.length} parameters`)
    }
    this.backend.copy(dst, this.backend.view(f.params, start, [dst.length]))
  }

  /** Frees every buffer the model allocated; the model is unusable afterwards. */
  dispose(): void {
    if (this.disposed) return
    this.disposed = true
    for (const t of this.owned) this.backend.free(t)
    this.owned.length = 0
  }
}
