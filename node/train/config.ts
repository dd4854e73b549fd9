import { createHash } from 'node:crypto'
import { InvalidArgumentError, ZeromeshError, checkCap, type Clock, type Logger, type MetricsRegistry } from '../../core/index.ts'
import { GPT_PRESETS, moments8Of, paddedVocabSize, type Backend, type GptConfig, type GptLayout, type Moments8 } from '../../gpu/index.ts'
import { COLLECTIVE_LIMITS, type CollectiveSent, type Membership, type PeerNet } from '../../mesh/index.ts'
import { corpusVocabSize, type Corpus } from '../data.ts'
import type { TokenizerName } from '../tokenizer.ts'
import { readCheckpointInfo, type Adam8Arrays, type OuterArrays, type RankState, type SnapshotCoder } from '../../snapshot/index.ts'
import type { OuterConfig } from './outer.ts'

/**
 * What a trainer runs: ZeRO-3 data parallelism over the first `worldSize` members of the
 * view; the rest are spares.
 *
 * Per step s, on rank r of P:
 * 1. gather the weights from every rank's f32 master shard (flat ZeRO-3, or qwZ: int8 blocks);
 * 2. forward on this rank's batch, a pure function of (seed, s, r);
 * 3. gather again for the backward (hpZ: from the zone's secondary partition only) and run it;
 * 4. reduce-scatter the gradients (flat, or qgZ: the hierarchical int4 all-to-all), so rank r
 *    holds the summed gradient of its shard; divide by P;
 * 5. AdamW on the shard (decay on matrices and embeddings only);
 * 6. all-reduce the loss: when it returns, every rank finished step s, which commits it.
 */
/** A zeroth-order run's settings (TrainConfig.zo; node/train/zo.ts). */
export interface ZoConfig {
  /** The perturbation's size ε (MeZO: 1e-3). */
  eps: number
}

/** The default ε of `--zo`. */
export const ZO_DEFAULT_EPS = 1e-3

/** The optimizers a run may use (`--optimizer`; the settings word is the index: append, never reorder). */
export const OPTIMIZERS = ['adamw', 'lion', 'adamw8bit', 'lion8bit'] as const
export type Optimizer = (typeof OPTIMIZERS)[number]

/** The optimizer tag of the states a run with `cfg` saves (snapshot/state.ts: absent for AdamW; 'zo' for zeroth-order runs, the weights alone). */
export function stateOptimizer(cfg: Pick<TrainConfig, 'optimizer' | 'zo'>): RankState['optimizer'] {
  if (cfg.zo !== undefined) return 'zo'
  return cfg.optimizer === 'adamw' ? undefined : cfg.optimizer
}

/** The update rule of an optimizer: AdamW's (adamw, adamw8bit) or Lion's (lion, lion8bit), whatever its state is kept in. */
export function updateRule(optimizer: Optimizer | undefined): 'adamw' | 'lion' {
  return optimizer === 'lion' || optimizer === 'lion8bit' ? 'lion' : 'adamw'
}

/**
 * The learning rate of a run without `--lr`: AdamW's rule 3e-3; Lion's 1e-4, 30x smaller (its
 * sign update moves every parameter by lr; on `small`, 150 steps, 1e-4 gave a held-out loss
 * 17% lower than 3e-4 and 3e-5, docs/PERFORMANCE.md "Optimizers"); zeroth-order steps 1e-3.
 */
export function defaultLr(optimizer: Optimizer | undefined, zo: boolean): number {
  if (zo) return 1e-3
  return updateRule(optimizer) === 'lion' ? 1e-4 : 3e-3
}

/** Whether the run's optimizer keeps an f32 second moment (v): AdamW does; Lion keeps none, 8-bit AdamW keeps its v in codes, zeroth-order runs none. */
export function keepsV(cfg: Pick<TrainConfig, 'optimizer' | 'zo'>): boolean {
  return cfg.zo === undefined && (cfg.optimizer === undefined || cfg.optimizer === 'adamw')
}

/**
 * The moments the run's optimizer keeps as 8-bit codes (gpu/adam8.ts; node/train/adam8.ts lays
 * them out on a shard): 2 for adamw8bit (m and v), 1 for lion8bit (m), 0 for the others.
 */
