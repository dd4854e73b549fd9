import { createHash } from 'node:crypto'
import { readFileSync } from 'node:fs'
import { z } from 'zod'
import { InvalidArgumentError, Rng, assembleFlat, silentLogger } from '../core/index.ts'
import { CpuBackend, Gpt, GPT_PRESETS, gptLayout, type GptConfig } from '../gpu/index.ts'
import type { CollectiveSent, MembershipInit } from '../mesh/index.ts'
import { OUTER_DEFAULTS, createTrainingWorkload, trainingModel, type Corpus, type TrainConfig, type TrainingWorkload, type TrainStatus } from '../node/index.ts'
import type { Topology } from './net.ts'
import { formatBytes } from './report.ts'
import { ScenarioError, checkTopologyZones, topologyOf, topologySchema } from './scenario.ts'
import { MembershipWorld } from './world.ts'

/**
 * The training workload on the simulator: the real Trainer (collectives, snapshot service,
 * recovery) on every simulated node, over SimNet and the virtual clock, with the real
 * membership underneath. Compute runs on the CPU reference backend and takes no virtual time;
 * a cost model charges each rank's forward and backward as virtual time instead, so step times,
 * detection and recovery are those of the modelled hardware and links.
 *
 * Invariants judged at the end:
 * - membership safety (MembershipWorld: one view per epoch, quorum for every view);
 * - every rank that was not crashed finishes every step;
 * - the ranks agree: one mean loss and one held-out loss across them;
 * - with a reference (`reference: true`), the final weights are bit-identical to the same run
 *   without faults when every lost rank was replaced by a spare (with a shrink, the held-out
 *   loss is within 1%);
 * - with `compareZeroPP`, the same job runs as flat ZeRO-3 and as ZeRO++ (qwZ + hpZ + qgZ):
 *   the ZeRO++ held-out loss is within 1% of the flat one and no backward weight bytes
 *   cross zones (hpZ).
 */
export interface TrainRunOptions {
  seed: number
  /** Simulated nodes: the training ranks plus spares. */
  nodes: number
  worldSize: number
  steps: number
  zones?: number
  /** Tokens per rank and step: batch x sequence. Defaults 2 x 16. */
  batch?: number
  seq?: number
  /** AdamW learning rate. Default 1e-2. */
  lr?: number
  zeroPP?: boolean
  /** Erasure-coded snapshots (k data + m parity), default 2+1; undefined turns them off. */
  snapshot?: { k: number; m: number } | null
  /**
   * Cost model: modelled FLOP/s of one rank's device (forward + backward charged as
   * 6 x parameters x tokens FLOPs). Default 1e12 (a small GPU at modest utilisation).
   */
  flopsPerS?: number
  /** Crash these nodes when the node holding `rank` commits `atStep`. */
  kills?: Array<{ rank: number; atStep: number }>
  /** Crash every node of zone `z<zone>` when the first rank commits `atStep`. */
  zoneKills?: Array<{ zone: number; atStep: number }>
  /** The DiLoCo tier (node/train/outer.ts): zone groups over the `zones` zones, synced every `every` steps. */
  outer?: { every: number; quant?: 'int8' | 'int4'; streaming?: boolean }
  /** Run the same configuration without faults too and compare (the bit-identity invariant). */
  reference?: boolean
  /**
   * Run the job twice, as flat ZeRO-3 and as ZeRO++ (`zeroPP` is then ignored), and compare
   * the held-out losses. Needs no kills (the comparison is of the algorithms, not recoveries).
   */
  compareZeroPP?: boolean
  /** Model shape: `mini` (the `zeromesh up` default, ~0.1 M parameters), `tiny` (GPT_PRESETS.tiny, ~30 k) or `small` (~3.4 M). */
  model?: SimModel
  /**
   * Training text: `text` (a repeated sentence the model learns by heart; held-out = training)
   * or `bigram` (a seeded noisy bigram language with a separate held-out stream: its loss has
   * a floor, ~1.8 nats, so a relative comparison of losses means something).
   */
  data?: SimData
  membership?: MembershipInit
  topology?: Topology
  /** Simulated time limit (ms). Default 30 min. */
  limitMs?: number
  /** Called with the fraction of steps committed (the faulted run's). */
  progress?: (fraction: number) => void
}

