import { AbortError, InvalidArgumentError, ZeromeshError, checkCap, shardRange, type Clock, type Logger, type MetricsRegistry } from '../core/index.ts'
import { CpuBackend, GPT_PRESETS, Gpt, gptBuckets, gptLayout, initGptParams, type Backend, type GptConfig, type GptLayout } from '../gpu/index.ts'
import type { Member, Membership, PeerNet, PeerId, View } from '../mesh/index.ts'
import { NoSnapshotError, SNAPSHOT_LIMITS, TransferTimeoutError, UnrecoverableError, createSnapshotService, encodeState, type RankState, type SnapshotService } from '../snapshot/index.ts'
import { diskSteps, loadDiskState, persistDiskState } from './disk-tier.ts'
import { COLLECTIVE_LIMITS, CollectiveError, createCollective, createZeroComm, type Collective, type ZeroComm } from '../mesh/collective/index.ts'
import { batchFor, type Corpus } from './data.ts'

/**
 * The trainer of one worker (DESIGN §4): ZeRO-3 data parallelism over the first `worldSize`
 * members of the view; the rest are spares.
 *
 * Per step s, on rank r of P:
 * 1. gather the weights from every rank's f32 master shard (flat ZeRO-3, or qwZ: int8 blocks);
 * 2. forward on this rank's batch, a pure function of (seed, s, r);
 * 3. gather again for the backward (hpZ: from the zone's secondary partition only) and run it;
 * 4. reduce-scatter the gradients (flat, or qgZ: the hierarchical int4 all-to-all), so rank r
 *    holds the summed gradient of its shard; divide by P;
 * 5. AdamW on the shard (decay on matrices and embeddings only);
 * 6. all-reduce the loss: when it returns, every rank finished step s, which commits it.
 *
 * The whole model is gathered once per pass (not bucket by bucket), so a rank holds the full
 * parameters during forward and backward; buckets are future work (docs/LIMITS.md).
 */
export interface TrainConfig {
  model: GptConfig
  B: number
  T: number
  steps: number
  lr: number
  weightDecay: number
  seed: number
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
  snapshot: { k: number, m: number, every?: number } | undefined
  /**
   * Disk tier (node/disk-tier.ts): persist this rank's state to `dir` every `every` committed
   * steps (0: never), and with `resume` start from the newest step every rank has on disk.
   */
  disk?: { dir: string, every: number, resume: boolean }
  /** How long a rank left in a minority of the view waits for the majority (default 5 min). */
  minorityWaitMs?: number
  /**
   * Grow the run up to this many ranks (default: worldSize, never): nodes that join the mesh
   * while it trains become ranks at the next step boundary every rank agrees on.
   */
  maxWorldSize?: number
}

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
  bytes: { host: number, zone: number, wan: number }
  /** Newest step of this rank's snapshot placed on its peers. */
  snapshotStep: number | undefined
  /** Recoveries this node took part in, newest last. */
  recoveries: Array<{ mode: 'replace' | 'shrink', lost: number[], fromStep: number, ms: number }>
  /** Steps retried with the same ranks after a failure that lost nobody (a stall, a reset stream). */
  retries: number
  /** The disk tier step this run resumed from (--resume). */
  resumedFrom?: number
  /** What this node is doing now, in a few words (for status and for diagnosing a stuck run). */
  phase: string
  /** Times the run grew (late joiners became ranks), newest last. */
  growths: Array<{ from: number, to: number, atStep: number }>
  /** Parameter memory of this rank (bytes), measured by the trainer; see {@link ParamMemory}. */
  memory?: ParamMemory
  error?: string
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
}

/** One line for people: what a rank holds for the parameters against a full replica. */
export function formatParamMemory (m: ParamMemory): string {
  const mib = (b: number): string => (b / 2 ** 20).toFixed(b < 2 ** 20 ? 3 : 1)
  const total = m.shard + m.model + m.inFlightPeak
  return `parameter memory per rank ${mib(total)} MiB (owned shard ${mib(m.shard)} + streamed model ${mib(m.model)} + peak in flight ${mib(m.inFlightPeak)}), ` +
    `${(100 * total / m.full).toFixed(0)}% of a full replica's ${mib(m.full)} MiB`
}

/** Model shapes `--model` names; the vocabulary comes from the data. */
export const TRAIN_MODELS = Object.freeze({
  /** ~0.1 M parameters: trains visibly on a CPU in seconds (the `zeromesh up` default). */
  mini: { maxT: 64, nLayer: 2, nHead: 4, C: 64 },
  small: { maxT: GPT_PRESETS.small.maxT, nLayer: GPT_PRESETS.small.nLayer, nHead: GPT_PRESETS.small.nHead, C: GPT_PRESETS.small.C },
  'gpt2-124m': { maxT: 1024, nLayer: 12, nHead: 12, C: 768 }
})
export type TrainModelName = keyof typeof TRAIN_MODELS

/** The GPT config of a named shape for a vocabulary (padded to a multiple of 64 for the kernels). */
export function trainingModel (name: TrainModelName, vocabSize: number): GptConfig {
  return { ...TRAIN_MODELS[name], vocabSize, paddedVocabSize: Math.ceil(vocabSize / 64) * 64 }
}

export class TrainingError extends ZeromeshError {
  static override name = 'TrainingError'
}

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
   * Simulated compute (the simulator's cost model): after this rank's forward and backward,
   * the trainer sleeps this many ms on its clock, so virtual time reflects the GPU work the
   * CPU reference did in no virtual time. Absent on real nodes.
   */
  computeMs?: (tokens: number) => number
  /** Called after every committed step (progress lines, metrics). */
  onStep?: (s: TrainStatus) => void
}

export function validateTrainConfig (cfg: TrainConfig, corpus: Corpus): void {
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
}

/** A contiguous run of the flat buffer that AdamW treats alike (decayed or not). */
interface Segment { start: number, length: number, decay: boolean }

/** The decay segments of the flat range [start, start + length). */
export function decaySegments (layout: GptLayout, start: number, length: number): Segment[] {
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


const DONE_TOPIC = 'train/done'
/** Ranks tell spares the run grows: u32 view epoch, u32 ranks added, u32 step (little-endian). */
const GROW_TOPIC = 'train/grow'
/**
 * Rank 0 announces the roster to nodes that joined late (they cannot derive it: ranks may have
 * been replaced before they came): JSON { epoch, members: [{ id, zone, host }] }, with the
 * labels the roster uses (a replacement keeps the lost rank's place in the ring, labels too).
 */
const ROSTER_TOPIC = 'train/roster'
/** How often rank 0 repeats the roster while nodes beyond it are in the view. */
const ROSTER_EVERY_MS = 1000
/** How often old ranks repeat a growth announcement while the grown run exchanges state. */
const GROW_EVERY_MS = 500
/** Installed views kept by epoch (a growth names one; spares may have consumed it already). */
const RECENT_VIEWS = 64

/** Every rank agreed to grow the run with the joiners of view `epoch` after `step` committed. */
class SessionGrow extends Error {
  readonly epoch: number
  readonly count: number
  readonly step: number
  constructor (epoch: number, count: number, step: number) {
    super(`growing by ${count} rank(s) from view ${epoch} after step ${step}`)
    this.epoch = epoch
    this.count = count
    this.step = step
  }
}

/** A roster announcement, or undefined for anything malformed (checked before it is used). */
function rosterOf (data: Uint8Array): { epoch: number, members: Member[] } | undefined {
  if (data.length > 256 * 1024) return undefined
  let v: unknown
  try {
    v = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(data))
  } catch {
    return undefined
  }
  if (typeof v !== 'object' || v === null) return undefined
  const { epoch, members } = v as { epoch?: unknown, members?: unknown }
  if (!Number.isSafeInteger(epoch) || (epoch as number) < 0 || !Array.isArray(members) || members.length < 1 || members.length > COLLECTIVE_LIMITS.maxGroupSize) return undefined
  const out: Member[] = []
  for (const m of members as unknown[]) {
    const { id, zone, host } = (typeof m === 'object' && m !== null ? m : {}) as Record<string, unknown>
    if (typeof id !== 'string' || typeof zone !== 'string' || typeof host !== 'string' || id.length > 128 || zone.length > 128 || host.length > 128) return undefined
    out.push({ id, zone, host })
  }
  if (new Set(out.map(m => m.id)).size !== out.length) return undefined
  return { epoch: epoch as number, members: out }
}