export function codedMoments(cfg: Pick<TrainConfig, 'optimizer'>): 0 | Moments8 {
  return moments8Of(cfg.optimizer)
}

export interface TrainConfig {
  model: GptConfig
  B: number
  T: number
  steps: number
  lr: number
  weightDecay: number
  seed: number
  /**
   * The optimizer (default AdamW, β 0.9 / 0.95): 'lion' keeps one moment instead of two (β 0.9 /
   * 0.99, a sign update; it wants a learning rate 10-30x smaller), so its state, snapshots and
   * disk tier files are 8 bytes per parameter instead of 12; 'adamw8bit' keeps AdamW's two
   * moments as one byte each in 2048-element blocks (gpu/adam8.ts): about 6 bytes per parameter;
   * 'lion8bit' keeps Lion's one moment so: about 5 bytes per parameter.
   */
  optimizer?: Optimizer
  /**
   * Zeroth-order training (`--zo`, MeZO; node/train/zo.ts): forward passes only, every rank
   * holding the whole model, one (projected gradient, loss) pair per rank exchanged per step;
   * `optimizer` is then unused. Not with ZeRO++, the DiLoCo tier or a growing world.
   */
  zo?: ZoConfig
  /**
   * `--offload cpu` (offload.ts): the shard's master weights, gradient and optimizer state in
   * host memory, updated on `threads` worker threads (default: the cores beyond two, at most
   * 16); the device holds the streamed model and the activations only. Not with `zo`.
   */
  offload?: { threads?: number }
  /**
   * A checkpoint (snapshot/checkpoint.ts: an HF GPT-2 dir or a zeromesh export) whose weights
   * are step 0's instead of the seed's; its shape must be `model`. Every rank reads the same
   * file, at the start and on a recovery to step 0, so runs stay bit-exact.
   */
  initFrom?: string
  /**
   * The run's identity ({@link runIdentity}), written into every state this trainer saves
   * (snapshots and disk tier) and checked against the disk tier's files on `--resume`.
   */
  identity?: Uint8Array
  /** Ranks that train; members beyond them are spares. */
  worldSize: number
  /** ZeRO++ (qwZ + hpZ + qgZ) instead of flat ZeRO-3. */
  zeroPP: boolean
  dtype: 'f32' | 'bf16'
  /**
   * Erasure-coded snapshot of every rank: k data + m parity fragments, after every `every`-th
   * committed step (default 1) and after the first step of every session, so a roster always
   * has a snapshot of its own to roll back to.
   */
  snapshot: { k: number; m: number; every?: number } | undefined
  /**
   * Disk tier (node/disk-tier.ts): persist this rank's state to `dir` every `every` committed
   * steps (0: never), and with `resume` start from the newest step every rank has on disk.
   */
  disk?: { dir: string; every: number; resume: boolean }
  /** How long a rank left in a minority of the view waits for the majority (default 5 min). */
  minorityWaitMs?: number
  /**
   * Grow the run up to this many ranks (default: worldSize, never): nodes that join the mesh
   * while it trains become ranks at the next step boundary every rank agrees on.
   */
  maxWorldSize?: number
  /**
   * The DiLoCo tier (outer.ts): the ranks form `outer.zones` zone groups that train apart and
   * average their pseudo-gradients every `outer.every` steps. Undefined: one ZeRO-3 group
   * synchronized every step.
   */
  outer?: OuterConfig
  /**
   * Where snapshot fragments go: 'zone' keeps a rank's fragments on hosts of its own zone
   * where the zone has enough other members (cheap links; the default with `outer`), 'spread'
   * spreads them over hosts and zones (a whole zone's loss leaves the others' fragments).
   */
  snapshotPlacement?: 'zone' | 'spread'
}