export interface TrainRunResult {
  seed: number
  traceHash: string
  events: number
  simMs: number
  /** Invariant failures, one line each (empty: pass). */
  violations: string[]
  steps: number
  loss: number | undefined
  evalLoss: number | undefined
  /** SHA-256 of the assembled final weights. */
  weightsHash: string | undefined
  recoveries: TrainStatus['recoveries']
  /** Simulated ms per committed step (mean over the run). */
  stepMs: number | undefined
  /** The reference run's figures, when asked for. */
  reference?: { weightsHash: string | undefined; evalLoss: number | undefined; simMs: number; heldOutLoss?: number }
  /** Zone groups: the mean loss of the final weights over the whole held-out stream. */
  heldOutLoss?: number
  /** Snapshot fragment bytes the finishing ranks stored on holders, by the tier of the link (summed over the ranks). */
  snapshotBytes?: { host: number; zone: number; wan: number }
  /** Every byte SimNet carried across zones in the run (collectives, snapshots, gossip, stream set-up). */
  wanBytes?: number
  /** When each step first committed on any rank (simulated ms from the start) and SimNet's cross-zone bytes then. */
  commits?: Array<{ step: number; ms: number; wanBytes: number }>
  /** With `compareZeroPP`: both runs side by side (the figures above are the ZeRO++ run's). */
  zeroPP?: ZeroPPComparison
}

export type SimModel = 'mini' | 'tiny' | 'small'
export type SimData = 'text' | 'bigram'

/** Bound on |ZeRO++ - flat| / flat of the held-out loss (DeepSpeed's own test allows 10%). */
export const ZERO_PP_LOSS_TOLERANCE = 0.01

/** One run of a ZeRO++ comparison. */
export interface ComparedRun {
  traceHash: string
  events: number
  simMs: number
  stepMs: number | undefined
  loss: number | undefined
  /** The trainer's held-out loss: one B x T batch. */
  evalLoss: number | undefined
  /** Mean loss of the final weights over the whole held-out stream (what is compared). */
  heldOutLoss: number | undefined
  weightsHash: string | undefined
  /** Bytes the ranks sent, per tier, summed over the ranks (trainer status). */
  sentBytes: { host: number; zone: number; wan: number }
  /**
   * Collective bytes sent across zones during the training steps (the final evaluation's
   * gather left out), by operation and wire encoding as the collective reports each message
   * it sends (`onCollectiveSent`), headers included:
   * `allGather/q8` is qwZ's forward, `hierReduceScatter/q4` qgZ, `allGather/f32` flat
   * ZeRO-3's forward and backward weight gathers (or hpZ's, were they to cross zones).
   */
  crossZoneBytes: Record<string, number>
}

export interface ZeroPPComparison {
  flat: ComparedRun
  zeroPP: ComparedRun
  /** |ZeRO++ - flat| / flat of `heldOutLoss`; undefined when a run has none. */
  heldOutLossRelDiff: number | undefined
  limit: number
  /**
   * ZeRO++ weight-gather bytes across zones during the training steps that are not qwZ's
   * int8 forward gather: the backward's (hpZ keeps it inside the zone, so 0).
   */
  backwardWeightCrossZoneBytes: number
}

// `text`: a small repetitive text, so the model learns visibly in few steps without files.
function simCorpus(data: SimData, seed: number): Corpus {
  if (data === 'bigram') return bigramCorpus(seed)
  const text = Buffer.from('the quick brown fox jumps over the lazy dog. '.repeat(200))
  const ids = new Uint16Array(text.length)
  ids.set(text)
  return { source: 'simulator text', vocabSize: 256, train: ids, val: ids.subarray(0, 200) }
}

const BIGRAM_VOCAB = 64
/**
 * A noisy bigram language (as in test/collective/zero-training.test.ts): the next token is
 * (5 x prev + 3) mod V, or a uniformly random one with probability 0.3. Training and held-out
 * streams are drawn separately from the seed.
 */
function bigramCorpus(seed: number): Corpus {
  const stream = (name: string, n: number): Uint16Array => {
    const rng = Rng.fromSeed(seed).split(`sim-bigram/${name}`)
    const out = new Uint16Array(n)
    let x = rng.int(0, BIGRAM_VOCAB)
    for (let i = 0; i < n; i++) {
      out[i] = x
      x = rng.bool(0.3) ? rng.int(0, BIGRAM_VOCAB) : (5 * x + 3) % BIGRAM_VOCAB
    }
    return out
  }
  return { source: 'simulator noisy bigrams', vocabSize: BIGRAM_VOCAB, train: stream('train', 1 << 18), val: stream('val', 1 << 12) }
}