/** The roster grown by the first `count` members of `view` that are not on it (view order). */
function grownRoster (roster: Member[], view: View, count: number): Member[] {
  const on = new Set(roster.map(m => m.id))
  return [...roster, ...view.members.filter(m => !on.has(m.id)).slice(0, count)]
}

/** One rank's optimizer state between sessions: the f32 master shard and AdamW moments. */
interface ShardState { step: number, master: Float32Array, m: Float32Array, v: Float32Array }

/** Why a training session ended early. */
class SessionInterrupted extends Error {
  /**
   * Set when a snapshot needed for recovery could not be decoded: here (the error), or on
   * another rank, which said so in its failure notice (its peer id).
   */
  readonly unrecoverable: UnrecoverableError | { reportedBy: string } | undefined
  constructor (message: string, unrecoverable?: UnrecoverableError | { reportedBy: string }) {
    super(message)
    this.unrecoverable = unrecoverable
  }
}

/** Recovery attempts (view changes or retries) a rank makes before it gives up. */
const MAX_ATTEMPTS = 8
/** After a failed step, how long past the detector's bound a view change may take to arrive. */
const RETRY_SLACK_MS = 2000
/** Snapshot transfers' idle timeout in the trainer. */
const SNAPSHOT_IDLE_MS = 10_000
/** Extra collective timeout until a session's first step commits (see the session). */
const SETTLE_GRACE_MS = SNAPSHOT_IDLE_MS + 5000
/** How long a rank in a minority waits for the majority before it fails. */
const DEFAULT_MINORITY_WAIT_MS = 300_000
/** Installed views a trainer queues before it consumes them (the oldest are dropped beyond). */
const MAX_QUEUED_VIEWS = 1024
/** Disk tier files each member offers on --resume (the newest ones). */
const DISK_SLOTS = 2

export class Trainer {
  private readonly deps: TrainerDeps
  private readonly cfg: TrainConfig
  private readonly layout: GptLayout
  private readonly st: TrainStatus
  private readonly sent = { host: 0, zone: 0, wan: 0 }
  private snapshots: SnapshotService | undefined
  private unsubs: Array<() => void> = []
  private firstFull: View | undefined
  private readonly viewQueue: View[] = []
  private readonly recentViews = new Map<number, View>()
  /** The newest roster rank 0 announced (spares that joined late adopt it). */
  private announced: { epoch: number, members: Member[] } | undefined
  /** When rank 0 last announced the roster (monotonic ms). */
  private announcedAt = -Infinity
  /** Every node that was on a roster this node used. */
  private readonly rostered = new Set<PeerId>()
  /** The newest growth the ranks announced (spares apply it to their roster). */
  private growTo: { epoch: number, count: number, step: number } | undefined
  /** This rank's state when the run grew (handed to the new ranks in the next session). */
  private growState: { rank: number, state: ShardState } | undefined
  /** This rank's growth announcement, repeated while the grown run exchanges state. */
  private growMsg: Uint8Array | undefined
  /** The step of the last growth applied here (later announcements of it are stale). */
  private lastGrowStep = -1
  private seenEpoch = 0
  private lastView: View | undefined

  constructor (deps: TrainerDeps, cfg: TrainConfig) {
    validateTrainConfig(cfg, deps.corpus)
    this.deps = deps
    this.cfg = cfg
    this.layout = gptLayout(cfg.model)
    // Every view installed from now on is queued and consumed in order: a roster changes by
    // each view that drops one of its members, so every node must see the same sequence (the
    // current view alone can hide a member that was dropped and re-admitted in between).
    const full = (v: View | undefined): boolean => v !== undefined && v.members.length >= cfg.worldSize
    const now = deps.membership.view()
    if (full(now)) this.firstFull = now
    this.unsubs.push(deps.membership.on('view', v => {
      if (this.firstFull === undefined && full(v)) this.firstFull = v
      this.recentViews.set(v.epoch, v)
      if (this.recentViews.size > RECENT_VIEWS) this.recentViews.delete(this.recentViews.keys().next().value!)
      this.viewQueue.push(v)
      if (this.viewQueue.length > MAX_QUEUED_VIEWS) this.viewQueue.shift()
    }))
    this.st = {
      role: 'waiting', rank: undefined, worldSize: cfg.worldSize, step: 0, steps: cfg.steps, loss: undefined, evalLoss: undefined, tokensPerS: undefined,
      epoch: 0, bytes: this.sent, snapshotStep: undefined, recoveries: [], retries: 0, growths: [], phase: 'waiting for the first full view'
    }
  }

  status (): TrainStatus {
    return { ...this.st, bytes: { ...this.sent }, recoveries: [...this.st.recoveries], growths: [...this.st.growths] }
  }

