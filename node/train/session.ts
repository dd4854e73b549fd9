import { Gpt, gptBuckets } from '../../gpu/index.ts'
import { offloadOf } from './offload.ts'
import { CollectiveError, createCollective, createZeroComm, type Collective, type Member } from '../../mesh/index.ts'
import { NoSnapshotError, TransferTimeoutError, UnrecoverableError } from '../../snapshot/index.ts'
import { TrainingError, type ShardState } from './config.ts'
import { GROW_TOPIC, agreedGrowth, growProposal } from './grow.ts'
import { TRAIN_LIMITS } from './limits.ts'
import { agreeSettings } from './settings.ts'
import { endSaves, saveCommitted } from './persist.ts'
import { freshShard, recover } from './recovery.ts'
import { encodeRoster, zoneGroups, type Growth } from './roster.ts'
import { freshOuter, outerQuant, outerSchedule } from './outer.ts'
import { finalEvaluation } from './evaluate.ts'
import { growCheck } from './messages.ts'
import { SessionInterrupted, statusOf, type RunState, type TrainerEnv } from './state.ts'
import {
  PhaseTimes,
  applyOptimizer,
  backwardPass,
  bucketWindows,
  callAt,
  commitStep,
  forwardPass,
  freeShardTensors,
  outerStep,
  resumeOuter,
  type OuterParts,
  shardTensors,
  shardBe,
  type SessionParts,
  type ShardTensors
} from './step.ts'
import { ParamAccounting } from './streamer.ts'
import { readPaced } from './host-copy.ts'
import { zoSteps } from './zo.ts'

/**
 * Rank 0 announces the roster to nodes that joined late (they cannot derive it: ranks may have
 * been replaced before they came): JSON { epoch, members: [{ id, zone, host }] }, with the
 * labels the roster uses (a replacement keeps the lost rank's place in the ring, labels too).
 */
export const ROSTER_TOPIC = 'train/roster'

/** How a session that did not fail ended: every step trained, or the ranks agreed to grow. */
export type SessionOutcome = { kind: 'finished' } | { kind: 'grow'; growth: Growth }

/** The view can form before every pair of members is connected; collectives need them all. */
async function waitForConnections(env: TrainerEnv, rs: RunState, members: readonly Member[], signal?: AbortSignal): Promise<void> {
  const { net, clock, membership } = env.deps
  const want = members.map(m => m.id).filter(id => id !== net.self.id)
  const limit = clock.monotonic() + membership.status().detectionBoundMs + TRAIN_LIMITS.connectSlackMs
  for (;;) {
    const have = new Set(net.peers().map(p => p.id))
    const missing = want.filter(id => !have.has(id))
    if (missing.length === 0) return
    // The ranks finished while this node (a spare that read their departure as a loss) was
    // getting ready to take a rank: nothing is left to take.
    if (rs.gossip.runDone) throw new TrainingError('the run finished while this node was joining its ranks')
    // Unreachable members: the failure path waits for the view to drop them (or, in a
    // minority, for the majority), as after any failed step.
    if (membership.status().paused)
      throw new SessionInterrupted(`not connected to ${missing.length} training member(s), e.g. ${missing[0]}, and this node is in a minority of the view`)
    if (clock.monotonic() > limit) throw new SessionInterrupted(`not connected to ${missing.length} training member(s), e.g. ${missing[0]}`)
    await clock.sleep(TRAIN_LIMITS.pollMs, signal === undefined ? {} : { signal })
  }
}

/**
 * The failure classifier of a session: collective, snapshot and transfer failures (here or
 * reported by another rank through the collective) interrupt the session, so the run
 * recovers; anything else is an error that ends it.
 */
