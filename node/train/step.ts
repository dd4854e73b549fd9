import {
  adam8Blocks,
  type AdamWParams,
  type Backend,
  type LionParams,
  type Fence,
  type Gpt,
  type GptBucket,
  type GptStream,
  type HostArray,
  type Tensor
} from '../../gpu/index.ts'
import type { Collective, Member, TierBytes, ZeroComm } from '../../mesh/index.ts'
import type { QuantOptions } from '../../codec/index.ts'
import type { OuterArrays } from '../../snapshot/index.ts'
import { applyFragment, exchange, fragmentRange, inFlightAt, sendFragment, sendsAt, type OuterConfig, type OuterSchedule } from './outer.ts'
import { batchFor, type Batch } from '../data.ts'
import type { SaveSource } from './persist.ts'
import {
  codedMoments,
  decaySegments,
  keepsV,
  TrainingError,
  updateRule,
  type ShardRange,
  type ShardState,
  type StepPhases,
  type TrainStatus
} from './config.ts'
import { adam8Runs, fitsAdam8 } from './adam8.ts'
import { afterFence, deviceBuckets, streamBuckets, type ParamAccounting } from './streamer.ts'
import type { RunState, TrainerEnv } from './state.ts'
import { hostSpace } from './host-reserve.ts'
import { pacedCopy, writePaced } from './host-copy.ts'
import { hostBuckets, hostOptimizerStep, registerHost, unregisterHost, type Offload } from './offload.ts'

/** Where bucket j sits: its window of the flat vector, and this rank's part of it in its shard. */
export interface BucketWindow {
  window: { offset: number; total: number }
  length: number
  /** Offset of this rank's part in its shard (0 for an empty part). */
  at: number
  n: number
}

/**
 * The optimizer's tensors for this rank's shard, on the model's backend (a CUDA rank's shard
 * never leaves the device but for the bytes that go on the wire), and their views per decay
 * segment.
 */
export interface ShardTensors {
  master: Tensor
  grad: Tensor
  /** The first moment: f32, or u8 codes for the 8-bit optimizers. */
  m: Tensor
  /** AdamW's second moment (f32, or u8 codes for 8-bit AdamW; undefined for Lion and 8-bit Lion). */
  v: Tensor | undefined
  /** The 8-bit optimizers' block absmaxes (adam8.ts lays them out; undefined for the others). */
  scales: Tensor | undefined
  segments: Array<{ decay: boolean; p: Tensor; g: Tensor; m: Tensor; v: Tensor | undefined; s: Tensor | undefined }>
  /**
   * What goes on the wire (undefined on a `local` rank): the master shard on the host for the
   * weight gathers, downloaded after each AdamW (`ready` passes when it is there), the
   * landing space of every bucket's gradient on its way to the reduce-scatter, and the
   * results the collectives write into (`into`: gathered buckets at their flat range, reduced
   * parts at their shard offset), page-locked so the uploads that follow are fast.
   */
  wire: { master: Float32Array; ready: Fence; grads: Float32Array; gathered: Float32Array; reduced: Float32Array } | undefined
  /** The state's way to snapshots and the disk tier (persist.ts). */
  save: SaveSource
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
  /** The model's backend: the shard and AdamW live there too (but with `host`). */
  be: Backend
  /**
   * `--offload cpu` (offload.ts): the shard's tensors live on this host backend instead, in
   * memory shared with the optimizer's threads; the model's buckets are uploaded from it and
   * its gradients downloaded into it.
   */
  host: Offload | undefined
  /**
   * The rank's weights and gradients never need the wire: one rank and exact (f32) wires, so
   * the gathers and reductions are device copies (bit-identical to the collective's identity).
   */
  local: boolean
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
  /** The DiLoCo tier (zone groups): `P`, `collective` and `zero` are then this rank's zone group's. */
  outer: OuterParts | undefined
}

