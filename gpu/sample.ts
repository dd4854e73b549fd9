import { InvalidArgumentError, throwIfAborted, type Rng } from '../core/index.ts'
import type { Backend, Tensor } from './backend.ts'
import { Gpt, type GptConfig, type GptStream } from './gpt.ts'

/**
 * Text generation from a GPT: one sequence (B = 1) of T positions. Each new token runs the
 * forward over the last T tokens, padded after the last real one (causal attention: the
 * padding never changes the logits at a real position), and draws from the logits there.
 * The draw is a pure function of the logits and the caller's Rng, so a seed gives one text.
 *
 * The model is a streamed {@link Gpt} (params 'stream': no gradients or AdamW state for a
 * full model) whose buckets are views of one resident copy of the weights on the backend.
 */
export interface SampleOptions {
  /** Tokens to generate. */
  tokens: number
  /** Softmax temperature; 0 takes the most likely token (the lowest id among equals). */
  temperature: number
  /** Draw only among the k most likely tokens (0 or absent: all). */
  topK?: number
  /** Where the draws come from (temperature > 0). */
  rng: Rng
  /** Draw only ids below this (a tokenizer smaller than the model's vocabulary). Default: the vocabulary. */
  idsBelow?: number
  /** Stop after this id (end of text). */
  stopAt?: number
  /** Called with every generated id, as it is drawn. */
  onToken?: (id: number) => void
  signal?: AbortSignal
}

export class GptSampler {
  readonly backend: Backend
  readonly model: Gpt
  private readonly weights: Tensor
  private readonly stream: GptStream

  /** `flat`: the model's f32 parameters (gpu/gpt.ts layout); `T`: positions per forward (≤ maxT). */
  constructor(backend: Backend, config: GptConfig, flat: Float32Array, T: number) {
    this.backend = backend
    this.model = new Gpt(backend, config, { B: 1, T, dtype: 'f32', seed: 0, params: 'stream' })
    try {
      if (flat.length !== this.model.layout.length)
        throw new InvalidArgumentError(`sampler: ${flat.length} parameters, the model has ${this.model.layout.length}`)
      this.weights = backend.alloc('f32', [flat.length])
    } catch (err) {
      this.model.dispose()
      throw err
    }
    backend.write(this.weights, flat)
    const buckets = this.model.buckets
    this.stream = { load: async j => backend.view(this.weights, buckets[j]!.start, [buckets[j]!.end - buckets[j]!.start]) }
  }

  /** The prompt's ids followed by up to `o.tokens` generated ones (fewer when `stopAt` is drawn). */
  async generate(prompt: ArrayLike<number>, o: SampleOptions): Promise<number[]> {
    const { T } = this.model
    const V = this.model.config.vocabSize
    if (prompt.length === 0) throw new InvalidArgumentError('sampler: the prompt needs at least one token')
    if (!Number.isSafeInteger(o.tokens) || o.tokens < 0) throw new InvalidArgumentError(`sampler: tokens must be a non-negative integer, got ${o.tokens}`)
    if (!(o.temperature >= 0) || !Number.isFinite(o.temperature)) throw new InvalidArgumentError(`sampler: temperature must be >= 0, got ${o.temperature}`)
    const n = Math.min(V, o.idsBelow ?? V)
    const seq = Array.from(prompt)
    const input = new Int32Array(T)
    for (let i = 0; i < o.tokens; i++) {
      throwIfAborted(o.signal)
      const window = seq.slice(-T)
      input.fill(0)
      input.set(window)
      await this.model.forwardStreamed(input, null, this.stream)
      const id = pick(this.model.logitsAt(0, window.length - 1), n, o)
      seq.push(id)
      o.onToken?.(id)
      if (id === o.stopAt) break
    }
    return seq
  }

  /** The logits of every position of `ids` (at most T of them): one f32 row of the vocabulary each. */
  async logits(ids: ArrayLike<number>): Promise<Float32Array[]> {
    const { T } = this.model
    if (ids.length === 0 || ids.length > T) throw new InvalidArgumentError(`sampler: logits of 1 to ${T} tokens, got ${ids.length}`)
    const input = new Int32Array(T)
    input.set(Array.from(ids))
    await this.model.forwardStreamed(input, null, this.stream)
    return Array.from({ length: ids.length }, (_, t) => this.model.logitsAt(0, t))
  }

  dispose(): void {
    this.backend.free(this.weights)
    this.model.dispose()
  }
}

/** One draw from logits[0..n): greedy at temperature 0, else softmax(logits / temperature) over the top k. */
export function pick(logits: Float32Array, n: number, o: Pick<SampleOptions, 'temperature' | 'topK' | 'rng'>): number {
  let best = 0
  for (let i = 0; i < n; i++) {
    const x = logits[i]!
    if (!Number.isFinite(x)) throw new InvalidArgumentError(`sampler: the model's logit of token ${i} is ${x}`)
    if (x > logits[best]!) best = i
  }
  if (o.temperature === 0) return best
  let ids: number[] = Array.from({ length: n }, (_, i) => i)
  const k = o.topK ?? 0
  if (k > 0 && k < n) {
    ids.sort((a, b) => logits[b]! - logits[a]! || a - b)
    ids = ids.slice(0, k).sort((a, b) => a - b)
  }
  const max = logits[best]!
  const p = ids.map(i => Math.exp((logits[i]! - max) / o.temperature))
  const sum = p.reduce((a, b) => a + b, 0)
  let u = o.rng.float() * sum
  for (let j = 0; j < ids.length; j++) {
    u -= p[j]!
    if (u < 0) return ids[j]!
  }
  return ids.at(-1)!
}