/** A trainer's state for status output, metrics and tests. */
export interface TrainStatus {
  role: 'waiting' | 'rank' | 'spare' | 'done' | 'failed'
  rank: number | undefined
  worldSize: number
  /** Steps committed so far. */
  step: number
  steps: number
  /** Mean loss over the ranks at the last committed step. */
  loss: number | undefined
  /** Loss of the final weights on a fixed held-out batch (set when training completes). */
  evalLoss: number | undefined
  tokensPerS: number | undefined
  epoch: number
  /** Bytes this node sent, per tier, since training began. */
  bytes: { host: number; zone: number; wan: number }
  /** Newest step of this rank's snapshot placed on its peers. */
  snapshotStep: number | undefined
  /** Snapshot fragment bytes this node stored on holders, by the tier of the link (same host, same zone, across zones). */
  snapshotBytes?: { host: number; zone: number; wan: number }
  /** Recoveries this node took part in, newest last. */
  recoveries: Array<{ mode: 'replace' | 'shrink'; lost: number[]; fromStep: number; ms: number }>
  /** Steps retried with the same ranks after a failure that lost nobody (a stall, a reset stream). */
  retries: number
  /** The disk tier step this run resumed from (--resume). */
  resumedFrom?: number
  /** What this node is doing now, in a few words (for status and for diagnosing a stuck run). */
  phase: string
  /** Times the run grew (late joiners became ranks), newest last. */
  growths: Array<{ from: number; to: number; atStep: number }>
  /** Parameter memory of this rank (bytes), measured by the trainer; see {@link ParamMemory}. */
  memory?: ParamMemory
  /** Where this rank's steps spend their time: mean ms per step of the current roster, its first step (warm-up) left out. */
  phases?: StepPhases
  error?: string
}

/**
 * A rank's step time by phase, in ms measured on the host clock. `compute`: the forward and
 * backward passes (a GPU's work is counted where the host waits for it, the loss read that
 * ends the forward); `wire`: waiting for gathered buckets, gradient reductions and the loss
 * all-reduce; `optimizer`: AdamW (on a GPU only its launch: the device runs it while the next
 * forward is being issued); `snapshot`: issuing the saves, waiting for one that may not be
 * skipped, and on a local rank the event-loop turn it takes per step, in which background work
 * runs (a snapshot's capture copy and placement, mostly).
 */
export interface StepPhases {
  compute: number
  wire: number
  optimizer: number
  snapshot: number
}

/**
 * What a rank holds for the parameters. ZeRO-3 keeps it near Ψ/P plus the buckets in flight:
 * `shard` is the owned state (f32 master weights, their gradient, AdamW m and v: 4 × Ψ/P
 * elements); `model` the streamed model's buffers (the embeddings and final layernorm, two
 * block slots, each with its gradient, plus their bf16 copies); `inFlightPeak` the most bytes
 * of gathered weights and gradient copies alive at once (prefetched buckets, reductions
 * not yet sent). `full` is what one replica of the model with its gradient and AdamW state
 * takes (16 bytes per parameter), for comparison.
 */
export interface ParamMemory {
  shard: number
  model: number
  inFlightPeak: number
  full: number
  /** `--offload cpu`: the owned shard is in host memory, not the device's. */
  hostShard?: boolean
}

/** One line for people: what a rank holds for the parameters against a full replica. */
export function formatParamMemory(m: ParamMemory): string {
  const mib = (b: number): string => (b / 2 ** 20).toFixed(b < 2 ** 20 ? 3 : 1)
  const total = m.shard + m.model + m.inFlightPeak
  return (
    `parameter memory per rank ${mib(total)} MiB (owned shard ${mib(m.shard)}${m.hostShard === true ? ' in host memory' : ''} + streamed model ${mib(m.model)} + peak in flight ${mib(m.inFlightPeak)}), ` +
    `${((100 * total) / m.full).toFixed(0)}% of a full replica's ${mib(m.full)} MiB`
  )
}

/** One line for people: where a rank's steps spend their time (mean ms per step). */
export function formatStepPhases(x: StepPhases, who = 'rank 0'): string {
  const ms = (v: number): string => `${v.toFixed(v < 10 ? 1 : 0)} ms`
  const total = x.compute + x.wire + x.optimizer + x.snapshot
  return `step time of ${who} ${ms(total)}: compute ${ms(x.compute)}, waiting on the wire ${ms(x.wire)}, optimizer ${ms(x.optimizer)}, snapshot ${ms(x.snapshot)}`
}

/**
 * The model shapes `--model` names, from gpu/'s {@link GPT_PRESETS} (the one model registry);
 * the vocabulary comes from the data.
 */
export const TRAIN_MODELS = Object.freeze(['mini', 'small', 'gpt2-124m'] as const)
export type TrainModelName = (typeof TRAIN_MODELS)[number]

