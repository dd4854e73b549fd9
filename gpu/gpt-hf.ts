import { InvalidArgumentError } from '../core/index.ts'
import { GPT_LAYERNORM_EPS, gptLayout, paddedVocabSize, validateGptConfig, type GptConfig } from './gpt.ts'

/**
 * Hugging Face's GPT-2 (transformers' `GPT2LMHeadModel`) as a layout of our flat parameters.
 *
 * The same model, other names and two differences in layout:
 * - HF's `Conv1D` weights are [in, out] (y = x W + b); ours are [out, in] (llm.c's matmul,
 *   y = x Wᵀ + b): `c_attn`, `attn.c_proj`, `c_fc` and `mlp.c_proj` are transposed.
 * - HF's `wte` has the real vocabulary's V rows; ours has Vp ({@link paddedVocabSize}), the
 *   padding rows zero.
 * The LM head is tied to wte on both sides (`lm_head.weight` is not a tensor of its own).
 * Numerics match transformers' defaults for `gpt2`: GELU with the tanh approximation
 * (`gelu_new`), layer norm ε 1e-5, attention scaled by 1/√(head size).
 */

/** One tensor of the HF layout: its name there, its tensor in ours, its HF shape. */
export interface HfGpt2Tensor {
  /** Name in a `GPT2LMHeadModel` state dict (with the `transformer.` prefix). */
  hf: string
  /** Name in {@link gptLayout}. */
  ours: string
  /** Shape in the HF file (row-major). */
  shape: readonly number[]
  /** The HF tensor is ours transposed (a Conv1D weight). */
  transpose: boolean
}

/** The GPT-2 BPE vocabulary size: a checkpoint of this vocabulary gets GPT-2's special ids in config.json. */
export const GPT2_VOCAB_SIZE = 50257
/** `<|endoftext|>`, GPT-2's bos and eos. */
export const GPT2_EOT = 50256

const LAYER: ReadonlyArray<readonly [ours: string, hf: string, transpose: boolean]> = [
  ['ln1w', 'ln_1.weight', false],
  ['ln1b', 'ln_1.bias', false],
  ['qkvw', 'attn.c_attn.weight', true],
  ['qkvb', 'attn.c_attn.bias', false],
  ['attprojw', 'attn.c_proj.weight', true],
  ['attprojb', 'attn.c_proj.bias', false],
  ['ln2w', 'ln_2.weight', false],
  ['ln2b', 'ln_2.bias', false],
  ['fcw', 'mlp.c_fc.weight', true],
  ['fcb', 'mlp.c_fc.bias', false],
  ['fcprojw', 'mlp.c_proj.weight', true],
  ['fcprojb', 'mlp.c_proj.bias', false]
]

/** Every tensor of the HF layout of `config`, in our layout's order. */
export function hfGpt2Tensors(config: GptConfig): HfGpt2Tensor[] {
  const byName = new Map(gptLayout(config).tensors.map(t => [t.name, t]))
  const shapeOf = (ours: string, transpose: boolean): number[] => {
    const s = [...byName.get(ours)!.shape]
    return transpose ? [s[1]!, s[0]!] : s
  }
  const out: HfGpt2Tensor[] = [
    { hf: 'transformer.wte.weight', ours: 'wte', shape: [config.vocabSize, config.C], transpose: false },
    { hf: 'transformer.wpe.weight', ours: 'wpe', shape: shapeOf('wpe', false), transpose: false }
  ]
  for (let l = 0; l < config.nLayer; l++) {
    for (const [ours, hf, transpose] of LAYER) {
      out.push({ hf: `transformer.h.${l}.${hf}`, ours: `h.${l}.${ours}`, shape: shapeOf(`h.${l}.${ours}`, transpose), transpose })
    }
  }
  out.push({ hf: 'transformer.ln_f.weight', ours: 'lnfw', shape: shapeOf('lnfw', false), transpose: false })
  out.push({ hf: 'transformer.ln_f.bias', ours: 'lnfb', shape: shapeOf('lnfb', false), transpose: false })
  return out
}

/**
 * Our flat parameters in the HF layout: one f32 buffer with the tensors back to back (in
 * {@link hfGpt2Tensors}' order) and where each is, ready for safetensors.
 */
export function toHfGpt2(
  flat: Float32Array,
  config: GptConfig
): { flat: Float32Array; length: number; tensors: Array<{ name: string; offset: number; shape: number[] }> } {
  const layout = gptLayout(config)
  if (flat.length !== layout.length) throw new InvalidArgumentError(`toHfGpt2: ${flat.length} parameters, the layout has ${layout.length}`)
  const byName = new Map(layout.tensors.map(t => [t.name, t]))
  const specs = hfGpt2Tensors(config)
  const length = specs.reduce((a, s) => a + s.shape[0]! * (s.shape[1] ?? 1), 0)
  const out = new Float32Array(length)
  const tensors: Array<{ name: string; offset: number; shape: number[] }> = []
  let at = 0
  for (const s of specs) {
    const t = byName.get(s.ours)!
    const n = s.shape.reduce((a, b) => a * b, 1)
    const src = flat.subarray(t.offset, t.offset + n)
    if (s.transpose) transposeInto(out.subarray(at, at + n), src, t.shape[0]!, t.shape[1]!)
    else out.set(src, at)
    tensors.push({ name: s.hf, offset: at, shape: [...s.shape] })
    at += n
  }
  return { flat: out, length, tensors }
}