  /**
   * Waits for a view with `worldSize` members, then trains to `steps`, recovering from lost
   * ranks on the way. Resolves when this node's part is over: training done, or (a spare)
   * the run finished without needing it.
   */
  async run (signal?: AbortSignal): Promise<TrainStatus> {
    const { net, clock, membership, log } = this.deps
    try {
      // Subscribed first: a node that joins late must not miss an announcement made while it
      // waits for its first view or starts its snapshot service.
      // Ranks announce the end of the run, so spares stop waiting (and do not mistake ranks
      // leaving after the last step for lost ones).
      this.unsubs.push(net.subscribe(DONE_TOPIC, {
        validate: msg => (msg.data.length === 4 ? 'accept' : 'reject'),
        // (From any node that was ever a rank here: a spare that read a finished rank's
        // departure as a loss has already replaced it on its roster.)
        deliver: msg => { if (this.rostered.has(msg.from)) this.runDone = true }
      }))
      this.unsubs.push(net.subscribe(ROSTER_TOPIC, {
        validate: msg => (rosterOf(msg.data) === undefined ? 'reject' : 'accept'),
        deliver: msg => {
          const a = rosterOf(msg.data)
          // Only a rank speaks for its own roster.
          if (a === undefined || !a.members.some(m => m.id === msg.from)) return
          if (a.epoch >= (this.announced?.epoch ?? 0)) this.announced = a
        }
      }))
      this.unsubs.push(net.subscribe(GROW_TOPIC, {
        validate: msg => (msg.data.length === 12 ? 'accept' : 'reject'),
        deliver: msg => {
          if (!this.rostered.has(msg.from)) return
          const d = new DataView(msg.data.buffer, msg.data.byteOffset, 12)
          const g = { epoch: d.getUint32(0, true), count: d.getUint32(4, true), step: d.getUint32(8, true) }
          if (g.count > 0 && g.step > this.lastGrowStep && g.epoch > (this.growTo?.epoch ?? 0)) this.growTo = g
        }
      }))
      // The first view with enough members, as installed (recorded from construction on):
      // polling the current view instead could see a later one after a false suspicion, and
      // nodes would then disagree on the roster.
      const first = this.firstFull ?? await this.waitForView(v => v.members.length >= this.cfg.worldSize, signal)
      // The roster maps logical ranks to nodes; it starts as the first P members of the first
      // full view and changes only by replacing or dropping lost ranks.
      let roster: Member[] = first.members.slice(0, this.cfg.worldSize)
      for (const m of roster) this.rostered.add(m.id)
      let epoch = first.epoch
      // True while the roster is the one derived from the first full view (see adopt below).
      let derived = true
      this.seenEpoch = first.epoch
      this.lastView = first
      if (this.cfg.snapshot !== undefined) {
        const { k, m } = this.cfg.snapshot
        if (k + m > first.members.length - 1) {
          throw new TrainingError(`--snapshot ${k}+${m} places ${k + m} fragments on as many other nodes, but the mesh has ${first.members.length} ` +
            `(${first.members.length - 1} besides each rank): use a smaller k+m, add nodes, or --snapshot off`)
        }
        // No re-stripe on a view change: it would move the holders' recovery point past the
        // version a recovery still needs (the lost ranks' newest); the trainer re-captures at
        // the next commit under the new view anyway.
        this.snapshots = createSnapshotService({ k: this.cfg.snapshot.k, m: this.cfg.snapshot.m, idleTimeoutMs: SNAPSHOT_IDLE_MS, autoRestripe: false }, { net, clock, log: log.child({ component: 'snapshot' }), ...(this.deps.metrics === undefined ? {} : { metrics: this.deps.metrics }) })
        await this.snapshots.start()
        this.snapshots.setView(first)
        this.unsubs.push(membership.on('view', v => this.snapshots?.setView(v)))
      }
      let state: ShardState | undefined
      // Sessions under one roster are numbered, so a retry never mixes with the messages of the
      // attempt before it (every rank fails an attempt, so every rank counts the same).
      let round = 0
      let unrecoverable = 0
      if (this.cfg.disk?.resume === true) this.pending = { mode: 'resume', lost: [], oldRoster: roster }
      for (let attempt = 0; ; attempt++) {
        const rank = roster.findIndex(m => m.id === net.self.id)
        this.st.epoch = epoch
        this.st.worldSize = roster.length
        if (rank < 0) {
          this.st.role = 'spare'
          this.st.rank = undefined
          this.st.phase = 'spare: waiting for a lost rank or the end of the run'
          // A spare waits until a view drops a rank it can take, or the run ends.
          // (`signal` ends the wait when the run is over: `zeromesh up` stops its spares.)
          let next: View | undefined
          let grow: View | undefined
          const adopt = (): void => {
            // A roster derived from the first view this node saw is only a guess for a node
            // that joined late: the ranks' announcement replaces it (or a newer one does).
            const a = this.announced
            const key = (ms: Member[]): string => ms.map(m => `${m.id}/${m.zone}/${m.host}`).join()
            if (a === undefined || (!derived && a.epoch <= epoch) || key(a.members) === key(roster)) return
            roster = a.members
            for (const m of roster) this.rostered.add(m.id)
            epoch = Math.max(epoch, a.epoch)
            derived = false
            log.info({ epoch: a.epoch, ranks: roster.length }, 'adopted the roster the ranks announced')
          }
          adopt()
          while ((next = this.nextLoss(roster)) === undefined && !this.runDone && (grow = this.pendingGrowth(roster)) === undefined) {
            if (signal?.aborted === true) throw new AbortError('training aborted while waiting for the mesh')
            await clock.sleep(50, signal === undefined ? {} : { signal })
            adopt()
          }
          if (grow !== undefined && next === undefined) {
            // The ranks grew the run: the roster grows alike here, and this node may be on it.
            const g = this.growTo!
            this.growTo = undefined
            this.lastGrowStep = g.step
            const old = roster
            roster = grownRoster(roster, grow, g.count)
            for (const m of roster) this.rostered.add(m.id)
            derived = false
            this.st.growths.push({ from: old.length, to: roster.length, atStep: g.step })
            this.consumeThrough(grow)
            this.pending = { mode: 'grow', lost: [], oldRoster: old }
            epoch = grow.epoch
            round = 0
            state = undefined
            continue
          }
          if (next === undefined) return this.status()
          const change = this.replan(roster, next)
          roster = change.roster
          for (const m of roster) this.rostered.add(m.id)
          derived = false
          epoch = next.epoch
          round = 0
          state = undefined
          continue
        }
        this.st.role = 'rank'
        this.st.rank = rank
        try {
          await this.session(roster, epoch, round, rank, state, signal)
          const done = new Uint8Array(4)
          new DataView(done.buffer).setUint32(0, this.st.step, true)
          await net.publish(DONE_TOPIC, done).catch(() => {})
          this.st.role = 'done'
          return this.status()
        } catch (err) {
          if (this.runDone && this.finalShard === undefined) {
            // Another rank announced the end of the run (every step committed) and this node
            // never finished a roster's last step: it was a spare (or was replaced) that read
            // finished ranks leaving as lost ones. The run does not need it.
            log.info({ err: err instanceof Error ? err.message : String(err) }, 'the run finished without this node')
            this.st.role = 'spare'
            this.st.phase = 'the run finished without this node'
            return this.status()
          }
          if (err instanceof SessionGrow) {
            const v = this.recentViews.get(err.epoch)
            if (v === undefined) throw new TrainingError(`view ${err.epoch} that the run grows with is no longer known here`)
            this.lastGrowStep = err.step
            this.growTo = undefined
            const old = roster
            roster = grownRoster(roster, v, err.count)
            for (const m of roster) this.rostered.add(m.id)
            derived = false
            this.consumeThrough(v)
            this.pending = { mode: 'grow', lost: [], oldRoster: old }
            this.st.growths.push({ from: old.length, to: roster.length, atStep: err.step })
            log.info({ from: old.length, to: roster.length, step: err.step, epoch: err.epoch }, 'the run grows: late joiners become ranks')
            epoch = err.epoch
            round = 0
            state = undefined
            continue
          }
          if (!(err instanceof SessionInterrupted)) throw err
          if (this.st.step >= this.cfg.steps && this.finalShard !== undefined) {
            // Every step is committed; only the held-out evaluation's gather failed (a rank
            // that finished first left while its last bytes were in flight). Training is done.
            log.warn({ err: err.message }, 'the final evaluation gather failed: training is complete, the held-out loss is not reported')
            this.st.role = 'done'
            return this.status()
          }
          if (this.cfg.snapshot === undefined) throw new TrainingError(`${err.message}; snapshots are off (--snapshot off), so a lost or stalled rank ends the run`)
          // The same snapshot twice out of reach: more holders are gone than the code tolerates.
          unrecoverable = err.unrecoverable === undefined ? 0 : unrecoverable + 1
          if (unrecoverable >= 2 || attempt >= MAX_ATTEMPTS) throw this.giveUp(err)
          log.warn({ err: err.message, step: this.st.step }, 'training step failed: recovering')
          this.st.phase = `after a failure: waiting for a view change (${err.message})`
          const next = await this.afterFailure(roster, signal)
          if (next === undefined) {
            // Nobody was lost (a stall, a reset stream): the same ranks roll back to the newest
            // snapshot they all have and run the step again (or redo the unfinished recovery).
            round++
            this.st.retries++
            this.pending ??= { mode: 'replace', lost: [], oldRoster: roster }
            log.warn({ round, epoch }, 'no training member was lost: retrying from the newest common snapshot')
          } else {
            const change = this.replan(roster, next)
            roster = change.roster
            for (const m of roster) this.rostered.add(m.id)
            derived = false
          for (const m of roster) this.rostered.add(m.id)
            epoch = next.epoch
            round = 0
          }
          state = undefined
        }
      }
    } catch (err) {
      // A spare told to stop (the run is over) ends quietly.
      if (this.st.role === 'spare' && signal?.aborted === true) return this.status()
      this.st.role = 'failed'
      this.st.error = err instanceof Error ? err.message : String(err)
      throw err
    } finally {
      for (const u of this.unsubs) u()
      this.unsubs = []
      await this.snapshots?.stop()
    }
  }

  /**
   * The first queued view (in installation order, newer than any seen) that drops a member of
   * `roster`; views that only add members are consumed on the way. Undefined when none is queued.
   */
  private nextLoss (roster: Member[]): View | undefined {
    return this.scanLoss(roster, true)
  }

