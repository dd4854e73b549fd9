import { AbortError, InvalidArgumentError, ZeromeshError, type Clock, type Logger } from '../core/index.ts'
import { CpuBackend, GPT_PRESETS, Gpt, gptLayout, initGptParams, type Backend, type GptConfig, type GptLayout } from '../gpu/index.ts'
import type { Member, Membership, PeerNet, PeerId, View } from '../mesh/index.ts'
import { TransferTimeoutError, UnrecoverableError, createSnapshotService, type RankState, type SnapshotService } from '../snapshot/index.ts'
import { CollectiveError, createCollective, createZeroComm, shardRange, type Collective, type ZeroComm } from '../mesh/collective/index.ts'
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
  /** Erasure-coded snapshot of every rank after every step: k data + m parity fragments. */
  snapshot: { k: number, m: number } | undefined
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
  error?: string
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

/** One rank's optimizer state between sessions: the f32 master shard and AdamW moments. */
interface ShardState { step: number, master: Float32Array, m: Float32Array, v: Float32Array }

/** Why a training session ended early. */
class SessionInterrupted extends Error {}

export class Trainer {
  private readonly deps: TrainerDeps
  private readonly cfg: TrainConfig
  private readonly layout: GptLayout
  private readonly st: TrainStatus
  private readonly sent = { host: 0, zone: 0, wan: 0 }
  private snapshots: SnapshotService | undefined
  private unsubs: Array<() => void> = []

  constructor (deps: TrainerDeps, cfg: TrainConfig) {
    validateTrainConfig(cfg, deps.corpus)
    this.deps = deps
    this.cfg = cfg
    this.layout = gptLayout(cfg.model)
    this.st = {
      role: 'waiting', rank: undefined, worldSize: cfg.worldSize, step: 0, steps: cfg.steps, loss: undefined, evalLoss: undefined, tokensPerS: undefined,
      epoch: 0, bytes: this.sent, snapshotStep: undefined, recoveries: []
    }
  }

  status (): TrainStatus {
    return { ...this.st, bytes: { ...this.sent }, recoveries: [...this.st.recoveries] }
  }