/** A session's part of the DiLoCo tier (outer.ts). */
export interface OuterParts {
  cfg: OuterConfig
  sc: OuterSchedule
  quant: QuantOptions
  /** The ranks at this rank's place in every zone group, zone by zone. */
  coll: Collective
  /** This rank's zone group (its rank in `coll`) and the number of groups. */
  zone: number
  zones: number
  /** The outer state, on the host (saves copy it). */
  state: OuterArrays | undefined
  /** Exchanges sent and not applied yet, by fragment. */
  inflight: Map<number, { sentAt: number; result: Promise<{ all: Uint32Array; bytes: TierBytes }> }>
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

/**
 * Allocates the shard's optimizer tensors from `state`. A large shard is uploaded piece by
 * piece with turns of the event loop between (host-copy.ts): then the tensors come in a
 * promise; a small one's at once, as always.
 */
export function shardTensors(p: SessionParts, state: ShardState): ShardTensors | Promise<ShardTensors> {
  const { shard } = p
  const be = shardBe(p)
  const k8 = codedMoments(p.env.cfg)
  const eight = k8 !== 0
  const a8 = state.adam8
  const blocks = eight ? adam8Runs(p.env.layout, shard).blocks : 0
  if (k8 !== 0 && (a8 === undefined || !fitsAdam8(a8, shard.length, blocks, k8)))
    throw new TrainingError(`the 8-bit ${p.env.cfg.optimizer} state loaded for this shard does not fit it (${shard.length} elements in ${blocks} blocks)`)
  // A zeroth-order rank (zo.ts) keeps only the master shard: its gradient and moment tensors
  // are single elements that nothing reads.
  const zo = p.env.cfg.zo !== undefined
  const master = be.alloc('f32', [shard.length])
  const grad = be.alloc('f32', [zo ? 1 : shard.length])
  const m = be.alloc(eight ? 'u8' : 'f32', [zo ? 1 : shard.length])
  const v = k8 === 2 || keepsV(p.env.cfg) ? be.alloc(eight ? 'u8' : 'f32', [shard.length]) : undefined
  const scales = eight ? be.alloc('f32', [k8 * blocks]) : undefined
  const turn = (): Promise<void> => p.env.deps.clock.turn()
  const uploads: Array<[Tensor, HostArray]> =
    a8 !== undefined && eight
      ? [[master, state.master], [m, a8.m], ...(v === undefined ? [] : [[v, a8.v] as [Tensor, Uint8Array]]), [scales!, a8.scales]]
      : zo
        ? [[master, state.master]]
        : [[master, state.master], [m, state.m], ...(v === undefined ? [] : [[v, state.v] as [Tensor, Float32Array]])]
  const free = (): void => {
    for (const x of [master, grad, m, v, scales]) if (x !== undefined) be.free(x)
  }
  // Offloaded: the device copies buckets out of the master and gradients into the gradient.
  if (p.host !== undefined) {
    try {
      registerHost(p, master, grad)
    } catch (err) {
      free()
      throw err
    }
  }
  if (!pacedCopy(shard.length)) {
    for (const [t, a] of uploads) be.write(t, a)
    return shardParts(p, master, grad, m, v, scales)
  }
  return (async () => {
    try {
      // One after another: each gives the loop back between its pieces.
      for (const [t, a] of uploads) await writePaced(be, t, a, turn)
    } catch (err) {
      unregisterHost(p, master, grad)
      free()
      throw err
    }
    return shardParts(p, master, grad, m, v, scales)
  })()
}

/** The views, wire space and save source over a shard's tensors (written already). */
function shardParts(p: SessionParts, master: Tensor, grad: Tensor, m: Tensor, v: Tensor | undefined, scales: Tensor | undefined): ShardTensors {
  const { shard } = p
  const be = shardBe(p)
  const N = p.env.layout.length
  // 8-bit moments: a segment's blocks are its run's (adam8.ts), in the order of the segments.
  const runs = scales === undefined ? undefined : adam8Runs(p.env.layout, shard).runs
  const k8 = codedMoments(p.env.cfg)
  const zo = p.env.cfg.zo !== undefined
  // (No optimizer segments and no wire buffers for a zeroth-order rank: it never runs them.)
  const segments = zo
    ? []
    : decaySegments(p.env.layout, shard.start, Math.min(shard.length, Math.max(0, N - shard.start))).map((x, i) => ({
        decay: x.decay,
        p: be.view(master, x.start - shard.start, [x.length]),
        g: be.view(grad, x.start - shard.start, [x.length]),
        m: be.view(m, x.start - shard.start, [x.length]),
        v: v === undefined ? undefined : be.view(v, x.start - shard.start, [x.length]),
        s: runs === undefined ? undefined : be.view(scales!, k8 * runs[i]!.block, [k8 * adam8Blocks(x.length)])
      }))
  let wire: ShardTensors['wire']
  if (!p.local && !zo) {
    const f32 = (n: number): Float32Array => p.be.hostAlloc('f32', n) as Float32Array
    if (p.host !== undefined) {
      // The shard is on the host already: the gathers read the master, the reductions land in the gradient.
      const h = p.host.be
      wire = { master: h.storage(master) as Float32Array, ready: h.fence(), grads: f32(N), gathered: f32(N), reduced: h.storage(grad) as Float32Array }
    } else {
      const host = f32(shard.length)
      wire = { master: host, ready: be.download(host, master), grads: f32(N), gathered: f32(N), reduced: f32(shard.length) }
    }
  }
  const save = {
    be,
    master,
    m,
    v,
    scales,
    weightsOnly: p.env.cfg.zo !== undefined,
    host: undefined,
    space: hostSpace(be, p.rs.hostReserve),
    pending: undefined,
    async: false,
    placing: false,
    outer: undefined
  }
  return { master, grad, m, v, scales, segments, wire, save }
}

/** Releases the shard's tensors and host buffers (the session is over). */
export function freeShardTensors(p: SessionParts, t: ShardTensors): void {
  unregisterHost(p, t.master, t.grad)
  const be = shardBe(p)
  for (const x of [t.master, t.grad, t.m, t.v, t.scales]) if (x !== undefined) be.free(x)
  // (Offloaded, the wire's master and reduced are the shard's own tensors.)
  if (t.wire !== undefined)
    for (const a of p.host === undefined ? [t.wire.master, t.wire.grads, t.wire.gathered, t.wire.reduced] : [t.wire.grads, t.wire.gathered]) p.be.freeHost(a)
}

/** The backend the shard's tensors are on: the model's, or (offloaded) the host's. */
export function shardBe(p: SessionParts): Backend {
  return p.host?.be ?? p.be
}

/**
 * A local rank's buckets: its shard is the whole model, so each bucket is a device copy of its
 * range (offloaded: an upload of it from the host).
 */
export function shardBuckets(p: SessionParts, t: ShardTensors): GptStream {
  const { clock } = p.env.deps
  if (p.host !== undefined) return hostBuckets(p, p.host.be.storage(t.master) as Float32Array)
  return deviceBuckets(
    j => p.be.view(t.master, p.windows[j]!.at, [p.windows[j]!.n]),
    () => clock.turn()
  )
}

/** The buckets of one pass of step s: gathered from every rank, or (local) copied from the shard on the device. */
function passBuckets(p: SessionParts, t: ShardTensors, s: number, pass: 'forward' | 'backward'): GptStream {
  const { zero, be, buckets, windows } = p
  const order = pass === 'forward' ? p.forwardOrder : p.backwardOrder
  const wire = t.wire
  if (wire === undefined) return shardBuckets(p, t)
  const mine = (j: number): Float32Array => wire.master.subarray(windows[j]!.at, windows[j]!.at + windows[j]!.n)
  const signal = p.signal === undefined ? {} : { signal: p.signal }
  const gather = (j: number): ReturnType<ZeroComm['gatherWeights']> =>
    afterFence(wire.ready, signal, () =>
      zero.gatherWeights(buckets[j]!.name, mine(j), windows[j]!.length, pass, {
        window: windows[j]!.window,
        into: wire.gathered.subarray(buckets[j]!.start, buckets[j]!.end),
        ...callAt(p, s)
      })
    )
  return streamBuckets(order, gather, p.acct, be)
}

/** Step s's forward: this rank's batch and the stream of gathered buckets. */
export function forwardPass(p: SessionParts, t: ShardTensors, s: number): { batch: Batch; stream: GptStream } {
  const { cfg, deps } = p.env
  p.rs.st.phase = `step ${s + 1}: forward`
  const batch = batchFor(deps.corpus.train, cfg.seed, s, p.rank, cfg.B, cfg.T)
  return { batch, stream: passBuckets(p, t, s, 'forward') }
}

/**
 * Step s's backward: the stream of gathered buckets, and each bucket's gradient reduce-scattered
 * as soon as it is complete (`reductions`), its part written into the shard's gradient. A local
 * rank copies each gradient into its shard on the device instead.
 */
export function backwardPass(p: SessionParts, t: ShardTensors, s: number): { stream: GptStream; reductions: Array<Promise<void>> } {
  const { zero, be, buckets, windows, acct } = p
  p.rs.st.phase = `step ${s + 1}: backward`
  const reductions: Array<Promise<void>> = []
  const load = passBuckets(p, t, s, 'backward').load
  const wire = t.wire
  const signal = p.signal === undefined ? {} : { signal: p.signal }
  if (wire === undefined && p.host !== undefined) {
    // Offloaded, local: each gradient goes straight into the host shard.
    const grads = p.host.be.storage(t.grad)
    const grad = (j: number, g: Tensor): void => {
      const r = afterFence(be.download(grads, g, windows[j]!.at), signal, async () => {})
      r.catch(() => {})
      reductions.push(r)
    }
    return { stream: { load, grad }, reductions }
  }
  if (wire === undefined) return { stream: { load, grad: (j, g) => be.copy(be.view(t.grad, windows[j]!.at, [windows[j]!.n]), g) }, reductions }
  const stream: GptStream = {
    load,
    grad: (j, g) => {
      const b = buckets[j]!
      const w = windows[j]!
      // The bucket's range of the landing space: written by this download only, read by its reduction.
      const host = wire.grads.subarray(b.start, b.end)
      acct.hold(host.byteLength)
      const into = wire.reduced.subarray(w.at, w.at + w.n)
      const r = afterFence(be.download(wire.grads, g, b.start), signal, () =>
        zero.reduceGradients(b.name, host, { window: w.window, into, ...callAt(p, s) })
      ).then(res => {
        acct.release(host.byteLength)
        acct.account(res.bytes)
        // (Offloaded, `into` is the host shard's gradient.)
        if (w.n > 0 && p.host === undefined) be.write(t.grad, res.data, w.at)
        else if (w.n > 0 && res.data !== into) into.set(res.data)
      })
      r.catch(() => {})
      reductions.push(r)
    }
  }
  return { stream, reductions }
}

/**
 * The optimizer (AdamW, Lion, or their 8-bit forms: one call per segment, its blocks from the
 * segment's start) on the shard with its summed gradient (divided by P; decay on matrices and
 * embeddings only), on the model's backend; then the new master shard starts on its way to the
 * host for the next step's gathers.
 */
export function applyOptimizer(p: SessionParts, t: ShardTensors, s: number): Promise<void> | undefined {
  if (p.host !== undefined) return hostOptimizerStep(p, t, s)
  const { be } = p
  const lion = updateRule(p.env.cfg.optimizer) === 'lion'
  for (const x of t.segments) {
    if (lion) {
      const hp = lionParams(p, x.decay)
      if (x.s !== undefined) be.lion8bit(x.p, x.g, x.m, x.s, hp)
      else be.lion(x.p, x.g, x.m, hp)
      continue
    }
    const adam = adamParams(p, x.decay, s)
    if (x.s !== undefined) be.adamw8bit(x.p, x.g, x.m, x.v!, x.s, adam)
    else be.adamw(x.p, x.g, x.m, x.v!, adam)
  }
  if (t.wire !== undefined) t.wire.ready = be.download(t.wire.master, t.master)
  return undefined
}

/** Step s's AdamW hyperparameters for a segment (decay on matrices and embeddings only). */
export function adamParams(p: SessionParts, decay: boolean, s: number): AdamWParams {
  const { cfg } = p.env
  return { lr: cfg.lr, beta1: 0.9, beta2: 0.95, eps: 1e-8, weightDecay: decay ? cfg.weightDecay : 0, step: s + 1, gradScale: 1 / p.P }
}

/** Lion's hyperparameters for a segment. */
export function lionParams(p: SessionParts, decay: boolean): LionParams {
  const { cfg } = p.env
  return { lr: cfg.lr, beta1: 0.9, beta2: 0.99, weightDecay: decay ? cfg.weightDecay : 0, gradScale: 1 / p.P }
}

/**
 * Exchanges that a rank rolled back into (a step inside their window) are sent again from the
 * saved state, in send order, as every other rank does.
 */
export function resumeOuter(p: SessionParts, step: number): void {
  const o = p.outer!
  const n = p.shard.length
  const again: Array<{ c: number; f: number }> = []
  for (let f = 0; f < o.sc.fragments; f++) {
    const c = inFlightAt(o.sc, step, f)
    if (c !== undefined) again.push({ c, f })
  }
  again.sort((a, b) => a.c - b.c || a.f - b.f)
  for (const { c, f } of again) track(o, f, c, exchange(o.coll, o.state!, fragmentRange(o.sc, n, f), o.quant, callAt(p, c - 1)))
}

function track(o: OuterParts, f: number, sentAt: number, result: Promise<{ all: Uint32Array; bytes: TierBytes }>): void {
  result.catch(() => {})
  o.inflight.set(f, { sentAt, result })
}

/**
 * The outer step after step s's AdamW (zone groups only): the exchanges due now are applied
 * (streaming: sent `delay` steps ago), the fragments due are sent (without streaming, and at
 * the last step for every fragment, applied at once, so every zone ends with the same
 * weights). Returns a promise only when there is something to do.
 */
export function outerStep(p: SessionParts, t: ShardTensors, s: number, interrupt: (stop: AbortSignal) => Promise<never>): Promise<void> | undefined {
  const o = p.outer!
  const { cfg } = p.env
  const count = s + 1
  const last = count === cfg.steps
  const due = [...o.inflight.entries()].filter(([, x]) => last || x.sentAt + o.sc.delay <= count).sort((a, b) => a[1].sentAt - b[1].sentAt || a[0] - b[0])
  const sends = last ? Array.from({ length: o.sc.fragments }, (_, f) => f) : sendsAt(o.sc, count)
  if (due.length === 0 && sends.length === 0) return undefined
  const be = shardBe(p)
  const n = p.shard.length
  const opts = { ...o.quant, lr: o.cfg.lr, momentum: o.cfg.momentum }
  const inner = be.read(t.master) as Float32Array
  let applied = false
  const land = async (f: number, result: Promise<{ all: Uint32Array; bytes: TierBytes }>): Promise<void> => {
    const stop = new AbortController()
    const got = await Promise.race([result, interrupt(stop.signal)]).finally(() => stop.abort())
    p.acct.account(got.bytes)
    applyFragment(o.state!, inner, fragmentRange(o.sc, n, f), got.all, o.zones, o.zone, opts)
    applied = true
    o.inflight.delete(f)
  }
  return (async () => {
    p.rs.st.phase = `step ${count}: outer step`
    for (const [f, x] of due) await land(f, x.result)
    for (const f of sends) {
      const result = sendFragment(o.coll, o.state!, inner, fragmentRange(o.sc, n, f), o.quant, callAt(p, s))
      if (o.sc.delay === 0 || last) await land(f, result)
      else track(o, f, count, result)
    }
    // A step that only sent read the weights; one that applied an exchange changed them.
    if (!applied) return
    be.write(t.master, inner)
    if (t.wire !== undefined && p.host === undefined) t.wire.ready = be.download(t.wire.master, t.master)
  })()
}

/** Step s committed (the loss all-reduce returned `lossSum`): status, throughput, the membership's step. */
export function commitStep(p: SessionParts, s: number, lossSum: number, ms: number): void {
  const { cfg, deps } = p.env
  const st = p.rs.st
  p.settling = false
  st.step = s + 1
  st.loss = lossSum / p.P
  // Every rank of the roster trains at once (zone groups too): the run's tokens in this step's time.
  st.tokensPerS = ms > 0 ? (p.roster.length * cfg.B * cfg.T) / (ms / 1000) : undefined
  deps.membership.setStep(s + 1)
}

/** A roster's step phases: their mean per step, kept in the status (the roster's first step, a warm-up, left out). */
export class PhaseTimes {
  private readonly st: TrainStatus
  private readonly sum: StepPhases = { compute: 0, wire: 0, optimizer: 0, snapshot: 0 }
  private steps = 0

  constructor(st: TrainStatus) {
    this.st = st
    st.phases = undefined
  }

  add(x: StepPhases, first: boolean): void {
    if (first) return
    this.steps++
    for (const k of ['compute', 'wire', 'optimizer', 'snapshot'] as const) this.sum[k] += x[k]
    const n = this.steps
    this.st.phases = { compute: this.sum.compute / n, wire: this.sum.wire / n, optimizer: this.sum.optimizer / n, snapshot: this.sum.snapshot / n }
  }
}
