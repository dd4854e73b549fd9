import type { CpuBackend, Gpt, GptBucket, GptStream, Tensor } from '../../gpu/index.ts'
import type { Collective, Member, ZeroComm } from '../../mesh/index.ts'
import { batchFor, type Batch } from '../data.ts'
import { decaySegments, type ShardRange, type ShardState } from './config.ts'
import { streamBuckets, type BucketStream, type ParamAccounting } from './streamer.ts'
import type { RunState, TrainerEnv } from './state.ts'

/** Where bucket j sits: its window of the flat vector, and this rank's part of it in its shard. */
export interface BucketWindow {
  window: { offset: number; total: number }
  length: number
  /** Offset of this rank's part in its shard (0 for an empty part). */
  at: number
  n: number
}

/** The optimizer's tensors for this rank's shard, and their views per decay segment. */
export interface ShardTensors {
  master: Tensor
  grad: Tensor
  m: Tensor
  v: Tensor
  segments: Array<{ decay: boolean; p: Tensor; g: Tensor; m: Tensor; v: Tensor }>
}

/** What one session's steps run on: the roster, its collectives, the model and the shard. */
export interface SessionParts {
  env: TrainerEnv
  rs: RunState
  roster: Member[]
  epoch: number
  rank: number
  P: number
  collective: Collective
  zero: ZeroComm
  shard: ShardRange
  model: Gpt
  opt: CpuBackend
  buckets: GptBucket[]
  windows: BucketWindow[]
  forwardOrder: number[]
  backwardOrder: number[]
  acct: ParamAccounting
  signal: AbortSignal | undefined
  /** Classifies a failure: recoverable ones become SessionInterrupted; never returns. */
  fail: (err: unknown) => never
  /** Until the first step commits, collectives allow a longer stall (a snapshot load, a compile). */
  settling: boolean
}

/** Call options of a collective call that belongs to `step`. */
export function callAt(p: SessionParts, step: number): { step: number; signal?: AbortSignal } {
  return p.signal === undefined ? { step } : { step, signal: p.signal }
}

/** Where each bucket's window and this rank's part of it lie. */
export function bucketWindows(collective: Collective, buckets: readonly GptBucket[], shard: ShardRange, N: number): BucketWindow[] {
  return buckets.map(b => {
    const window = { offset: b.start, total: N }
    const part = collective.windowOf(b.end - b.start, window)
    // Where this rank's part of the bucket sits in its shard (often nowhere: an empty part).
    return { window, length: b.end - b.start, at: part.length === 0 ? 0 : b.start + part.start - shard.start, n: part.length }
  })
}

/** Allocates the shard's optimizer tensors from `state`. */
export function shardTensors(p: SessionParts, state: ShardState): ShardTensors {
  const { opt, shard } = p
  const N = p.env.layout.length
  const master = opt.alloc('f32', [shard.length])
  const grad = opt.alloc('f32', [shard.length])
  const m = opt.alloc('f32', [shard.length])
  const v = opt.alloc('f32', [shard.length])
  opt.write(master, state.master)
  opt.write(m, state.m)
  opt.write(v, state.v)
  const segments = decaySegments(p.env.layout, shard.start, Math.min(shard.length, Math.max(0, N - shard.start))).map(x => ({
    decay: x.decay,
    p: opt.view(master, x.start - shard.start, [x.length]),
    g: opt.view(grad, x.start - shard.start, [x.length]),
    m: opt.view(m, x.start - shard.start, [x.length]),
    v: opt.view(v, x.start - shard.start, [x.length])
  }))
  return { master, grad, m, v, segments }
}

/** The weight gathers of one pass of step s, one bucket at a time. */
function weightGathers(p: SessionParts, t: ShardTensors, s: number, pass: 'forward' | 'backward'): (j: number) => ReturnType<ZeroComm['gatherWeights']> {
  const { zero, opt, buckets, windows } = p
  const own = opt.read(t.master) as Float32Array
  const mine = (j: number): Float32Array => own.subarray(windows[j]!.at, windows[j]!.at + windows[j]!.n)
  return j => zero.gatherWeights(buckets[j]!.name, mine(j), windows[j]!.length, pass, { window: windows[j]!.window, ...callAt(p, s) })
}

/** Step s's forward: this rank's batch and the stream of gathered buckets. */
export function forwardPass(p: SessionParts, t: ShardTensors, s: number): { batch: Batch; stream: BucketStream } {
  const { cfg, deps } = p.env
  p.rs.st.phase = `step ${s + 1}: forward`
  const gather = weightGathers(p, t, s, 'forward')
  const batch = batchFor(deps.corpus.train, cfg.seed, s, p.rank, cfg.B, cfg.T)
  return { batch, stream: streamBuckets(p.forwardOrder, gather, p.acct) }
}

/**
 * Step s's backward: the stream of gathered buckets, and each bucket's gradient reduce-scattered
 * as soon as it is complete (`reductions`), summed into `sums` (this rank's shard).
 */
export function backwardPass(p: SessionParts, t: ShardTensors, s: number): { stream: GptStream; reductions: Array<Promise<void>>; sums: Float32Array } {
  const { zero, buckets, windows, acct } = p
  p.rs.st.phase = `step ${s + 1}: backward`
  const sums = new Float32Array(p.shard.length)
  const reductions: Array<Promise<void>> = []
  const bwd = streamBuckets(p.backwardOrder, weightGathers(p, t, s, 'backward'), acct)
  const stream: GptStream = {
    load: bwd.load,
    grad: (j, g) => {
      acct.hold(g.byteLength)
      const w = windows[j]!
      const r = zero.reduceGradients(buckets[j]!.name, g, { window: w.window, ...callAt(p, s) }).then(res => {
        acct.release(g.byteLength)
        acct.account(res.bytes)
        sums.set(res.data, w.at)
      })
      r.catch(() => {})
      reductions.push(r)
    }
  }
  return { stream, reductions, sums }
}

/** AdamW on the shard with the summed gradient (divided by P; decay on matrices and embeddings only). */
export function applyAdamW(p: SessionParts, t: ShardTensors, sums: Float32Array, s: number): void {
  const { opt } = p
  const { cfg } = p.env
  opt.write(t.grad, sums)
  for (const x of t.segments) {
    opt.adamw(x.p, x.g, x.m, x.v, {
      lr: cfg.lr,
      beta1: 0.9,
      beta2: 0.95,
      eps: 1e-8,
      weightDecay: x.decay ? cfg.weightDecay : 0,
      step: s + 1,
      gradScale: 1 / p.P
    })
  }
}

/** Step s committed (the loss all-reduce returned `lossSum`): status, throughput, the membership's step. */
export function commitStep(p: SessionParts, s: number, lossSum: number, ms: number): void {
  const { cfg, deps } = p.env
  const st = p.rs.st
  p.settling = false
  st.step = s + 1
  st.loss = lossSum / p.P
  st.tokensPerS = ms > 0 ? (p.P * cfg.B * cfg.T) / (ms / 1000) : undefined
  deps.membership.setStep(s + 1)
}