/** The GPT config of a named shape for a vocabulary (padded to a multiple of 64 for the kernels: gpu's paddedVocabSize). */
export function trainingModel(name: TrainModelName, vocabSize: number): GptConfig {
  const { maxT, nLayer, nHead, C } = GPT_PRESETS[name]
  return { maxT, nLayer, nHead, C, vocabSize, paddedVocabSize: paddedVocabSize(vocabSize) }
}

/**
 * The model a run trains: the `initFrom` checkpoint's shape (read from its config.json or
 * metadata, every tensor checked), else the named shape for the data's vocabulary under the
 * tokenizer. What `zeromesh start`, `export` and `sample` agree on.
 */
export async function runModelConfig(o: {
  model: TrainModelName
  data?: string | undefined
  tokenizer?: TokenizerName
  initFrom?: string | undefined
}): Promise<GptConfig> {
  if (o.initFrom !== undefined) return (await readCheckpointInfo(o.initFrom)).config
  return trainingModel(o.model, corpusVocabSize(o.data, o.tokenizer))
}

/** Training cannot go on (a configuration the mesh cannot hold, state that cannot be recovered). */
export class TrainingError extends ZeromeshError {
  static override name = 'TrainingError'
}

/** What a trainer is given to run. */
export interface TrainerDeps {
  backend: Backend
  net: PeerNet
  membership: Membership
  clock: Clock
  log: Logger
  corpus: Corpus
  /** The node's metrics registry: the snapshot service registers its metrics here. */
  metrics?: MetricsRegistry
  /**
   * Where the snapshot service seals and codes (worker threads on real nodes, made and stopped
   * by the node). Absent: inline on the trainer's thread, paced by its clock (the simulator).
   */
  snapshotCoder?: SnapshotCoder
  /**
   * Simulated compute (the simulator's cost model): after this rank's forward and backward,
   * the trainer sleeps this many ms on its clock, so virtual time reflects the GPU work the
   * CPU reference did in no virtual time. Absent on real nodes.
   */
  computeMs?: (tokens: number) => number
  /** Called after every committed step (progress lines, metrics). */
  onStep?: (s: TrainStatus) => void
  /** Called for every collective message this node sends (the simulator's per-op byte counts). */
  onCollectiveSent?: (sent: CollectiveSent) => void
}

/** Checks a configuration against the data before anything starts. */
export function validateTrainConfig(cfg: TrainConfig, corpus: Corpus): void {
  const int = (name: string, v: number, min: number): void => {
    if (!Number.isSafeInteger(v) || v < min) throw new InvalidArgumentError(`${name} must be an integer >= ${min}, got ${v}`)
  }
  int('B', cfg.B, 1)
  int('T', cfg.T, 1)
  int('steps', cfg.steps, 0)
  int('worldSize', cfg.worldSize, 1)
  if (cfg.maxWorldSize !== undefined) {
    int('maxWorldSize', cfg.maxWorldSize, cfg.worldSize)
    checkCap('maxWorldSize', cfg.maxWorldSize, COLLECTIVE_LIMITS.maxGroupSize)
  }
  if (cfg.T > cfg.model.maxT) throw new InvalidArgumentError(`T ${cfg.T} exceeds the model's context of ${cfg.model.maxT}`)
  if (corpus.vocabSize > cfg.model.vocabSize) {
    throw new InvalidArgumentError(`the data has ${corpus.vocabSize} token ids but the model's vocabulary is ${cfg.model.vocabSize}`)
  }
  if (!(cfg.lr > 0) || !(cfg.weightDecay >= 0)) throw new InvalidArgumentError('lr must be > 0 and weightDecay >= 0')
  if (cfg.zo !== undefined) {
    // In f32 too: the kernels add ±ε as an f32, and the settings word of ε 0 reads "off".
    if (!(Math.fround(cfg.zo.eps) > 0 && Number.isFinite(Math.fround(cfg.zo.eps))))
      throw new InvalidArgumentError(`--zo-eps must be a finite number > 0 (in f32), got ${cfg.zo.eps}`)
    if (cfg.zeroPP || cfg.outer !== undefined)
      throw new InvalidArgumentError('--zo (zeroth-order training) does not combine with --zeropp or the DiLoCo tier (--outer-every)')
    if ((cfg.maxWorldSize ?? cfg.worldSize) !== cfg.worldSize)
      throw new InvalidArgumentError('--zo does not combine with --max-world-size (growing the run) yet')
    if (cfg.optimizer !== undefined && cfg.optimizer !== 'adamw')
      throw new InvalidArgumentError(`--zo replaces the optimizer: drop --optimizer ${cfg.optimizer}`)
    if (cfg.offload !== undefined) throw new InvalidArgumentError('--offload cpu moves optimizer state to the host, and a --zo run keeps none: drop --offload')
  }
  const o = cfg.outer
  if (o !== undefined) {
    int('outer.every', o.every, 1)
    int('outer.zones', o.zones, 1)
    if (cfg.worldSize % o.zones !== 0)
      throw new InvalidArgumentError(`--world-size ${cfg.worldSize} must split into ${o.zones} equal zone groups (--outer-zones) for the DiLoCo tier`)
    if ((cfg.maxWorldSize ?? cfg.worldSize) !== cfg.worldSize)
      throw new InvalidArgumentError('--max-world-size (growing the run) does not combine with the DiLoCo tier yet')
    if (!(o.lr > 0) || !(o.momentum >= 0 && o.momentum < 1)) throw new InvalidArgumentError('the outer lr must be > 0 and the outer momentum in [0, 1)')
  }
}