  /** The view of an announced growth once this node has it (spares), else undefined. */
  private pendingGrowth (roster: Member[]): View | undefined {
    const g = this.growTo
    if (g === undefined || roster.length + g.count > (this.cfg.maxWorldSize ?? this.cfg.worldSize)) return undefined
    return this.recentViews.get(g.epoch)
  }

  /** Marks every queued view up to `v` (inclusive) as seen. */
  private consumeThrough (v: View): void {
    let i = 0
    while (i < this.viewQueue.length && this.viewQueue[i]!.epoch <= v.epoch) i++
    this.viewQueue.splice(0, i)
    if (v.epoch > this.seenEpoch) {
      this.seenEpoch = v.epoch
      this.lastView = v
    }
  }

  /**
   * What this rank proposes for growth after a step: the newest installed view, when it keeps
   * every roster member (no loss is queued) and holds members beyond the roster, and how many
   * of them fit under maxWorldSize.
   */
  private growCandidate (roster: Member[]): { epoch: number, count: number } | undefined {
    const max = this.cfg.maxWorldSize ?? this.cfg.worldSize
    if (roster.length >= max || this.scanLoss(roster, false) !== undefined) return undefined
    const v = this.deps.membership.view()
    if (v === undefined || v.epoch < this.seenEpoch || !this.recentViews.has(v.epoch)) return undefined
    if (!roster.every(m => v.members.some(x => x.id === m.id))) return undefined
    const count = Math.min(v.members.length - roster.length, max - roster.length)
    return count > 0 ? { epoch: v.epoch, count } : undefined
  }

  /** {@link nextLoss} without consuming (`consume` false): is a breaking view queued? */
  private scanLoss (roster: Member[], consume: boolean): View | undefined {
    let seen = this.seenEpoch
    let last = this.lastView
    let found: View | undefined
    let i = 0
    for (; i < this.viewQueue.length && found === undefined; i++) {
      const v = this.viewQueue[i]!
      if (v.epoch <= seen) continue
      seen = v.epoch
      // Members keep their order from view to view (removals close up, joiners are appended),
      // so a member that moved relative to the others was dropped and re-admitted in views
      // this node did not see: it counts as lost, as it did for the nodes that saw them.
      const back = last === undefined ? new Set<PeerId>() : readmitted(last, v)
      last = v
      const eff = back.size === 0 ? v : { epoch: v.epoch, members: v.members.filter(m => !back.has(m.id)) }
      if (roster.some(m => !eff.members.some(x => x.id === m.id))) found = eff
    }
    if (consume) {
      this.viewQueue.splice(0, i)
      this.seenEpoch = seen
      this.lastView = last
    }
    return found
  }



  /**
   * Lost ranks are replaced by spares in view order; with too few spares the run shrinks.
   * Applied to every breaking view in order. While a recovery has not finished, the plan stays
   * relative to the roster whose snapshots hold the state (`pending.oldRoster`): a replace that
   * keeps every position loads each logical rank's own state; anything else rebuilds the full
   * state and re-partitions it (shrink), which is right for any new roster.
   */
  private replan (roster: Member[], view: View): { roster: Member[], lost: number[], mode: 'replace' | 'shrink' } {
    const inView = new Set(view.members.map(m => m.id))
    const onRoster = new Set(roster.map(m => m.id))
    const spares = view.members.filter(m => !onRoster.has(m.id))
    const lost = roster.map((m, r) => (inView.has(m.id) ? -1 : r)).filter(r => r >= 0)
    let out: Member[]
    let mode: 'replace' | 'shrink'
    if (spares.length >= lost.length) {
      // A replacement takes the lost rank's place in the ring (its labels too), so the
      // reduction order, and with it every bit of the result, stays what it was.
      let next = 0
      out = roster.map(m => (inView.has(m.id) ? m : { ...m, id: spares[next++]!.id }))
      mode = 'replace'
    } else {
      out = roster.filter(m => inView.has(m.id))
      mode = 'shrink'
    }
    const prev = this.pending
    const oldRoster = prev?.oldRoster ?? roster
    const held = new Set(out.map(m => m.id))
    const lostOld = oldRoster.map((m, r) => (held.has(m.id) ? -1 : r)).filter(r => r >= 0)
    if (prev?.mode === 'resume') this.pending = { mode: 'resume', lost: lostOld, oldRoster }
    else if (prev?.mode === 'grow') {
      // A member was lost before the grown run exchanged its state: rebuild it from the old
      // ranks' snapshots and re-partition for whatever roster this is.
      this.growState = undefined
      this.pending = { mode: 'shrink', lost: lostOld, oldRoster }
    } else {
      const keepsPlaces = prev === undefined ? mode === 'replace' : prev.mode === 'replace' && mode === 'replace' && out.length === oldRoster.length
      this.pending = { mode: keepsPlaces ? 'replace' : 'shrink', lost: lostOld, oldRoster }
    }
    return { roster: out, lost, mode }
  }

  private runDone = false

  /** This rank's master weights after the last step (tests compare runs bit for bit). */
  finalShard: { start: number, data: Float32Array } | undefined

  private pending: { mode: 'replace' | 'shrink' | 'resume' | 'grow', lost: number[], oldRoster: Member[] } | undefined

  /**
   * After a failed session: the view that dropped a training member (replace or shrink), or
   * undefined when none came within the detector's bound plus slack (a transient failure:
   * retry with the same ranks). A node left in a minority waits for the majority up to
   * `minorityWaitMs`, then fails with a clear error instead of waiting forever.
   */
  private async afterFailure (roster: Member[], signal?: AbortSignal): Promise<View | undefined> {
    const { membership, clock, log } = this.deps
    let deadline = clock.monotonic() + membership.status().detectionBoundMs + RETRY_SLACK_MS
    let pausedSince: number | undefined
    for (;;) {
      if (signal?.aborted === true) throw new AbortError('training aborted while waiting for the mesh')
      const v = this.nextLoss(roster)
      if (v !== undefined) return v
      const st = membership.status()
      const now = clock.monotonic()
      if (st.paused) {
        if (pausedSince === undefined) {
          pausedSince = now
          log.warn({ live: st.members.filter(m => m.live).length, members: st.members.length }, 'this node is in a minority of the view: training waits for the majority')
        }
        const limit = this.cfg.minorityWaitMs ?? DEFAULT_MINORITY_WAIT_MS
        if (now - pausedSince > limit) {
          throw new TrainingError(`this node has been in a minority of view ${st.epoch} for ${Math.round(limit / 1000)} s ` +
            `(${st.members.filter(m => m.live).length} of ${st.members.length} members reachable): training cannot go on safely. ` +
            'Restart the nodes with --resume to continue from the disk tier' + this.diskHint())
        }
      } else if (pausedSince !== undefined) {
        pausedSince = undefined
        deadline = now + st.detectionBoundMs + RETRY_SLACK_MS
      }
      if (pausedSince === undefined && now > deadline) return undefined
      await clock.sleep(50, signal === undefined ? {} : { signal })
    }
  }

  /** The error a rank ends with when its snapshots cannot bring the run back. */
  private giveUp (err: SessionInterrupted): Error {
    if (err.unrecoverable === undefined) return new TrainingError(`training gave up after ${MAX_ATTEMPTS} recovery attempts; the last: ${err.message}`)
    const u = err.unrecoverable
    if (!(u instanceof UnrecoverableError)) {
      return new TrainingError(`${err.message}: ${u.reportedBy} found a snapshot this recovery needs unrecoverable (more of its holders are gone than the erasure code tolerates). ` +
        'Restart the nodes with --resume to continue from the disk tier' + this.diskHint())
    }
    return new TrainingError(`${u.message}: more holders of rank ${u.rank}'s snapshot are gone than the erasure code tolerates (m = ${u.m}). ` +
      'Restart the nodes with --resume to continue from the disk tier' + this.diskHint())
  }