  /**
   * Waits for a view with `worldSize` members, then trains to `steps`, recovering from lost
   * ranks on the way. Resolves when this node's part is over: training done, or (a spare)
   * the run finished without needing it.
   */
  async run (signal?: AbortSignal): Promise<TrainStatus> {
    const { net, clock, membership, log } = this.deps
    try {
      const first = await this.waitForView(v => v.members.length >= this.cfg.worldSize, signal)
      // The roster maps logical ranks to nodes; it starts as the first P members of the first
      // full view and changes only by replacing or dropping lost ranks.
      let roster: Member[] = first.members.slice(0, this.cfg.worldSize)
      let epoch = first.epoch
      if (this.cfg.snapshot !== undefined) {
        this.snapshots = createSnapshotService({ k: this.cfg.snapshot.k, m: this.cfg.snapshot.m, idleTimeoutMs: 10_000 }, { net, clock, log: log.child({ component: 'snapshot' }) })
        await this.snapshots.start()
        this.snapshots.setView(first)
        this.unsubs.push(membership.on('view', v => this.snapshots?.setView(v)))
      }
      // Ranks announce the end of the run, so spares stop waiting (and do not mistake ranks
      // leaving after the last step for lost ones).
      this.unsubs.push(net.subscribe(DONE_TOPIC, {
        validate: msg => (msg.data.length === 4 ? 'accept' : 'reject'),
        deliver: msg => { if (roster.some(m => m.id === msg.from)) this.runDone = true }
      }))
      let state: ShardState | undefined
      for (let attempt = 0; ; attempt++) {
        const rank = roster.findIndex(m => m.id === net.self.id)
        this.st.epoch = epoch
        this.st.worldSize = roster.length
        if (rank < 0) {
          this.st.role = 'spare'
          this.st.rank = undefined
          // A spare waits until a view drops a rank it can take, or the run ends.
          // (`signal` ends the wait when the run is over: `zeromesh up` stops its spares.)
          const next = await this.waitForView(v => this.runDone || (v.epoch > epoch && roster.some(m => !v.members.some(x => x.id === m.id))), signal)
          if (this.runDone) return this.status()
          const change = this.replan(roster, next)
          roster = change.roster
          epoch = next.epoch
          state = undefined
          continue
        }
        this.st.role = 'rank'
        this.st.rank = rank
        try {
          await this.session(roster, epoch, rank, state, signal)
          const done = new Uint8Array(4)
          new DataView(done.buffer).setUint32(0, this.st.step, true)
          await net.publish(DONE_TOPIC, done).catch(() => {})
          this.st.role = 'done'
          return this.status()
        } catch (err) {
          if (!(err instanceof SessionInterrupted) || this.cfg.snapshot === undefined || attempt >= 8) throw err
          log.warn({ err: err.message, step: this.st.step }, 'training step failed: recovering')
          const next = await this.waitForView(v => v.epoch > epoch && roster.some(m => !v.members.some(x => x.id === m.id)), signal)
          const change = this.replan(roster, next)
          roster = change.roster
          epoch = next.epoch
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

  /** Lost ranks are replaced by spares in view order; with too few spares the run shrinks. */
  private replan (roster: Member[], view: View): { roster: Member[], lost: number[], mode: 'replace' | 'shrink' } {
    const inView = new Set(view.members.map(m => m.id))
    const onRoster = new Set(roster.map(m => m.id))
    const spares = view.members.filter(m => !onRoster.has(m.id))
    const lost = roster.map((m, r) => (inView.has(m.id) ? -1 : r)).filter(r => r >= 0)
    if (spares.length >= lost.length) {
      // A replacement takes the lost rank's place in the ring (its labels too), so the
      // reduction order, and with it every bit of the result, stays what it was.
      let next = 0
      const out = roster.map(m => (inView.has(m.id) ? m : { ...m, id: spares[next++]!.id }))
      this.pending = { mode: 'replace', lost, oldRoster: roster }
      return { roster: out, lost, mode: 'replace' }
    }
    this.pending = { mode: 'shrink', lost, oldRoster: roster }
    return { roster: roster.filter(m => inView.has(m.id)), lost, mode: 'shrink' }
  }

  private runDone = false

  /** This rank's master weights after the last step (tests compare runs bit for bit). */
  finalShard: { start: number, data: Float32Array } | undefined

  private pending: { mode: 'replace' | 'shrink', lost: number[], oldRoster: Member[] } | undefined

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
      if (clock.monotonic() > limit) throw new TrainingError(`not connected to ${missing.length} training member(s), e.g. ${missing[0]}`)
      await clock.sleep(50, signal === undefined ? {} : { signal })
    }
  }

  /**
   * Trains from `state` (or from the seed's initial weights) to the last step under one roster.
   * After a recovery (`this.pending`), first agrees on the recovery point with the other ranks
   * and loads every needed shard state from the erasure-coded snapshots.
   */
  private async session (roster: Member[], epoch: number, rank: number, initial: ShardState | undefined, signal?: AbortSignal): Promise<void> {
    const { backend, net, clock, log, corpus, membership } = this.deps
    const cfg = this.cfg
    const P = roster.length
    await this.waitForConnections(roster, signal)
    const collective: Collective = createCollective({
      net,
      view: { epoch, members: roster },
      clock,
      name: `train-${epoch}`,
      timeoutMs: () => membership.status().detectionBoundMs + 5000,
      log: log.child({ component: 'mesh:collective' })
    })
    const zero: ZeroComm = createZeroComm(collective, cfg.zeroPP ? { qwZ: true, hpZ: true, qgZ: true } : {})
    await collective.start()
    const N = this.layout.length
    const shard = zero.shardOf(N)
    const opt = new CpuBackend()
    const model = new Gpt(backend, cfg.model, { B: cfg.B, T: cfg.T, dtype: cfg.dtype, seed: cfg.seed })
    const fail = (err: unknown): never => {
      if (err instanceof CollectiveError || err instanceof UnrecoverableError || err instanceof TransferTimeoutError) {
        throw new SessionInterrupted(`step ${this.st.step + 1} under view ${epoch} failed: ${err.message}`)
      }
      throw err
    }
    try {
      let state = initial
      if (state === undefined && this.pending !== undefined) state = await this.recover(collective, roster, rank, shard, signal).catch(fail)
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
      const account = (b: { host: number, zone: number, wan: number }): void => {
        this.sent.host += b.host
        this.sent.zone += b.zone
        this.sent.wan += b.wan
      }
      const at = (step: number): { step: number, signal?: AbortSignal } => (signal === undefined ? { step } : { step, signal })
      this.st.step = state.step
      for (let s = state.step; s < cfg.steps; s++) {
        const t0 = clock.monotonic()
        const own = opt.read(master) as Float32Array
        const fwd = await zero.gatherWeights('model', own, N, 'forward', at(s)).catch(fail)
        account(fwd.bytes)
        model.setParams(fwd.data)
        const batch = batchFor(corpus.train, cfg.seed, s, rank, cfg.B, cfg.T)
        model.zeroGrad()
        const loss = model.forward(batch.inputs, batch.targets)
        const bwd = await zero.gatherWeights('model', own, N, 'backward', at(s)).catch(fail)
        account(bwd.bytes)
        model.setParams(bwd.data)
        model.backward()
        const red = await zero.reduceGradients('model', model.getGrads(), at(s)).catch(fail)
        account(red.bytes)
        opt.write(grad, red.data)
        for (const x of views) {
          opt.adamw(x.p, x.g, x.m, x.v, {
            lr: cfg.lr, beta1: 0.9, beta2: 0.95, eps: 1e-8, weightDecay: x.decay ? cfg.weightDecay : 0, step: s + 1, gradScale: 1 / P
          })
        }
        // When the loss all-reduce returns, every rank has finished step s: it is committed.
        const mean = await collective.allReduce(Float32Array.of(loss), { ...at(s), label: 'loss' }).catch(fail)
        account(mean.bytes)
        const dt = clock.monotonic() - t0
        this.st.step = s + 1
        this.st.loss = mean.data[0]! / P
        this.st.tokensPerS = dt > 0 ? (P * cfg.B * cfg.T) / (dt / 1000) : undefined
        membership.setStep(s + 1)
        if (this.snapshots !== undefined) {
          const ticket = this.snapshots.capture(this.rankState(rank, P, epoch, s + 1, opt.read(master) as Float32Array, opt.read(m) as Float32Array, opt.read(v) as Float32Array))
          void ticket.done.then(o => { if (o.status === 'placed') this.st.snapshotStep = Math.max(this.st.snapshotStep ?? 0, o.step) })
        }
        this.deps.onStep?.(this.status())
      }
      this.finalShard = { start: shard.start, data: opt.read(master) as Float32Array }
      // The final weights in full (f32, whatever the training wire) on a fixed held-out batch.
      const fin = await collective.allGather(this.finalShard.data, N, { ...at(cfg.steps), label: 'final_gather' }).catch(fail)
      model.setParams(fin.data)
      const held = corpus.val.length > cfg.T + 1 ? corpus.val : corpus.train
      const evalBatch = batchFor(held, cfg.seed, 0, 0, cfg.B, cfg.T)
      this.st.evalLoss = model.forward(evalBatch.inputs, evalBatch.targets)
      // The last snapshot lands before this rank leaves, so the others can still recover it.
      await this.snapshots?.idle()
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
   * After a lost rank: agree on the recovery point (the newest step every old rank's snapshot
   * reached, as the minimum over what each new rank knows), then load state from the snapshots.
   * Replace: each rank loads the state its logical rank had. Shrink: each rank rebuilds the
   * full flat state from every old rank's snapshot and takes its new shard.
   */
  private async recover (collective: Collective, roster: Member[], rank: number, shard: { start: number, length: number }, signal?: AbortSignal): Promise<ShardState> {
    const svc = this.snapshots!
    const plan = this.pending!
    const { clock, log } = this.deps
    const t0 = clock.monotonic()
    const old = plan.oldRoster
    // Let the last manifests arrive (they are gossiped as placements finish).
    await clock.sleep(500, signal === undefined ? {} : { signal })
    const newest = (owner: PeerId): number => svc.manifests(owner)[0]?.version ?? 0
    const mine = Math.min(...old.map(m => newest(m.id)))
    const all = await collective.allGather(Float32Array.of(mine), roster.length, { step: 0, label: 'recovery_point', ...(signal === undefined ? {} : { signal }) })
    const rp = Math.min(...all.data)
    const record = (lost: number[]): void => {
      this.st.recoveries.push({ mode: plan.mode, lost, fromStep: rp, ms: Math.round(clock.monotonic() - t0) })
    }
    if (rp === 0) {
      record(plan.lost)
      return this.freshShard(shard.start, shard.length)
    }
    const fetch = async (owner: PeerId): Promise<RankState> => (await svc.recover({ owner, version: rp }, signal === undefined ? {} : { signal })).state
    if (plan.mode === 'replace') {
      const st = await fetch(old[rank]!.id)
      log.info({ rank, step: rp, from: old[rank]!.id }, 'loaded rank state from the snapshot')
      record(plan.lost)
      return { step: rp, master: st.weights.slice(), m: st.adamM.slice(), v: st.adamV.slice() }
    }
    // Shrink: the full flat state from every old rank's shard, then this rank's new shard.
    const N = this.layout.length
    const full = { master: new Float32Array(N), m: new Float32Array(N), v: new Float32Array(N) }
    const states = await Promise.all(old.map(mb => fetch(mb.id)))
    states.forEach((st, r) => {
      const at = shardRange(N, old.length, r).start
      full.master.set(st.weights, at)
      full.m.set(st.adamM, at)
      full.v.set(st.adamV, at)
    })
    record(plan.lost)
    const cut = (a: Float32Array): Float32Array => {
      const out = new Float32Array(shard.length)
      out.set(a.subarray(shard.start, Math.min(a.length, shard.start + shard.length)))
      return out
    }
    return { step: rp, master: cut(full.master), m: cut(full.m), v: cut(full.v) }
  }
}