/** Runs the training workload once; deterministic in (options, code). */
export async function trainRun(o: TrainRunOptions): Promise<TrainRunResult> {
  if (o.compareZeroPP === true) return compareZeroPP(o)
  const { heldOutLoss: held, sentBytes: _s, crossZoneBytes: _c, ...rest } = await once(o, o.kills ?? [], o.progress, false, o.zoneKills ?? [])
  const main: TrainRunResult = rest
  if (held !== undefined) main.heldOutLoss = held
  if (o.reference !== true) return main
  const ref = await once(o, [])
  main.reference = {
    weightsHash: ref.weightsHash,
    evalLoss: ref.evalLoss,
    simMs: ref.simMs,
    ...(ref.heldOutLoss === undefined ? {} : { heldOutLoss: ref.heldOutLoss })
  }
  if (ref.violations.length > 0) main.violations.push(...ref.violations.map(v => `reference run: ${v}`))
  const shrunk = main.recoveries.some(r => r.mode === 'shrink')
  if (!shrunk && main.weightsHash !== ref.weightsHash)
    main.violations.push('final weights differ from the run without faults (every lost rank was replaced, so they must be bit-identical)')
  // A zone group that dropped out (the DiLoCo tier): the held-out loss over the whole held-out stream, within 2%.
  const zoned = o.outer !== undefined && shrunk
  const [a, b, tol] = zoned ? [held, ref.heldOutLoss, ZONE_LOSS_TOLERANCE] : [main.evalLoss, ref.evalLoss, 0.01]
  if (shrunk && a !== undefined && b !== undefined && Math.abs(a - b) / b > tol) {
    main.violations.push(
      `after a ${zoned ? 'zone group dropped out' : 'shrink'} the held-out loss ${a.toFixed(4)} is more than ${100 * tol}% from the run without faults (${b.toFixed(4)})`
    )
  }
  return main
}

/**
 * The same job as flat ZeRO-3 and as ZeRO++ (qwZ int8 weights, hpZ secondary partition per
 * zone, qgZ int4 gradients): one seed, one data, one model. The result carries the ZeRO++
 * run's figures and both runs under `zeroPP`; the comparison's invariants join the violations.
 */
async function compareZeroPP(o: TrainRunOptions): Promise<TrainRunResult> {
  if ((o.kills ?? []).length > 0) throw new InvalidArgumentError('compareZeroPP compares the algorithms without faults: leave kills out')
  const p = o.progress
  const flat = await once(
    { ...o, zeroPP: false },
    [],
    p === undefined
      ? undefined
      : f => {
          p(f / 2)
        },
    true
  )
  const zpp = await once(
    { ...o, zeroPP: true },
    [],
    p === undefined
      ? undefined
      : f => {
          p(0.5 + f / 2)
        },
    true
  )
  const figures = (r: typeof flat): ComparedRun => ({
    traceHash: r.traceHash,
    events: r.events,
    simMs: r.simMs,
    stepMs: r.stepMs,
    loss: r.loss,
    evalLoss: r.evalLoss,
    heldOutLoss: r.heldOutLoss,
    weightsHash: r.weightsHash,
    sentBytes: r.sentBytes,
    crossZoneBytes: r.crossZoneBytes
  })
  const rel = flat.heldOutLoss !== undefined && zpp.heldOutLoss !== undefined ? Math.abs(zpp.heldOutLoss - flat.heldOutLoss) / flat.heldOutLoss : undefined
  // Every weight gather of the ZeRO++ run that is not qwZ's int8 forward one is a backward one.
  const backward = Object.entries(zpp.crossZoneBytes).reduce((a, [k, b]) => a + (k.startsWith('allGather/') && k !== 'allGather/q8' ? b : 0), 0)
  const { heldOutLoss: _h, sentBytes: _s, crossZoneBytes: _c, ...main } = zpp
  main.violations = [...flat.violations.map(v => `flat ZeRO-3 run: ${v}`), ...zpp.violations.map(v => `ZeRO++ run: ${v}`)]
  if (rel === undefined) main.violations.push('a run ended without a held-out loss: nothing to compare')
  else if (!(rel <= ZERO_PP_LOSS_TOLERANCE)) {
    main.violations.push(
      `ZeRO++ held-out loss ${zpp.heldOutLoss!.toFixed(4)} is ${(100 * rel).toFixed(2)}% from flat ZeRO-3's ${flat.heldOutLoss!.toFixed(4)} (limit ${100 * ZERO_PP_LOSS_TOLERANCE}%)`
    )
  }
  if (backward > 0) main.violations.push(`${backward} backward weight bytes crossed zones with hpZ (expected none)`)
  main.zeroPP = { flat: figures(flat), zeroPP: figures(zpp), heldOutLossRelDiff: rel, limit: ZERO_PP_LOSS_TOLERANCE, backwardWeightCrossZoneBytes: backward }
  return main
}

interface OnceResult extends TrainRunResult {
  heldOutLoss: number | undefined
  sentBytes: ComparedRun['sentBytes']
  crossZoneBytes: Record<string, number>
}

const HELD_OUT_BATCH = 16

/**
 * Mean loss of the final weights (the ranks' f32 master shards, in order) over the held-out
 * stream cut into windows of T + 1 tokens, HELD_OUT_BATCH windows a batch (whole batches only).
 * The trainer's own figure is one B x T batch: too few tokens to compare runs to 1%.
 */