  private diskHint (): string {
    const d = this.cfg.disk
    if (d === undefined || d.every === 0) return ' (the disk tier is off here: --disk-every N turns it on)'
    return this.diskStep === undefined ? ` (no step persisted yet; every ${d.every} steps)` : ` (newest step on this node's disk: ${this.diskStep})`
  }

  private diskStep: number | undefined
  /** The step the current roster began training from (agreed: every rank starts from the same state). */
  private rosterStart = 0
  private diskWrites: Promise<void> = Promise.resolve()

  private async waitForView (ok: (v: View) => boolean, signal?: AbortSignal): Promise<View> {
    const { membership, clock } = this.deps
    for (;;) {
      if (signal?.aborted === true) throw new AbortError('training aborted while waiting for the mesh')
      const v = membership.view()
      if (v !== undefined && ok(v)) return v
      await clock.sleep(50, signal === undefined ? {} : { signal })
    }
  }

  /** The view can form before every pair of members is connected; collectives need them all. */
  private async waitForConnections (members: readonly Member[], signal?: AbortSignal): Promise<void> {
    const { net, clock, membership } = this.deps
    const want = members.map(m => m.id).filter(id => id !== net.self.id)
    const limit = clock.monotonic() + membership.status().detectionBoundMs + 30_000
    for (;;) {
      const have = new Set(net.peers().map(p => p.id))
      const missing = want.filter(id => !have.has(id))
      if (missing.length === 0) return
      // The ranks finished while this node (a spare that read their departure as a loss) was
      // getting ready to take a rank: nothing is left to take.
      if (this.runDone) throw new TrainingError('the run finished while this node was joining its ranks')
      // Unreachable members: the failure path waits for the view to drop them (or, in a
      // minority, for the majority), as after any failed step.
      if (membership.status().paused) throw new SessionInterrupted(`not connected to ${missing.length} training member(s), e.g. ${missing[0]}, and this node is in a minority of the view`)
      if (clock.monotonic() > limit) throw new SessionInterrupted(`not connected to ${missing.length} training member(s), e.g. ${missing[0]}`)
      await clock.sleep(50, signal === undefined ? {} : { signal })
    }
  }