function failureOf(rs: RunState, collective: Collective, epoch: number, signal?: AbortSignal): (err: unknown) => never {
  // A rank that finds a snapshot unrecoverable says so in its failure notice, so every rank
  // counts the attempt as unrecoverable (not only the ones that loaded that snapshot).
  const remote = (e: unknown): { reportedBy: string } | undefined =>
    e instanceof CollectiveError && e.reason === 'unrecoverable' ? { reportedBy: e.peer ?? 'another rank' } : undefined
  return (err: unknown): never => {
    if (err instanceof SessionInterrupted) throw err
    if (err instanceof CollectiveError || err instanceof UnrecoverableError || err instanceof TransferTimeoutError || err instanceof NoSnapshotError) {
      throw new SessionInterrupted(`step ${rs.st.step + 1} under view ${epoch} failed: ${err.message}`, err instanceof UnrecoverableError ? err : remote(err))
    }
    if (signal?.aborted !== true && collective.failed.aborted) {
      const why: unknown = collective.failed.reason
      throw new SessionInterrupted(`step ${rs.st.step + 1} under view ${epoch} failed: ${why instanceof Error ? why.message : String(why)}`, remote(why))
    }
    throw err
  }
}

/** The collectives of a session under `roster` (not started yet); `tier` names a zone group's or an outer group's. */
function sessionCollective(
  env: TrainerEnv,
  parts: { settling: boolean },
  roster: Member[],
  epoch: number,
  round: number,
  tier: { name: string; slackMs: number } = { name: '', slackMs: 0 }
): Collective {
  const { net, clock, log, membership, onCollectiveSent } = env.deps
  return createCollective({
    net,
    view: { epoch, members: roster },
    clock,
    name: `train-${epoch}.${round}${tier.name}`,
    // Until the session's first step commits, ranks may wait on one that is still loading
    // a snapshot (a stalled holder costs it one idle timeout before it turns to parity) or
    // compiling kernels: a longer bound, so a slow start is not mistaken for a failure.
    timeoutMs: () => membership.status().detectionBoundMs + TRAIN_LIMITS.collectiveSlackMs + tier.slackMs + (parts.settling ? TRAIN_LIMITS.settleGraceMs : 0),
    log: log.child({ component: 'mesh:collective' }),
    ...(onCollectiveSent === undefined ? {} : { onSent: onCollectiveSent })
  })
}

/**
 * The zone groups' collectives (the DiLoCo tier): this rank's zone group's, for its steps, and
 * its outer group's (the ranks at its place in every group, zone by zone), for the exchanges.
 * A failure of any collective of the session poisons the others, so every rank of every group
 * fails, waits and recovers together; `unlink` ends that before they are stopped.
 */
interface ZoneTier {
  group: Collective
  outer: OuterParts
  all: Collective[]
  unlink: () => void
}

function zoneTier(env: TrainerEnv, parts: { settling: boolean }, global: Collective, roster: Member[], epoch: number, round: number): ZoneTier {
  const cfg = env.cfg.outer!
  const self = env.deps.net.self.id
  const groups = zoneGroups(roster)
  const zone = groups.findIndex(g => g.some(m => m.id === self))
  const place = groups[zone]!.findIndex(m => m.id === self)
  const group = sessionCollective(env, parts, groups[zone]!, epoch, round, { name: `.z${zone}`, slackMs: 0 })
  const coll = sessionCollective(
    env,
    parts,
    groups.map(g => g[place]!),
    epoch,
    round,
    { name: `.o${place}`, slackMs: TRAIN_LIMITS.outerSlackMs }
  )
  const all = [global, group, coll]
  const links = new AbortController()
  for (const c of all) {
    c.failed.addEventListener(
      'abort',
      () => {
        const why: unknown = c.failed.reason
        for (const o of all) if (o !== c) o.abort(`another collective of the session failed: ${why instanceof Error ? why.message : String(why)}`)
      },
      { once: true, signal: links.signal }
    )
  }
  const outer: OuterParts = { cfg, sc: outerSchedule(cfg), quant: outerQuant(cfg), coll, zone, zones: groups.length, state: undefined, inflight: new Map() }
  return { group, outer, all, unlink: () => links.abort() }
}