function heldOutLoss(config: GptConfig, T: number, shards: ReadonlyArray<{ start: number; data: Float32Array }>, val: Uint16Array): number | undefined {
  const n = gptLayout(config).length
  let params: Float32Array
  try {
    params = assembleFlat(
      shards.map(s => s.data),
      n
    )
  } catch (err) {
    if (err instanceof InvalidArgumentError) return undefined // not every shard came back
    throw err
  }
  const windows = Math.floor((val.length - 1) / T)
  const B = Math.min(HELD_OUT_BATCH, windows)
  const batches = Math.floor(windows / B)
  if (batches === 0) return undefined
  const model = new Gpt(new CpuBackend(), config, { B, T, dtype: 'f32', seed: 0 })
  try {
    model.setParams(params)
    const inputs = new Int32Array(B * T)
    const targets = new Int32Array(B * T)
    let sum = 0
    for (let k = 0; k < batches; k++) {
      for (let b = 0; b < B; b++) {
        const off = (k * B + b) * T
        for (let t = 0; t < T; t++) {
          inputs[b * T + t] = val[off + t]!
          targets[b * T + t] = val[off + t + 1]!
        }
      }
      sum += model.forward(inputs, targets)
    }
    return sum / batches
  } finally {
    model.dispose()
  }
}

/** The trainer configuration of a simulated run: the `mini` shape (or `tiny`'s layers) over the run's vocabulary. */
function simTrainConfig(o: TrainRunOptions, corpus: Corpus): TrainConfig {
  const { nLayer, nHead, C } = GPT_PRESETS.tiny
  // `small` keeps its preset's context (zeromesh start's shape, for comparisons with real runs).
  const model =
    o.model === 'small'
      ? trainingModel('small', corpus.vocabSize)
      : { ...trainingModel('mini', corpus.vocabSize), ...(o.model === 'tiny' ? { nLayer, nHead, C } : {}), maxT: Math.max(16, o.seq ?? 16) }
  return {
    model,
    B: o.batch ?? 2,
    T: o.seq ?? 16,
    steps: o.steps,
    lr: o.lr ?? 1e-2,
    weightDecay: 0,
    seed: o.seed,
    worldSize: o.worldSize,
    zeroPP: o.zeroPP ?? false,
    dtype: 'f32',
    snapshot: o.snapshot === null ? undefined : (o.snapshot ?? { k: 2, m: 1 }),
    ...(o.outer === undefined
      ? {}
      : {
          outer: {
            every: o.outer.every,
            zones: o.zones ?? 2,
            quant: o.outer.quant ?? OUTER_DEFAULTS.quant,
            streaming: o.outer.streaming ?? false,
            lr: OUTER_DEFAULTS.lr,
            momentum: OUTER_DEFAULTS.momentum
          }
        })
  }
}

/** Bound on |faulted - fault-free| / fault-free of the held-out loss after a zone group dropped out (the DiLoCo tier). */
export const ZONE_LOSS_TOLERANCE = 0.02

/** The ranks that finished; a live node that did not finish, or failed, is a violation. */
function finishedRanks(
  o: TrainRunOptions,
  live: ReadonlyArray<{ id: string; trainer: TrainingWorkload }>,
  settled: ReadonlyMap<string, TrainStatus | Error>,
  limit: number,
  violations: string[]
): TrainStatus[] {
  const ranks: TrainStatus[] = []
  for (const t of live) {
    const r = settled.get(t.id)
    if (r === undefined)
      violations.push(`${t.id} did not finish within ${limit / 1000} simulated s (role ${t.trainer.status().role}, step ${t.trainer.status().step})`)
    else if (r instanceof Error) violations.push(`${t.id} failed: ${r.message}`)
    else if (r.role === 'done') ranks.push(r)
  }
  const shrunk = ranks.some(r => r.recoveries.some(x => x.mode === 'shrink')) || (o.zoneKills ?? []).length > 0
  if (ranks.length !== Math.min(o.worldSize, live.length) && !shrunk) {
    violations.push(`${ranks.length} ranks finished, expected ${o.worldSize}`)
  }
  for (const r of ranks) if (r.step !== o.steps) violations.push(`rank ${r.rank} stopped at step ${r.step} of ${o.steps}`)
  // Zone groups (the DiLoCo tier) train apart: their last losses differ, their final weights (and held-out loss) do not.
  if (o.outer === undefined && new Set(ranks.map(r => r.loss)).size > 1) violations.push(`ranks disagree on the loss: ${ranks.map(r => r.loss).join(', ')}`)
  if (new Set(ranks.map(r => r.evalLoss)).size > 1) violations.push(`ranks disagree on the held-out loss: ${ranks.map(r => r.evalLoss).join(', ')}`)
  return ranks
}