  /**
   * Trains from `state` (or from the seed's initial weights) to the last step under one roster.
   * After a recovery (`this.pending`), first agrees on the recovery point with the other ranks
   * and loads every needed shard state from the erasure-coded snapshots.
   */
  private async session (roster: Member[], epoch: number, round: number, rank: number, initial: ShardState | undefined, signal?: AbortSignal): Promise<void> {
    const { backend, net, clock, log, corpus, membership } = this.deps
    const cfg = this.cfg
    const P = roster.length
    this.st.phase = `session train-${epoch}.${round}: connecting to ${P - 1} other rank(s)`
    await this.waitForConnections(roster, signal)
    let settling = true
    const collective: Collective = createCollective({
      net,
      view: { epoch, members: roster },
      clock,
      name: `train-${epoch}.${round}`,
      // Until the session's first step commits, ranks may wait on one that is still loading
      // a snapshot (a stalled holder costs it one idle timeout before it turns to parity) or
      // compiling kernels: a longer bound, so a slow start is not mistaken for a failure.
      timeoutMs: () => membership.status().detectionBoundMs + 5000 + (settling ? SETTLE_GRACE_MS : 0),
      log: log.child({ component: 'mesh:collective' })
    })
    const zero: ZeroComm = createZeroComm(collective, cfg.zeroPP ? { qwZ: true, hpZ: true, qgZ: true } : {})
    await collective.start()
    const N = this.layout.length
    const shard = zero.shardOf(N)
    const growable = (cfg.maxWorldSize ?? cfg.worldSize) > P
    const opt = new CpuBackend()
    const account = (b: { host: number, zone: number, wan: number }): void => {
      this.sent.host += b.host
      this.sent.zone += b.zone
      this.sent.wan += b.wan
    }
    // ZeRO-3: the model holds two block slots; each bucket is gathered when the pass reaches
    // it (the next one prefetched) and its gradient reduced as soon as it is complete.
    const model = new Gpt(backend, cfg.model, { B: cfg.B, T: cfg.T, dtype: cfg.dtype, seed: cfg.seed, params: 'stream' })
    const buckets = gptBuckets(this.layout)
    const windows = buckets.map(b => {
      const window = { offset: b.start, total: N }
      const part = collective.windowOf(b.end - b.start, window)
      // Where this rank's part of the bucket sits in its shard (often nowhere: an empty part).
      return { window, length: b.end - b.start, at: part.length === 0 ? 0 : b.start + part.start - shard.start, n: part.length }
    })
    let live = 0
    const mem: ParamMemory = { shard: 4 * shard.length * 4, model: model.paramBytes(), inFlightPeak: 0, full: 16 * N }
    const hold = (bytes: number): void => {
      live += bytes
      if (live > mem.inFlightPeak) mem.inFlightPeak = live
    }
    this.st.memory = mem
    /**
     * Serves a pass's bucket requests in `order`, each gather issued when the one before it
     * is asked for (one bucket prefetched). Every rank issues the same calls in the same order.
     */
    const streamer = (order: number[], gather: (j: number) => Promise<{ data: Float32Array, bytes: { host: number, zone: number, wan: number } }>): { load: (j: number) => Promise<Float32Array> } => {
      const started = new Map<number, Promise<Float32Array>>()
      const start = (j: number): void => {
        if (started.has(j)) return
        const p = gather(j).then(r => {
          account(r.bytes)
          hold(r.data.byteLength)
          return r.data
        })
        p.catch(() => {}) // awaited by load(); a pass that fails first leaves it unread
        started.set(j, p)
      }
      return {
        load: async (j: number) => {
          start(j)
          const next = order[order.indexOf(j) + 1]
          if (next !== undefined) start(next)
          const data = await started.get(j)!
          started.delete(j)
          // The model copies it into its slot at once; the array is garbage afterwards.
          queueMicrotask(() => { live -= data.byteLength })
          return data
        }
      }
    }
    const forwardOrder = buckets.map((_, j) => j)
    const backwardOrder = buckets.map((_, j) => j).slice(1, -1).reverse()
    // Work between collective calls (loading snapshots) ends when the collective is poisoned:
    // when another rank gives up, this one does too, at once, and all retry together.
    const work = signal === undefined ? collective.failed : AbortSignal.any([signal, collective.failed])
    // A rank that finds a snapshot unrecoverable says so in its failure notice, so every rank
    // counts the attempt as unrecoverable (not only the ones that loaded that snapshot).
    const remote = (e: unknown): { reportedBy: string } | undefined =>
      (e instanceof CollectiveError && e.reason === 'unrecoverable' ? { reportedBy: e.peer ?? 'another rank' } : undefined)
    const fail = (err: unknown): never => {
      if (err instanceof SessionInterrupted) throw err
      if (err instanceof CollectiveError || err instanceof UnrecoverableError || err instanceof TransferTimeoutError || err instanceof NoSnapshotError) {
        throw new SessionInterrupted(`step ${this.st.step + 1} under view ${epoch} failed: ${err.message}`, err instanceof UnrecoverableError ? err : remote(err))
      }
      if (signal?.aborted !== true && collective.failed.aborted) {
        const why: unknown = collective.failed.reason
        throw new SessionInterrupted(`step ${this.st.step + 1} under view ${epoch} failed: ${why instanceof Error ? why.message : String(why)}`, remote(why))
      }
      throw err
    }
    try {
      let state = initial
      if (state === undefined && this.pending !== undefined) {
        // The load ends when `work` aborts (the snapshot service's recoveries settle on their
        // signal even with a transfer wedged inside): this rank then fails and retries with the others.
        state = await this.recover(collective, roster, rank, shard, work).catch((err: unknown) => {
          if (work.aborted) log.warn({ phase: this.st.phase, err: err instanceof Error ? err.message : String(err) }, 'recovery abandoned: the other ranks gave up on this one')
          return fail(err)
        })
      }
      state ??= this.freshShard(shard.start, shard.length)
      this.pending = undefined
      const master = opt.alloc('f32', [shard.length])
      const grad = opt.alloc('f32', [shard.length])
      const m = opt.alloc('f32', [shard.length])
      const v = opt.alloc('f32', [shard.length])
      opt.write(master, state.master)
      opt.write(m, state.m)
      opt.write(v, state.v)
      const segments = decaySegments(this.layout, shard.start, Math.min(shard.length, Math.max(0, N - shard.start)))
      const views = segments.map(x => ({
        decay: x.decay,
        p: opt.view(master, x.start - shard.start, [x.length]),
        g: opt.view(grad, x.start - shard.start, [x.length]),
        m: opt.view(m, x.start - shard.start, [x.length]),
        v: opt.view(v, x.start - shard.start, [x.length])
      }))
      const at = (step: number): { step: number, signal?: AbortSignal } => (signal === undefined ? { step } : { step, signal })
      this.st.step = state.step
      this.rosterStart = state.step
      for (let s = state.step; s < cfg.steps; s++) {
        // A view that dropped a member of this roster (even one whose collectives still work:
        // a false suspicion) ends the session, so every rank replans as the spares do.
        const dropped = this.scanLoss(roster, false)
        if (dropped !== undefined) throw new SessionInterrupted(`view ${dropped.epoch} dropped a training member before step ${s + 1}`)
        const t0 = clock.monotonic()
        this.st.phase = `step ${s + 1}: forward`
        const own = opt.read(master) as Float32Array
        const mine = (j: number): Float32Array => own.subarray(windows[j]!.at, windows[j]!.at + windows[j]!.n)
        const weights = (pass: 'forward' | 'backward') => (j: number) => zero.gatherWeights(buckets[j]!.name, mine(j), windows[j]!.length, pass, { window: windows[j]!.window, ...at(s) })
        const batch = batchFor(corpus.train, cfg.seed, s, rank, cfg.B, cfg.T)
        const fwd = streamer(forwardOrder, weights('forward'))
        const loss = await model.forwardStreamed(batch.inputs, batch.targets, fwd).catch(fail)
        const modelled = this.deps.computeMs?.(cfg.B * cfg.T)
        if (modelled !== undefined && modelled > 0) await clock.sleep(modelled, signal === undefined ? {} : { signal })
        this.st.phase = `step ${s + 1}: backward`
        const sums = new Float32Array(shard.length)
        const reductions: Array<Promise<void>> = []
        const bwd = streamer(backwardOrder, weights('backward'))
        await model.backwardStreamed({
          load: bwd.load,
          grad: (j, g) => {
            hold(g.byteLength)
            const w = windows[j]!
            const r = zero.reduceGradients(buckets[j]!.name, g, { window: w.window, ...at(s) }).then(res => {
              live -= g.byteLength
              account(res.bytes)
              sums.set(res.data, w.at)
            })
            r.catch(() => {})
            reductions.push(r)
          }
        }).catch(fail)
        this.st.phase = `step ${s + 1}: gradient reduction`
        await Promise.all(reductions).catch(fail)
        opt.write(grad, sums)
        for (const x of views) {
          opt.adamw(x.p, x.g, x.m, x.v, {
            lr: cfg.lr, beta1: 0.9, beta2: 0.95, eps: 1e-8, weightDecay: x.decay ? cfg.weightDecay : 0, step: s + 1, gradScale: 1 / P
          })
        }
        this.st.phase = `step ${s + 1}: commit`
        // When the loss all-reduce returns, every rank has finished step s: it is committed.
        const mean = await collective.allReduce(Float32Array.of(loss), { ...at(s), label: 'loss' }).catch(fail)
        account(mean.bytes)
        const dt = clock.monotonic() - t0
        settling = false
        this.st.step = s + 1
        this.st.loss = mean.data[0]! / P
        this.st.tokensPerS = dt > 0 ? (P * cfg.B * cfg.T) / (dt / 1000) : undefined
        membership.setStep(s + 1)
        const disk = cfg.disk !== undefined && cfg.disk.every > 0 && (s + 1) % cfg.disk.every === 0 ? cfg.disk : undefined
        // The first step of a session is always captured (a roster's own recovery point), and
        // the last one (the state the run ends with).
        const snap = this.snapshots !== undefined && ((s + 1) % (cfg.snapshot?.every ?? 1) === 0 || s === this.rosterStart || s + 1 === cfg.steps)
        if (snap || disk !== undefined) {
          const st = this.rankState(rank, P, epoch, s + 1, opt.read(master) as Float32Array, opt.read(m) as Float32Array, opt.read(v) as Float32Array)
          if (snap && this.snapshots !== undefined) {
            const ticket = this.snapshots.capture(st)
            void ticket.done.then(o => { if (o.status === 'placed') this.st.snapshotStep = Math.max(this.st.snapshotStep ?? 0, o.step) })
          }
          // The disk tier writes in the background, one file after another; the session waits
          // for the last write before it ends.
          if (disk !== undefined) {
            const sealed = encodeState(st)
            this.diskWrites = this.diskWrites.then(async () => {
              await persistDiskState(disk.dir, s + 1, sealed)
              this.diskStep = s + 1
            }).catch((err: unknown) => { log.warn({ err: (err as Error).message, step: s + 1 }, 'disk tier: persisting the state failed') })
          }
        }
        this.deps.onStep?.(this.status())
        const now = membership.view()
        if (rank === 0 && now !== undefined && now.members.length > roster.length && clock.monotonic() - this.announcedAt >= ROSTER_EVERY_MS) {
          // Nodes beyond the roster (spares, late joiners) learn it from rank 0, again every
          // ROSTER_EVERY_MS (a joiner may subscribe after an announcement).
          this.announcedAt = clock.monotonic()
          const msg = new TextEncoder().encode(JSON.stringify({ epoch, members: roster.map(r => ({ id: r.id, zone: r.zone, host: r.host })) }))
          void net.publish(ROSTER_TOPIC, msg).catch(() => {})
        }
        if (growable && s + 1 < cfg.steps) {
          // Grow only when every rank names the same view (views reach ranks at different
          // times; they agree at some later step boundary).
          const cand = this.growCandidate(roster)
          const all = (await collective.allGather(Float32Array.of(cand?.epoch ?? 0, cand?.count ?? 0), 2 * P, { ...at(s + 1), label: 'grow_check' }).catch(fail)).data
          let agreed = all[0]! > 0
          for (let r = 1; r < P && agreed; r++) agreed = all[2 * r] === all[0] && all[2 * r + 1] === all[1]
          if (agreed) {
            const st: ShardState = { step: s + 1, master: (opt.read(master) as Float32Array).slice(), m: (opt.read(m) as Float32Array).slice(), v: (opt.read(v) as Float32Array).slice() }
            this.growState = { rank, state: st }
            const msg = new Uint8Array(12)
            const d = new DataView(msg.buffer)
            d.setUint32(0, all[0]!, true)
            d.setUint32(4, all[1]!, true)
            d.setUint32(8, s + 1, true)
            this.growMsg = msg
            await net.publish(GROW_TOPIC, msg).catch(() => {})
            throw new SessionGrow(all[0]!, all[1]!, s + 1)
          }
        }
      }
      this.finalShard = { start: shard.start, data: opt.read(master) as Float32Array }
      // The final weights (f32, whatever the training wire), bucket by bucket, on a fixed held-out batch.
      const final = this.finalShard.data
      const held = corpus.val.length > cfg.T + 1 ? corpus.val : corpus.train
      const evalBatch = batchFor(held, cfg.seed, 0, 0, cfg.B, cfg.T)
      this.st.phase = 'evaluating the final weights'
      const fin = streamer(forwardOrder, j => collective.allGather(final.subarray(windows[j]!.at, windows[j]!.at + windows[j]!.n), windows[j]!.length, { window: windows[j]!.window, ...at(cfg.steps), label: 'final_gather' }))
      this.st.evalLoss = await model.forwardStreamed(evalBatch.inputs, evalBatch.targets, fin).catch(fail)
      // The last snapshot lands before this rank leaves, so the others can still recover it.
      await this.snapshots?.idle()
      await this.diskWrites
    } catch (err) {
      // Whatever ended this rank's session ends the others' at once (a failure notice), so
      // every rank replans or retries at about the same time. (A growth is agreed by all:
      // the others end their sessions on their own, after the same all-gather.)
      if (!(err instanceof SessionGrow)) {
        const lost = err instanceof SessionInterrupted && err.unrecoverable instanceof UnrecoverableError
        collective.abort(`rank ${rank} gave up: ${err instanceof Error ? err.message : String(err)}`, lost ? 'unrecoverable' : 'aborted')
      }
      throw err
    } finally {
      model.dispose()
      opt.dispose()
      await collective.stop()
    }
  }