/** A contiguous run of the flat buffer that AdamW treats alike (decayed or not). */
export interface Segment {
  start: number
  length: number
  decay: boolean
}

/** The decay segments of the flat range [start, start + length). */
export function decaySegments(layout: GptLayout, start: number, length: number): Segment[] {
  const out: Segment[] = []
  const end = start + length
  for (const t of layout.tensors) {
    const a = Math.max(start, t.offset)
    const b = Math.min(end, t.offset + t.length)
    if (a >= b) continue
    const last = out.at(-1)
    if (last !== undefined && last.decay === t.decay && last.start + last.length === a) last.length += b - a
    else out.push({ start: a, length: b - a, decay: t.decay })
  }
  // Padding past the last tensor (shards round up) is left alone: its gradient is always 0.
  return out
}

/** One rank's optimizer state between sessions: the f32 master shard and the optimizer's moments. */
export interface ShardState {
  step: number
  master: Float32Array
  /** The first moment; empty for the 8-bit optimizers. */
  m: Float32Array
  /** AdamW's second moment; empty for Lion and the 8-bit optimizers. */
  v: Float32Array
  /** The 8-bit optimizers' moments (codes and block absmaxes, laid out by node/train/adam8.ts). */
  adam8?: Adam8Arrays
  /** The DiLoCo tier's state of the shard (a run with `outer`). */
  outer?: OuterArrays
}

/** A half-open range of the flat parameter buffer that one rank owns. */
export interface ShardRange {
  start: number
  length: number
}

/**
 * The run's identity: SHA-256 of the run id, the model shape, the seed and the settings that
 * change the arithmetic of a step (batch, sequence, learning rate, weight decay, ZeRO++, the
 * DiLoCo tier, the dtype). Two runs whose state files could be mixed by mistake (the same run
 * id and shapes, another seed or learning rate) have different identities. The step count and
 * the world size are left out: a run may be resumed to train longer, and it shrinks and grows.
 */
export function runIdentity(
  run: string,
  c: Pick<TrainConfig, 'model' | 'B' | 'T' | 'lr' | 'weightDecay' | 'seed' | 'zeroPP' | 'outer' | 'dtype' | 'optimizer' | 'zo'>
): Uint8Array {
  const m = c.model
  const canonical = JSON.stringify({
    v: 1,
    run,
    model: [m.vocabSize, m.paddedVocabSize, m.maxT, m.nLayer, m.nHead, m.C],
    seed: c.seed,
    B: c.B,
    T: c.T,
    lr: c.lr,
    weightDecay: c.weightDecay,
    zeroPP: c.zeroPP,
    dtype: c.dtype,
    outer: c.outer === undefined ? null : [c.outer.every, c.outer.zones, c.outer.quant, c.outer.streaming, c.outer.lr, c.outer.momentum],
    // Only where it is not the default: AdamW runs keep the identities they had.
    ...(c.optimizer === undefined || c.optimizer === 'adamw' ? {} : { optimizer: c.optimizer }),
    ...(c.zo === undefined ? {} : { zo: [c.zo.eps] })
  })
  return new Uint8Array(createHash('sha256').update(canonical).digest())
}