/** SHA-256 of the final weights (the live nodes' shards in order), and with `heldOut` their loss over the held-out stream. */
function finalWeights(
  live: ReadonlyArray<{ trainer: TrainingWorkload }>,
  violations: string[],
  heldOut?: { cfg: TrainConfig; val: Uint16Array }
): { weightsHash: string; heldOut: number | undefined } {
  const all = live
    .map(t => t.trainer.finalShard)
    .filter(x => x !== undefined)
    .sort((a, b) => a.start - b.start)
  // Zone groups hold one copy of the model each: after the last outer step every copy of a shard must be the same bits.
  const shards = all.filter((x, i) => i === 0 || x.start !== all[i - 1]!.start)
  const same = (a: Float32Array, b: Float32Array): boolean =>
    a.length === b.length && Buffer.compare(Buffer.from(a.buffer, a.byteOffset, a.byteLength), Buffer.from(b.buffer, b.byteOffset, b.byteLength)) === 0
  for (const x of all) {
    const first = shards.find(y => y.start === x.start)!
    if (!same(first.data, x.data))
      violations.push(`two ranks hold different final weights for the shard at ${x.start} (the zone groups' last outer step must leave one model)`)
  }
  const h = createHash('sha256')
  for (const s of shards) h.update(new Uint8Array(s.data.buffer, s.data.byteOffset, s.data.byteLength))
  return { weightsHash: h.digest('hex'), heldOut: heldOut === undefined ? undefined : heldOutLoss(heldOut.cfg.model, heldOut.cfg.T, shards, heldOut.val) }
}