  private rankState (rank: number, P: number, epoch: number, step: number, weights: Float32Array, adamM: Float32Array, adamV: Float32Array): RankState {
    return { rank, worldSize: P, epoch, step, dataCursor: step, weights, adamM, adamV, rng: new Uint8Array(0) }
  }

  private freshShard (start: number, length: number): ShardState {
    const full = initGptParams(this.cfg.model, this.cfg.seed)
    const master = new Float32Array(length)
    master.set(full.subarray(start, Math.min(full.length, start + length)))
    return { step: 0, master, m: new Float32Array(length), v: new Float32Array(length) }
  }

  /**
   * After a lost rank (or a failed attempt): agree on the recovery point, then load state from
   * the snapshots. Each rank knows the newest complete snapshot of some owners (manifests are
   * gossiped, so a rank may lag); knowledge is exchanged, the newest version anyone knows is
   * taken per owner (a manifest means every holder has it), and the recovery point is the
   * oldest of those: the newest step every old rank's snapshot reached. Holders never drop
   * that version (they keep everything from the newest version common to all owners).
   * Replace: each rank loads the state its logical rank had. Shrink: each rank rebuilds the
   * full flat state from every old rank's snapshot and takes its new shard. Resume: the same
   * from the disk tier instead of the peers.
   */
  private async recover (collective: Collective, roster: Member[], rank: number, shard: { start: number, length: number }, signal?: AbortSignal): Promise<ShardState> {
    const plan = this.pending!
    if (plan.mode === 'resume') return await this.resume(collective, roster, shard, signal)
    if (plan.mode === 'grow') return await this.growExchange(collective, roster, shard, signal)
    const svc = this.snapshots!
    const { clock, log, net } = this.deps
    const t0 = clock.monotonic()
    const old = plan.oldRoster
    const opts = signal === undefined ? {} : { signal }
    // Per old rank, the newest complete versions this node knows of (captures can be
    // superseded, so owners skip different steps: the point must be one every owner placed).
    const K = SNAPSHOT_LIMITS.maxManifestsPerOwner
    const known = new Float32Array(old.length * K).fill(-1)
    old.forEach((m, i) => {
      const vs = svc.manifests(m.id).map(x => x.version)
      if (m.id === net.self.id && svc.retained() !== undefined) vs.unshift(svc.retained()!.step)
      ;[...new Set(vs)].sort((a, b) => b - a).slice(0, K).forEach((v, j) => { known[i * K + j] = v })
    })
    this.st.phase = 'recovery: agreeing on the recovery point'
    const all = await collective.allGather(known, roster.length * known.length, { step: 0, label: 'recovery_point', ...opts })
    const sets = old.map((_, i) => {
      const set = new Set<number>()
      for (let r = 0; r < roster.length; r++) {
        for (let j = 0; j < K; j++) {
          const v = all.data[r * known.length + i * K + j]!
          if (v >= 0) set.add(v)
        }
      }
      return set
    })
    const best = sets.map(set => Math.max(0, ...set))
    const common = [...sets[0]!].filter(v => sets.every(set => set.has(v)))
    if (common.length === 0 && best.some(v => v > 0)) {
      throw new TrainingError(`no snapshot step is known complete for every rank (newest per rank: ${best.join(', ')}; captures were superseded at different steps): ` +
        'the state cannot be put together from peers. Restart the nodes with --resume to continue from the disk tier' + this.diskHint())
    }
    const rp = Math.max(0, ...common)
    if (rp < this.rosterStart) {
      // An owner of this roster never placed a snapshot of its own: the state of the step
      // this roster started from is gone with it. Never fall back to a fresh start silently.
      throw new TrainingError(`rank(s) ${old.map((m, i) => (best[i]! < this.rosterStart ? i : -1)).filter(i => i >= 0).join(', ')} were lost before placing a snapshot ` +
        `since step ${this.rosterStart}, where this roster began: the state is not recoverable from peers. Restart the nodes with --resume to continue from the disk tier` + this.diskHint())
    }
    const record = (): void => {
      if (plan.lost.length > 0) this.st.recoveries.push({ mode: plan.mode as 'replace' | 'shrink', lost: plan.lost, fromStep: rp, ms: Math.round(clock.monotonic() - t0) })
    }
    if (rp === 0) {
      record()
      return this.freshShard(shard.start, shard.length)
    }
    const fetch = async (owner: PeerId): Promise<RankState> => {
      this.st.phase = `recovery: loading ${owner}'s snapshot of step ${rp}`
      return (await svc.recover({ owner, version: rp }, opts)).state
    }
    // Every rank says whether its load found a snapshot unrecoverable before any goes on, so
    // all count the attempt alike (a rank that gave up first would otherwise cut the others'
    // loads short, and they would not know why).
    let loaded: RankState[] | undefined
    let lost: UnrecoverableError | undefined
    try {
      loaded = plan.mode === 'replace' ? [await fetch(old[rank]!.id)] : await Promise.all(old.map(mb => fetch(mb.id)))
    } catch (err) {
      if (!(err instanceof UnrecoverableError)) throw err
      lost = err
    }
    this.st.phase = 'recovery: comparing the loads'
    const verdict = (await collective.allGather(Float32Array.of(lost === undefined ? 0 : 1), roster.length, { step: 0, label: 'recovery_verdict', ...opts })).data
    const reporter = verdict.findIndex(x => x !== 0)
    if (lost !== undefined) throw lost
    if (reporter >= 0) throw new SessionInterrupted(`recovery from step ${rp} failed: rank ${reporter} (${roster[reporter]!.id}) found a snapshot unrecoverable`, { reportedBy: `rank ${reporter} (${roster[reporter]!.id})` })
    record()
    if (plan.mode === 'replace') {
      const st = loaded![0]!
      log.info({ rank, step: rp, from: old[rank]!.id }, 'loaded rank state from the snapshot')
      return { step: rp, master: st.weights.slice(), m: st.adamM.slice(), v: st.adamV.slice() }
    }
    // Shrink: the full flat state from every old rank's shard, then this rank's new shard.
    return this.cutShard(loaded!, rp, shard)
  }

  /** The shard `shard` of the full flat state assembled from every old rank's state (in rank order). */
  private cutShard (states: readonly RankState[], step: number, shard: { start: number, length: number }): ShardState {
    const N = this.layout.length
    const cut = (pick: (st: RankState) => Float32Array): Float32Array => {
      const out = new Float32Array(shard.length)
      const end = Math.min(N, shard.start + shard.length)
      states.forEach((st, r) => {
        const at = shardRange(N, states.length, r).start
        const a = Math.max(at, shard.start)
        const b = Math.min(at + st.weights.length, end)
        if (a < b) out.set(pick(st).subarray(a - at, b - at), a - shard.start)
      })
      return out
    }
    return { step, master: cut(st => st.weights), m: cut(st => st.adamM), v: cut(st => st.adamV) }
  }