/** What a started session's steps run on: the streamed model, its buckets, the accounting. */
function sessionParts(
  env: TrainerEnv,
  rs: RunState,
  parts: { settling: boolean },
  collective: Collective,
  roster: Member[],
  epoch: number,
  rank: number,
  outer: OuterParts | undefined,
  signal?: AbortSignal
): SessionParts {
  const { deps, cfg, layout } = env
  const zero = createZeroComm(collective, cfg.zeroPP ? { qwZ: true, hpZ: true, qgZ: true } : {})
  const N = layout.length
  const shard = zero.shardOf(N)
  // ZeRO-3: the model holds two block slots; each bucket is gathered when the pass reaches
  // it (the next one prefetched) and its gradient reduced as soon as it is complete.
  const model = new Gpt(deps.backend, cfg.model, { B: cfg.B, T: cfg.T, dtype: cfg.dtype, seed: cfg.seed, params: 'stream' })
  const buckets = gptBuckets(layout)
  const memory = {
    shard: 4 * shard.length * 4,
    model: model.paramBytes(),
    inFlightPeak: 0,
    full: 16 * N,
    ...(cfg.offload === undefined ? {} : { hostShard: true })
  }
  const acct = new ParamAccounting(memory, rs.sent, () => deps.clock.monotonic())
  rs.st.memory = acct.memory
  return Object.assign(parts, {
    env,
    rs,
    roster,
    epoch,
    rank,
    P: collective.size,
    collective,
    outer,
    zero,
    shard,
    model,
    be: deps.backend,
    host: offloadOf(env, rs),
    // One rank with exact wires: a gather or reduction is the identity, a device copy.
    local: collective.size === 1 && !cfg.zeroPP,
    buckets,
    acct,
    signal,
    windows: bucketWindows(collective, buckets, shard, N),
    forwardOrder: buckets.map((_, j) => j),
    backwardOrder: buckets
      .map((_, j) => j)
      .slice(1, -1)
      .reverse(),
    fail: failureOf(rs, collective, epoch, signal)
  })
}

/** Rank 0 tells nodes beyond the roster (spares, late joiners) who the ranks are, every ROSTER_EVERY_MS. */
function announceRoster(p: SessionParts): void {
  const { deps } = p.env
  const now = deps.membership.view()
  const gossip = p.rs.gossip
  if (p.rank === 0 && now !== undefined && now.members.length > p.roster.length && deps.clock.monotonic() - gossip.announcedAt >= TRAIN_LIMITS.rosterEveryMs) {
    // Repeated: a joiner may subscribe after an announcement.
    gossip.announcedAt = deps.clock.monotonic()
    void deps.net.publish(ROSTER_TOPIC, encodeRoster(p.epoch, p.roster)).catch(() => {})
  }
}

/**
 * After step s committed: snapshot and disk tier, progress, the roster for late joiners.
 * Returns a promise only when the step must wait for a save before the state changes.
 */
function afterCommit(p: SessionParts, t: ShardTensors, s: number): Promise<void> | undefined {
  const { env, rs } = p
  // Zone groups each hold the whole model: the first group's ranks write the disk tier, as
  // the ranks of a world of the group's size (what --resume and export read).
  const o = p.outer
  const diskAs = o === undefined ? undefined : o.zone === 0 ? { rank: p.collective.rank, P: p.P } : null
  const wait = saveCommitted(env, rs, { rank: p.rank, P: p.roster.length, epoch: p.epoch, s, ...(diskAs === undefined ? {} : { diskAs }) }, t.save)
  env.deps.onStep?.(statusOf(rs))
  announceRoster(p)
  return wait
}

/**
 * Trains from `initial` (or from the seed's initial weights) to the last step under one
 * roster. After a recovery (`rs.plan`), first agrees on the recovery point with the other
 * ranks and loads every needed shard state (snapshots, disk tier, or the old ranks' handoff).
 * The step (step.ts) is written as synchronous parts around this loop's awaits: the
 * simulator's schedule depends on where the awaits are.
 */