/** One run; `compare` adds the figures a ZeRO++ comparison needs (cross-zone bytes, held-out loss). */
async function once(
  o: TrainRunOptions,
  kills: Array<{ rank: number; atStep: number }>,
  progress?: (f: number) => void,
  compare = false,
  zoneKills: Array<{ zone: number; atStep: number }> = []
): Promise<OnceResult> {
  const w = new MembershipWorld({
    seed: o.seed,
    nodes: o.nodes,
    zones: o.zones ?? 2,
    ...(o.topology === undefined ? {} : { topology: o.topology }),
    membership: { heartbeatMs: 100, ...o.membership }
  })
  const { sim } = w
  const corpus = simCorpus(o.data ?? 'text', o.seed)
  const cfg = simTrainConfig(o, corpus)
  const { model } = cfg
  const params = 6 * gptLayout(model).length
  const flops = o.flopsPerS ?? 1e12
  const pending = [...kills]
  const pendingZones = [...zoneKills]
  const commits: Array<{ step: number; ms: number; wanBytes: number }> = []
  const committed = new Set<number>()
  const crashed = new Set<string>()
  const ctrls = new Map<string, AbortController>()
  const trainers: Array<{ id: string; trainer: TrainingWorkload; done: Promise<TrainStatus | Error> }> = []
  const crossZoneBytes: Record<string, number> = {}
  // Collective bytes sent across zones during the training steps (the final evaluation's
  // gather, at step `steps`, left out), by operation kind and body encoding.
  const countCrossZone = (m: CollectiveSent): void => {
    if (m.tier !== 'wan' || m.step >= o.steps) return
    const key = `${m.op}/${m.encoding}`
    crossZoneBytes[key] = (crossZoneBytes[key] ?? 0) + m.bytes
  }
  const t0 = sim.now()
  // Trainers are built before membership starts, as `zeromesh start` does, so each sees the
  // first full view as installed.
  for (const n of w.nodes) {
    const ctrl = new AbortController()
    ctrls.set(n.id, ctrl)
    const boot = w.boot(n)
    const trainer = createTrainingWorkload(
      {
        backend: new CpuBackend(),
        net: n.net,
        ...(compare ? { onCollectiveSent: countCrossZone } : {}),
        membership: n.m!,
        clock: n.handle.clock,
        log: silentLogger(),
        corpus,
        computeMs: tokens => ((params * tokens) / flops) * 1000,
        onStep: s => {
          if (s.rank === 0) progress?.(s.step / o.steps)
          if (!committed.has(s.step)) {
            committed.add(s.step)
            commits.push({ step: s.step, ms: sim.now() - t0, wanBytes: w.net.stats().wan.bytes })
          }
          for (const k of [...pending]) {
            if (s.rank !== k.rank || s.step !== k.atStep) continue
            pending.splice(pending.indexOf(k), 1)
            sim.trace('train-kill', { node: n.id, rank: s.rank, step: s.step })
            crashed.add(n.id)
            w.crash(n.id)
            ctrl.abort()
          }
          for (const k of [...pendingZones]) {
            if (s.step !== k.atStep) continue
            pendingZones.splice(pendingZones.indexOf(k), 1)
            sim.trace('train-kill-zone', { zone: k.zone, step: s.step })
            for (const x of w.nodes.filter(x => x.zone === `z${k.zone}` && !crashed.has(x.id))) {
              crashed.add(x.id)
              w.crash(x.id)
              ctrls.get(x.id)?.abort()
            }
          }
        }
      },
      cfg
    )
    await boot
    const done = trainer.run(ctrl.signal).then(
      s => s,
      (err: unknown) => (err instanceof Error ? err : new Error(String(err)))
    )
    trainers.push({ id: n.id, trainer, done })
  }
  const settled = new Map<string, TrainStatus | Error>()
  for (const t of trainers)
    void t.done.then(r => {
      settled.set(t.id, r)
    })
  const limit = o.limitMs ?? 30 * 60_000
  // Run until every live rank has finished; then the spares are told the run is over.
  await sim.until(() => trainers.every(t => crashed.has(t.id) || settled.has(t.id) || t.trainer.status().role === 'spare'), limit, 50)
  for (const t of trainers) if (!settled.has(t.id) && t.trainer.status().role === 'spare') ctrls.get(t.id)!.abort()
  await sim.until(() => trainers.every(t => crashed.has(t.id) || settled.has(t.id)), 60_000, 50)
  const simMs = sim.now() - t0

  const violations = [...w.violations]
  const live = trainers.filter(t => !crashed.has(t.id))
  const ranks = finishedRanks(o, live, settled, limit, violations)
  const { weightsHash, heldOut } =
    ranks.length > 0
      ? finalWeights(live, violations, compare || o.outer !== undefined ? { cfg, val: corpus.val } : undefined)
      : { weightsHash: undefined, heldOut: undefined }
  const recoveries = ranks.flatMap(r => r.recoveries).filter((r, i, a) => a.findIndex(x => x.fromStep === r.fromStep && x.mode === r.mode) === i)
  return {
    seed: o.seed,
    traceHash: sim.traceHash(),
    events: sim.events,
    simMs,
    violations,
    steps: ranks[0]?.step ?? 0,
    loss: ranks[0]?.loss,
    evalLoss: ranks[0]?.evalLoss,
    weightsHash,
    recoveries,
    stepMs: ranks.length > 0 ? simMs / o.steps : undefined,
    heldOutLoss: heldOut,
    wanBytes: w.net.stats().wan.bytes,
    commits,
    snapshotBytes: ranks.reduce(
      (a, r) => ({ host: a.host + (r.snapshotBytes?.host ?? 0), zone: a.zone + (r.snapshotBytes?.zone ?? 0), wan: a.wan + (r.snapshotBytes?.wan ?? 0) }),
      { host: 0, zone: 0, wan: 0 }
    ),
    sentBytes: ranks.reduce((a, r) => ({ host: a.host + r.bytes.host, zone: a.zone + r.bytes.zone, wan: a.wan + r.bytes.wan }), { host: 0, zone: 0, wan: 0 }),
    crossZoneBytes: Object.fromEntries(Object.entries(crossZoneBytes).sort(([a], [b]) => (a < b ? -1 : 1)))
  }
}

/**
 * A training scenario file: `"workload": "train"` plus the run's shape and its crashes.
 * Unknown keys are errors; errors name the field.
 */