/**
 * Our flat parameters from HF tensors: `get(spec)` returns the f32 values of one tensor of
 * {@link hfGpt2Tensors} in its HF shape (the caller checked the shape). wte's padding rows stay 0.
 */
export function fromHfGpt2(config: GptConfig, get: (t: HfGpt2Tensor) => Float32Array): Float32Array {
  const layout = gptLayout(config)
  const byName = new Map(layout.tensors.map(t => [t.name, t]))
  const flat = new Float32Array(layout.length)
  for (const s of hfGpt2Tensors(config)) {
    const t = byName.get(s.ours)!
    const n = s.shape.reduce((a, b) => a * b, 1)
    const src = get(s)
    if (src.length !== n) throw new InvalidArgumentError(`fromHfGpt2: ${s.hf} has ${src.length} values, its shape [${s.shape.join(', ')}] needs ${n}`)
    const dst = flat.subarray(t.offset, t.offset + n)
    if (s.transpose) transposeInto(dst, src, s.shape[0]!, s.shape[1]!)
    else dst.set(src)
  }
  return flat
}

/** dst [cols, rows] = srcᵀ, src [rows, cols] row-major. */
function transposeInto(dst: Float32Array, src: Float32Array, rows: number, cols: number): void {
  for (let r = 0; r < rows; r++) {
    const base = r * cols
    for (let c = 0; c < cols; c++) dst[c * rows + r] = src[base + c]!
  }
}

/** config.json of the HF export of `config`. */
export function hfGpt2Config(config: GptConfig): Record<string, unknown> {
  const gpt2Vocab = config.vocabSize === GPT2_VOCAB_SIZE
  return {
    architectures: ['GPT2LMHeadModel'],
    model_type: 'gpt2',
    vocab_size: config.vocabSize,
    n_positions: config.maxT,
    n_ctx: config.maxT,
    n_embd: config.C,
    n_layer: config.nLayer,
    n_head: config.nHead,
    n_inner: null,
    activation_function: 'gelu_new',
    layer_norm_epsilon: GPT_LAYERNORM_EPS,
    scale_attn_weights: true,
    tie_word_embeddings: true,
    torch_dtype: 'float32',
    // Absent, transformers' GPT2Config defaults both to 50256, outside a smaller vocabulary.
    bos_token_id: gpt2Vocab ? GPT2_EOT : null,
    eos_token_id: gpt2Vocab ? GPT2_EOT : null
  }
}

/**
 * The model shape of an HF GPT-2 config.json (parsed JSON), padded as our kernels want
 * ({@link paddedVocabSize}). Refuses what our model does not compute the same way (another
 * activation or ε, an inner size other than 4C, untied embeddings, cross-attention, ...):
 * throws InvalidArgumentError saying which key.
 */
export function parseHfGpt2Config(json: unknown): GptConfig {
  if (typeof json !== 'object' || json === null || Array.isArray(json)) throw new InvalidArgumentError('config.json is not a JSON object')
  const c = json as Record<string, unknown>
  const int = (key: string, fallback?: string): number => {
    const v = c[key] ?? (fallback === undefined ? undefined : c[fallback])
    if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 1)
      throw new InvalidArgumentError(`config.json: ${key} must be a positive integer, got ${JSON.stringify(v)}`)
    return v
  }
  if (c['model_type'] !== undefined && c['model_type'] !== 'gpt2')
    throw new InvalidArgumentError(`config.json: model_type is ${JSON.stringify(c['model_type'])}, not "gpt2"`)
  const act = c['activation_function'] ?? 'gelu_new'
  if (act !== 'gelu_new' && act !== 'gelu_pytorch_tanh')
    throw new InvalidArgumentError(`config.json: activation_function ${JSON.stringify(act)} is not the tanh GELU (gelu_new) this model computes`)
  const eps = c['layer_norm_epsilon'] ?? GPT_LAYERNORM_EPS
  if (typeof eps !== 'number' || Math.abs(eps - GPT_LAYERNORM_EPS) > 1e-12)
    throw new InvalidArgumentError(`config.json: layer_norm_epsilon ${JSON.stringify(eps)} differs from this model's ${GPT_LAYERNORM_EPS}`)
  const refuse = (key: string, ok: (v: unknown) => boolean, why: string): void => {
    if (c[key] !== undefined && !ok(c[key])) throw new InvalidArgumentError(`config.json: ${key} ${JSON.stringify(c[key])}: ${why}`)
  }
  refuse('tie_word_embeddings', v => v === true, 'the LM head must be tied to wte')
  refuse('scale_attn_weights', v => v === true, 'attention must be scaled by 1/sqrt(head size)')
  refuse('scale_attn_by_inverse_layer_idx', v => v === false, 'per-layer attention scaling is not supported')
  refuse('add_cross_attention', v => v === false, 'cross-attention is not supported')
  const C = int('n_embd')
  refuse('n_inner', v => v === null || v === 4 * C, `the MLP must be 4 x n_embd (${4 * C}) wide`)
  const vocabSize = int('vocab_size')
  const config: GptConfig = {
    vocabSize,
    paddedVocabSize: paddedVocabSize(vocabSize),
    maxT: int('n_positions', 'n_ctx'),
    nLayer: int('n_layer'),
    nHead: int('n_head'),
    C
  }
  validateGptConfig(config)
  return config
}