export async function runSession(
  env: TrainerEnv,
  rs: RunState,
  roster: Member[],
  epoch: number,
  round: number,
  rank: number,
  initial: ShardState | undefined,
  signal?: AbortSignal
): Promise<SessionOutcome> {
  const { cfg, deps } = env
  rs.st.phase = `session train-${epoch}.${round}: connecting to ${roster.length - 1} other rank(s)`
  await waitForConnections(env, rs, roster, signal)
  const parts = { settling: true }
  const collective = sessionCollective(env, parts, roster, epoch, round)
  // Zone groups (the DiLoCo tier): the steps run on the zone group's collectives.
  const tier = cfg.outer === undefined ? undefined : zoneTier(env, parts, collective, roster, epoch, round)
  await collective.start()
  if (tier !== undefined) for (const c of tier.all.slice(1)) await c.start()
  const close = async (): Promise<void> => {
    tier?.unlink()
    await collective.stop()
    if (tier !== undefined) for (const c of tier.all.slice(1)) await c.stop()
  }
  let p: SessionParts
  try {
    p = sessionParts(env, rs, parts, tier?.group ?? collective, roster, epoch, rank, tier?.outer, signal)
  } catch (err) {
    // The model did not fit (a DeviceOutOfMemoryError, run.ts): the others hear of it at once.
    collective.abort(`rank ${rank} gave up: ${err instanceof Error ? err.message : String(err)}`, 'aborted')
    await close()
    throw err
  }
  const { fail, model } = p
  const growable = cfg.outer === undefined && cfg.zo === undefined && (cfg.maxWorldSize ?? cfg.worldSize) > roster.length
  // Work between collective calls (loading snapshots) ends when the collective is poisoned:
  // when another rank gives up, this one does too, at once, and all retry together.
  const work = signal === undefined ? collective.failed : AbortSignal.any([signal, collective.failed])
  let tensors: ShardTensors | undefined
  try {
    // Real nodes (they carry a run identity) first check that every rank runs the same settings.
    if (cfg.identity !== undefined) {
      rs.st.phase = `session train-${epoch}.${round}: checking that the ranks agree on the settings`
      rs.nonce = await agreeSettings(cfg, collective, roster, rs.nonce, work).catch((err: unknown) =>
        err instanceof TrainingError ? Promise.reject(err) : fail(err)
      )
    }
    let state = initial
    if (state === undefined && rs.plan !== undefined) {
      // The load ends when `work` aborts (the snapshot service's recoveries settle on their
      // signal even with a transfer wedged inside): this rank then fails and retries with the others.
      state = await recover(env, rs, collective, roster, rank, p.shard, work).catch((err: unknown) => {
        if (work.aborted)
          deps.log.warn(
            { phase: rs.st.phase, err: err instanceof Error ? err.message : String(err) },
            'recovery abandoned: the other ranks gave up on this one'
          )
        return fail(err)
      })
    }
    if (state === undefined) {
      rs.st.phase = `session train-${epoch}.${round}: ${cfg.initFrom === undefined ? 'drawing the initial weights' : 'loading the initial weights'}`
      const fresh = freshShard(env, p.shard.start, p.shard.length)
      state = fresh instanceof Promise ? await fresh : fresh
    }
    rs.plan = undefined
    const made = shardTensors(p, state)
    const t = made instanceof Promise ? await made : made
    tensors = t
    if (p.outer !== undefined) {
      p.outer.state = state.outer ?? freshOuter(state.master)
      t.save.outer = p.outer.state
      // (After the last step every fragment was exchanged and applied: nothing is in flight.)
      if (state.step < cfg.steps) resumeOuter(p, state.step)
    }
    // While an outer exchange is awaited: a view that dropped a training member ends the
    // session at once (a partitioned zone would otherwise hold the others until the timeout).
    const interrupt = async (stop: AbortSignal): Promise<never> => {
      const until = AbortSignal.any([work, stop])
      for (;;) {
        const dropped = rs.views.scanLoss(roster, false)
        if (dropped !== undefined) throw new SessionInterrupted(`view ${dropped.epoch} dropped a training member during an outer exchange`)
        await deps.clock.sleep(TRAIN_LIMITS.pollMs, { signal: until })
      }
    }
    rs.st.step = state.step
    rs.rosterStart = state.step
    const phases = new PhaseTimes(rs.st)
    // Zeroth-order runs (--zo) take their steps in zo.ts; the loop below is first-order training.
    if (cfg.zo !== undefined) await zoSteps(p, t, state.step, { afterCommit: s => afterCommit(p, t, s), phases })
    for (let s = cfg.zo === undefined ? state.step : cfg.steps; s < cfg.steps; s++) {
      // A view that dropped a member of this roster (even one whose collectives still work:
      // a false suspicion) ends the session, so every rank replans as the spares do.
      const dropped = rs.views.scanLoss(roster, false)
      if (dropped !== undefined) throw new SessionInterrupted(`view ${dropped.epoch} dropped a training member before step ${s + 1}`)
      const now = (): number => deps.clock.monotonic()
      const t0 = now()
      p.acct.gatherWaitMs = 0
      const fwd = forwardPass(p, t, s)
      const loss = await model.forwardStreamed(fwd.batch.inputs, fwd.batch.targets, fwd.stream).catch(fail)
      const modelled = deps.computeMs?.(cfg.B * cfg.T)
      if (modelled !== undefined && modelled > 0) await deps.clock.sleep(modelled, signal === undefined ? {} : { signal })
      const bwd = backwardPass(p, t, s)
      await model.backwardStreamed(bwd.stream).catch(fail)
      const passed = now()
      rs.st.phase = `step ${s + 1}: gradient reduction`
      await Promise.all(bwd.reductions).catch(fail)
      const reduced = now()
      const stepping = applyOptimizer(p, t, s)
      if (stepping !== undefined) await stepping.catch(fail)
      const updated = now()
      if (p.outer !== undefined) {
        const outer = outerStep(p, t, s, interrupt)
        if (outer !== undefined) await outer.catch(fail)
      }
      rs.st.phase = `step ${s + 1}: commit`
      // When the loss all-reduce returns, every rank has finished step s: it is committed.
      const mean = await p.collective.allReduce(Float32Array.of(loss), { ...callAt(p, s), label: 'loss' }).catch(fail)
      const committed = now()
      p.acct.account(mean.bytes)
      commitStep(p, s, mean.data[0]!, committed - t0)
      const saving = afterCommit(p, t, s)
      if (saving !== undefined) await saving
      // A local rank's step never waits for I/O: without this turn its heartbeats would starve
      // and the mesh would take it for dead.
      if (p.local) await deps.clock.turn()
      const gathers = p.acct.gatherWaitMs
      phases.add(
        {
          compute: passed - t0 - gathers,
          wire: gathers + (reduced - passed) + (committed - updated),
          optimizer: updated - reduced,
          snapshot: now() - committed
        },
        s === state.step
      )
      if (growable && s + 1 < cfg.steps) {
        const all = (await collective.allGather(growProposal(p), 2 * roster.length, { ...callAt(p, s + 1), label: growCheck.label }).catch(fail)).data
        const agreed = agreedGrowth(p, t, all, s)
        if (agreed !== undefined) {
          await deps.net.publish(GROW_TOPIC, agreed.msg).catch(() => {})
          return { kind: 'grow', growth: agreed.growth }
        }
      }
    }
    const final = readPaced(shardBe(p), t.master, () => deps.clock.turn())
    rs.finalShard = { start: p.shard.start, data: final instanceof Promise ? await final : final }
    const ev = finalEvaluation(p, t, rs.finalShard.data)
    rs.st.evalLoss = await model.forwardStreamed(ev.batch.inputs, ev.batch.targets, ev.stream).catch(fail)
    // The last snapshot lands before this rank leaves, so the others can still recover it.
    if (t.save.pending !== undefined) await t.save.pending
    await rs.snapshots?.idle()
    await rs.disk.writes
    return { kind: 'finished' }
  } catch (err) {
    // Whatever ended this rank's session ends the others' at once (a failure notice), so
    // every rank replans or retries at about the same time. (A growth is agreed by all:
    // the others end their sessions on their own, after the same all-gather.)
    const lost = err instanceof SessionInterrupted && err.unrecoverable instanceof UnrecoverableError
    collective.abort(`rank ${rank} gave up: ${err instanceof Error ? err.message : String(err)}`, lost ? 'unrecoverable' : 'aborted')
    throw err
  } finally {
    model.dispose()
    if (tensors !== undefined) {
      const ending = endSaves(tensors.save)
      if (ending !== undefined) await ending
      freeShardTensors(p, tensors)
    }
    await close()
  }
}