export const trainScenarioSchema = z
  .strictObject({
    name: z.string().min(1).max(100),
    description: z.string().max(2000).optional(),
    workload: z.literal('train'),
    seed: z.int().nonnegative().default(1),
    nodes: z.int().min(1).max(64),
    worldSize: z.int().min(1).max(64),
    steps: z.int().min(1).max(10_000),
    zones: z.int().min(1).max(64).default(2),
    batch: z.int().min(1).max(64).default(2),
    seq: z.int().min(2).max(64).default(16),
    zeropp: z.boolean().default(false),
    /**
     * Run the job as flat ZeRO-3 and as ZeRO++ (qwZ + hpZ + qgZ) and hold the ZeRO++ held-out
     * loss within 1% of the flat one. Without faults (so no reference run), over two or more zones.
     */
    compareZeropp: z.boolean().default(false),
    model: z.enum(['mini', 'tiny', 'small']).default('mini'),
    data: z.enum(['text', 'bigram']).default('text'),
    lr: z.number().positive().max(1).default(1e-2),
    snapshot: z
      .string()
      .regex(/^(off|[1-9]\d?\+[0-9]\d?)$/, 'must be k+m (e.g. 2+1) or off')
      .default('2+1'),
    flopsPerS: z.number().positive().default(1e12),
    /** The network (link profiles per tier, NIC and zone uplink capacities), as in membership scenarios. */
    topology: topologySchema.optional(),
    heartbeatMs: z.number().positive().max(60_000).default(100),
    kills: z
      .array(z.strictObject({ rank: z.int().min(0), atStep: z.int().min(1) }))
      .max(64)
      .default([]),
    /** Crash every node of zone `z<zone>` when the first rank commits `atStep`. */
    zoneKills: z
      .array(z.strictObject({ zone: z.int().min(0), atStep: z.int().min(1) }))
      .max(64)
      .default([]),
    /** The DiLoCo tier: zone groups over the zones, pseudo-gradients averaged every `every` steps. */
    outer: z
      .strictObject({ every: z.int().min(1).max(10_000), quant: z.enum(['int8', 'int4']).default('int8'), streaming: z.boolean().default(false) })
      .optional(),
    reference: z.boolean().default(true),
    limitMs: z
      .number()
      .positive()
      .max(24 * 3600_000)
      .default(30 * 60_000)
  })
  .superRefine((s, ctx) => {
    if (s.worldSize > s.nodes) ctx.addIssue({ code: 'custom', path: ['worldSize'], message: `is ${s.worldSize}, more than the ${s.nodes} nodes` })
    if (s.compareZeropp) {
      if (s.zeropp) ctx.addIssue({ code: 'custom', path: ['zeropp'], message: 'compareZeropp runs both flat ZeRO-3 and ZeRO++; leave zeropp out' })
      if (s.kills.length > 0)
        ctx.addIssue({ code: 'custom', path: ['kills'], message: 'compareZeropp compares the algorithms without faults; leave kills out' })
      if (s.zones < 2)
        ctx.addIssue({ code: 'custom', path: ['zones'], message: `is ${s.zones}; compareZeropp needs 2 or more, so hpZ and qgZ have zones to keep traffic in` })
    }
    if (s.outer !== undefined && s.worldSize % s.zones !== 0)
      ctx.addIssue({ code: 'custom', path: ['outer'], message: `zone groups need the world size (${s.worldSize}) to split over the ${s.zones} zones` })
    for (const [i, k] of s.zoneKills.entries()) {
      if (k.zone >= s.zones) ctx.addIssue({ code: 'custom', path: ['zoneKills', i, 'zone'], message: `zone ${k.zone} does not exist (zones ${s.zones})` })
      if (k.atStep >= s.steps)
        ctx.addIssue({ code: 'custom', path: ['zoneKills', i, 'atStep'], message: `step ${k.atStep} is not before the last step (${s.steps})` })
    }
    for (const [i, k] of s.kills.entries()) {
      if (k.rank >= s.worldSize)
        ctx.addIssue({ code: 'custom', path: ['kills', i, 'rank'], message: `rank ${k.rank} does not exist (worldSize ${s.worldSize})` })
      if (k.atStep >= s.steps)
        ctx.addIssue({ code: 'custom', path: ['kills', i, 'atStep'], message: `step ${k.atStep} is not before the last step (${s.steps})` })
    }
  })
export type TrainScenario = z.output<typeof trainScenarioSchema>

/** A parsed scenario object is a training one when its workload says so. */
export function isTrainScenario(raw: unknown): boolean {
  return typeof raw === 'object' && raw !== null && (raw as { workload?: unknown }).workload === 'train'
}

/** Validates a training scenario; errors name the field. */
export function parseTrainScenario(raw: unknown, source = 'scenario'): TrainScenario {
  const r = trainScenarioSchema.safeParse(raw)
  if (!r.success) {
    const issue = r.error.issues[0]!
    throw new ScenarioError(`${source}: ${issue.path.length === 0 ? '(top level)' : issue.path.join('.')}: ${issue.message}`)
  }
  checkTopologyZones(r.data.topology, r.data.zones, source)
  return r.data
}

/** Reads a scenario file if it is a training one (undefined otherwise, for the membership runner). */
export function readTrainScenario(path: string): TrainScenario | undefined {
  let raw: unknown
  try {
    raw = JSON.parse(readFileSync(path, 'utf8'))
  } catch {
    return undefined // the membership loader reports unreadable and malformed files
  }
  return isTrainScenario(raw) ? parseTrainScenario(raw, path) : undefined
}