  /**
   * `--resume`: every training member reads its disk tier, they agree on the newest step for
   * which some member holds the file of every old rank, exchange those states and each takes
   * its shard (the world size may differ from the run that wrote them).
   */
  private async resume (collective: Collective, roster: Member[], shard: { start: number, length: number }, signal?: AbortSignal): Promise<ShardState> {
    const { log, clock } = this.deps
    const t0 = clock.monotonic()
    const dir = this.cfg.disk!.dir
    const opts = signal === undefined ? {} : { signal }
    // Per member: up to DISK_SLOTS (step, rank, world size) triples of the files it has.
    const mine = new Float32Array(DISK_SLOTS * 3).fill(-1)
    const steps = (await diskSteps(dir)).slice(0, DISK_SLOTS)
    const held = new Map<number, RankState>()
    for (const [i, step] of steps.entries()) {
      const st = await loadDiskState(dir, step)
      if (st === undefined) continue
      held.set(step, st)
      mine.set([step, st.rank, st.worldSize], i * 3)
    }
    const P = roster.length
    const all = (await collective.allGather(mine, P * mine.length, { step: 0, label: 'resume_index', ...opts })).data
    // For each step, which old ranks some member holds (and which member).
    const byStep = new Map<number, { worldSize: number, from: Map<number, number> }>()
    for (let r = 0; r < P; r++) {
      for (let i = 0; i < DISK_SLOTS; i++) {
        const [step, oldRank, ws] = [all[(r * DISK_SLOTS + i) * 3]!, all[(r * DISK_SLOTS + i) * 3 + 1]!, all[(r * DISK_SLOTS + i) * 3 + 2]!]
        if (step < 0) continue
        let e = byStep.get(step)
        if (e === undefined) byStep.set(step, e = { worldSize: ws, from: new Map() })
        if (e.worldSize !== ws) throw new TrainingError(`--resume: the disk tier files of step ${step} disagree on the world size (${e.worldSize} and ${ws})`)
        if (!e.from.has(oldRank)) e.from.set(oldRank, r)
      }
    }
    const usable = [...byStep.entries()].filter(([, e]) => e.from.size === e.worldSize).map(([step]) => step).sort((a, b) => b - a)
    if (usable.length === 0) {
      const seen = [...byStep.entries()].map(([step, e]) => `step ${step}: ranks ${[...e.from.keys()].sort((a, b) => a - b).join(',')} of ${e.worldSize}`)
      throw new TrainingError(`--resume: no step has every rank's state on the training members' disks (${seen.length === 0 ? 'no disk tier files at all' : seen.join('; ')})`)
    }
    const step = usable[0]!
    const e = byStep.get(step)!
    const oldP = e.worldSize
    // A data dir holds one file per step, so each member contributes at most one old rank.
    const self = roster.findIndex(m => m.id === this.deps.net.self.id)
    const own = held.get(step)
    const states = await this.exchangeStates(collective, roster, own !== undefined && e.from.get(own.rank) === self ? own : undefined, oldP, 'resume_state', opts)
    log.info({ step, oldWorldSize: oldP, worldSize: P, ms: Math.round(clock.monotonic() - t0) }, 'resumed from the disk tier')
    this.st.resumedFrom = step
    return this.cutShard(states.states, step, shard)
  }

  /**
   * Hands old ranks' states to a new roster: each member puts the old rank state it holds
   * (or nothing) into a fixed-size slot (old rank, step, weights, m, v), one all-gather, and
   * every member gets every old rank's state. Every old rank must be held by some member.
   */
  private async exchangeStates (collective: Collective, roster: Member[], own: RankState | undefined, oldP: number, label: string, opts: { signal?: AbortSignal }): Promise<{ states: RankState[], step: number }> {
    const N = this.layout.length
    const L = shardRange(N, oldP, 0).length
    const P = roster.length
    const per = 2 + 3 * L
    const buf = new Float32Array(per).fill(-1)
    if (own !== undefined) {
      buf[0] = own.rank
      buf[1] = own.step
      buf.set(own.weights, 2)
      buf.set(own.adamM, 2 + L)
      buf.set(own.adamV, 2 + 2 * L)
    }
    const got = (await collective.allGather(buf, P * per, { step: 0, label, ...opts })).data
    const states: RankState[] = new Array(oldP)
    let step = -1
    for (let r = 0; r < P; r++) {
      const at = r * per
      const o = got[at]!
      if (o < 0) continue
      if (!Number.isInteger(o) || o >= oldP || (step >= 0 && got[at + 1] !== step)) throw new TrainingError(`${label}: member ${r} offers old rank ${o} at step ${got[at + 1]}, which does not fit the other states`)
      step = got[at + 1]!
      const len = shardRange(N, oldP, o).length
      const part = (k: number): Float32Array => got.slice(at + 2 + k * L, at + 2 + k * L + len)
      states[o] = { rank: o, worldSize: oldP, epoch: 0, step, dataCursor: step, weights: part(0), adamM: part(1), adamV: part(2), rng: new Uint8Array(0) }
    }
    const missing = Array.from({ length: oldP }, (_, i) => i).filter(i => states[i] === undefined)
    if (missing.length > 0) throw new TrainingError(`${label}: no member holds the state of old rank(s) ${missing.join(', ')}`)
    return { states, step }
  }

  /** The run grew: the old ranks hand their states (kept from the step it grew at) to the new roster. */
  private async growExchange (collective: Collective, roster: Member[], shard: { start: number, length: number }, signal?: AbortSignal): Promise<ShardState> {
    const plan = this.pending!
    const g = this.growState
    const own = g === undefined
      ? undefined
      : { rank: g.rank, worldSize: plan.oldRoster.length, epoch: 0, step: g.state.step, dataCursor: g.state.step, weights: g.state.master, adamM: g.state.m, adamV: g.state.v, rng: new Uint8Array(0) }
    // The joiners may have missed the announcement (it is gossip): repeat it until the
    // exchange, which needs them, is over.
    const msg = this.growMsg
    let repeating = g !== undefined && msg !== undefined
    const repeat = async (): Promise<void> => {
      while (repeating) {
        await this.deps.clock.sleep(GROW_EVERY_MS)
        if (repeating) await this.deps.net.publish(GROW_TOPIC, msg!).catch(() => {})
      }
    }
    if (repeating) void repeat()
    try {
      const { states, step } = await this.exchangeStates(collective, roster, own, plan.oldRoster.length, 'grow_state', signal === undefined ? {} : { signal })
      this.growState = undefined
      this.growMsg = undefined
      return this.cutShard(states, step, shard)
    } finally {
      repeating = false
    }
  }
}

/**
 * Members of both views whose order changed from `prev` to `next`: those outside the longest
 * run of common members that keeps its order (they were dropped and appended again).
 */
export function readmitted (prev: View, next: View): Set<PeerId> {
  const inNext = new Set(next.members.map(m => m.id))
  const inPrev = new Set(prev.members.map(m => m.id))
  const a = prev.members.map(m => m.id).filter(id => inNext.has(id))
  const b = next.members.map(m => m.id).filter(id => inPrev.has(id))
  if (a.length === b.length && a.every((id, i) => id === b[i])) return new Set()
  // Longest common subsequence (views are at most a few thousand members and change rarely).
  const n = a.length
  const L = Array.from({ length: n + 1 }, () => new Uint16Array(n + 1))
  for (let i = n - 1; i >= 0; i--) for (let j = n - 1; j >= 0; j--) L[i]![j] = a[i] === b[j] ? L[i + 1]![j + 1]! + 1 : Math.max(L[i + 1]![j]!, L[i]![j + 1]!)
  const kept = new Set<PeerId>()
  for (let i = 0, j = 0; i < n && j < n;) {
    if (a[i] === b[j]) { kept.add(a[i]!); i++; j++ } else if (L[i + 1]![j]! >= L[i]![j + 1]!) i++
    else j++
  }
  return new Set(a.filter(id => !kept.has(id)))
}