/** Runs a training scenario (seed and node count may be overridden from the command line). */
export async function runTrainScenario(
  s: TrainScenario,
  opts: { seed?: number; nodes?: number; progress?: (f: number) => void } = {}
): Promise<TrainRunResult & { scenario: string; ok: boolean }> {
  const snapshot = s.snapshot === 'off' ? null : (([k, m]) => ({ k: k!, m: m! }))(s.snapshot.split('+').map(Number))
  const r = await trainRun({
    seed: opts.seed ?? s.seed,
    nodes: opts.nodes ?? s.nodes,
    worldSize: s.worldSize,
    steps: s.steps,
    zones: s.zones,
    batch: s.batch,
    seq: s.seq,
    zeroPP: s.zeropp,
    compareZeroPP: s.compareZeropp,
    model: s.model,
    data: s.data,
    lr: s.lr,
    snapshot,
    flopsPerS: s.flopsPerS,
    kills: s.kills,
    zoneKills: s.zoneKills,
    ...(s.outer === undefined ? {} : { outer: s.outer }),
    reference: s.reference,
    membership: { heartbeatMs: s.heartbeatMs },
    ...(s.topology === undefined ? {} : { topology: topologyOf(s.topology) }),
    limitMs: s.limitMs,
    ...(opts.progress === undefined ? {} : { progress: opts.progress })
  })
  return { ...r, scenario: s.name, ok: r.violations.length === 0 }
}

/** A short human summary of a training scenario run. */
export function formatTrainReport(r: TrainRunResult & { scenario: string; ok: boolean }): string {
  const lines = [
    `scenario ${r.scenario}: training workload, seed ${r.seed}, ${(r.simMs / 1000).toFixed(1)} s simulated`,
    `trace ${r.traceHash.slice(0, 16)} (${r.events} events); replay with --seed ${r.seed}`,
    `steps: ${r.steps}, loss ${r.loss?.toFixed(4) ?? '-'}, held-out loss ${r.evalLoss?.toFixed(4) ?? '-'}, ${r.stepMs?.toFixed(0) ?? '-'} simulated ms per step`
  ]
  for (const x of r.recoveries) lines.push(`recovery: ${x.mode} of rank ${x.lost.join(', ')} from step ${x.fromStep} (${x.ms} simulated ms)`)
  const sb = r.snapshotBytes
  if (sb !== undefined && sb.host + sb.zone + sb.wan > 0)
    lines.push(
      `snapshot bytes placed by the ranks: ${formatBytes(sb.host)} on their own host, ${formatBytes(sb.zone)} in their zone, ${formatBytes(sb.wan)} across zones`
    )
  if (r.heldOutLoss !== undefined)
    lines.push(
      `held-out loss over the whole held-out stream ${r.heldOutLoss.toFixed(4)}` +
        (r.reference?.heldOutLoss === undefined
          ? ''
          : ` (without faults ${r.reference.heldOutLoss.toFixed(4)}, ${((100 * (r.heldOutLoss - r.reference.heldOutLoss)) / r.reference.heldOutLoss).toFixed(2)}%)`)
    )
  const z = r.zeroPP
  if (z !== undefined) {
    const crossed = (c: ComparedRun): string =>
      Object.entries(c.crossZoneBytes)
        .map(([k, b]) => `${k} ${formatBytes(b)}`)
        .join(', ') || 'none'
    const run = (name: string, c: ComparedRun): string =>
      `  ${name.padEnd(11)} loss ${c.loss?.toFixed(4) ?? '-'}, held-out loss ${c.heldOutLoss?.toFixed(4) ?? '-'} (one batch: ${c.evalLoss?.toFixed(4) ?? '-'}), ` +
      `${(c.simMs / 1000).toFixed(1)} s simulated, trace ${c.traceHash.slice(0, 16)}; across zones: ${crossed(c)}`
    lines.push("ZeRO++ (qwZ int8 weights, hpZ, qgZ int4 gradients) against flat ZeRO-3, same job and seed (the figures above are the ZeRO++ run's):")
    lines.push(run('flat ZeRO-3', z.flat), run('ZeRO++', z.zeroPP))
    lines.push(
      `  held-out loss difference ${z.heldOutLossRelDiff === undefined ? '-' : `${(100 * z.heldOutLossRelDiff).toFixed(3)}%`} (limit ${100 * z.limit}%); ` +
        `backward weight bytes across zones with hpZ: ${z.backwardWeightCrossZoneBytes}`
    )
  }
  if (r.reference !== undefined) {
    lines.push(
      `reference run without faults: ${(r.reference.simMs / 1000).toFixed(1)} s simulated, held-out loss ${r.reference.evalLoss?.toFixed(4) ?? '-'}, ` +
        `final weights ${r.reference.weightsHash === r.weightsHash ? 'bit-identical' : 'differ'}`
    )
  }
  lines.push(
    r.ok
      ? 'invariants: ok (membership safety, every rank finished, ranks agree' +
          (r.reference !== undefined ? ', matches the reference' : '') +
          (z !== undefined ? `, ZeRO++ within ${100 * z.limit}% of flat ZeRO-3` : '') +
          ')'
      : 'invariants: VIOLATED'
  )
  for (const v of r.violations) lines.push(`  - ${v}`)
  lines.push(r.ok ? 'result: PASS' : 'result: FAIL')
  return lines.join('\n')
}
