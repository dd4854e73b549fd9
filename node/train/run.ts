import { AbortError } from '../../core/index.ts'
import { DeviceOutOfMemoryError } from '../../gpu/index.ts'
import type { Member, View } from '../../mesh/index.ts'
import { UnrecoverableError, createSnapshotService, type SnapshotService } from '../../snapshot/index.ts'
import { TrainingError, type ShardState } from './config.ts'
import { TRAIN_LIMITS } from './limits.ts'
import { diskHint } from './persist.ts'
import type { RoleEvent } from './role.ts'
import { grownRoster, replan, replanZones, rosterFromView, type Growth } from './roster.ts'
import type { SessionOutcome } from './session.ts'
import { SessionInterrupted, type RunState, type TrainerEnv } from './state.ts'

/** Ranks announce the end of the run: u32 step (little-endian). */
export const DONE_TOPIC = 'train/done'

/** Where the run is between roles: the roster and how this node got to it. */
export interface Cursor {
  /** Maps logical ranks to nodes; changes only by replacing, dropping or adding ranks. */
  roster: Member[]
  epoch: number
  /** True while the roster is the one derived from the first full view (a late joiner's guess). */
  derived: boolean
  /**
   * Sessions under one roster are numbered, so a retry never mixes with the messages of the
   * attempt before it (every rank fails an attempt, so every rank counts the same).
   */
  round: number
  /** The state the next session starts from (undefined: the seed's, or a recovery's). */
  initial: ShardState | undefined
  /** Attempts in a row that found the same snapshot out of reach. */
  unrecoverable: number
  /** Placements so far, less one: recovery attempts (view changes or retries). */
  attempt: number
  /** The growth the grow role applies. */
  growth: (Growth & { view: View | undefined; agreedHere: boolean }) | undefined
  /** The failure the retry role recovers from. */
  failure: SessionInterrupted | undefined
}

/** The roster is in place: status follows it, and the next role is rank or spare. */
export function placed(env: TrainerEnv, rs: RunState, c: Cursor): RoleEvent {
  c.attempt++
  rs.st.epoch = c.epoch
  rs.st.worldSize = c.roster.length
  return { type: 'placed', onRoster: c.roster.some(m => m.id === env.deps.net.self.id) }
}

/**
 * Waiting: starts the snapshot service for the first full view (the roster's first
 * `worldSize` members), so every rank can place its snapshots from the first step.
 */
export function snapshotServiceFor(env: TrainerEnv, first: View): SnapshotService | undefined {
  const { cfg, deps } = env
  if (cfg.snapshot === undefined) return undefined
  const { k, m } = cfg.snapshot
  if (k + m > first.members.length - 1) {
    throw new TrainingError(
      `--snapshot ${k}+${m} places ${k + m} fragments on as many other nodes, but the mesh has ${first.members.length} ` +
        `(${first.members.length - 1} besides each rank): use a smaller k+m, add nodes, or --snapshot off`
    )
  }
  // No re-stripe on a view change: it would move the holders' recovery point past the
  // version a recovery still needs (the lost ranks' newest); the trainer re-captures at
  // the next commit under the new view anyway.
  return createSnapshotService(
    {
      k,
      m,
      idleTimeoutMs: TRAIN_LIMITS.snapshotIdleMs,
      autoRestripe: false,
      placement: cfg.snapshotPlacement ?? (cfg.outer === undefined ? 'spread' : 'zone')
    },
    {
      net: deps.net,
      clock: deps.clock,
      log: deps.log.child({ component: 'snapshot' }),
      ...(deps.metrics === undefined ? {} : { metrics: deps.metrics }),
      ...(deps.snapshotCoder === undefined ? {} : { coder: deps.snapshotCoder })
    }
  )
}

/**
 * The roster of the first view with enough members, as installed (recorded from construction
 * on): polling the current view instead could see a later one after a false suspicion, and
 * nodes would then disagree on the roster. The roster is its first `worldSize` members.
 */
export function firstRoster(env: TrainerEnv, rs: RunState, first: View): Cursor {
  const roster = rosterFromView(first, env.cfg.worldSize, env.cfg.outer?.zones)!
  rs.views.admit(roster)
  rs.views.begin(first)
  return { roster, epoch: first.epoch, derived: true, round: 0, initial: undefined, unrecoverable: 0, attempt: -1, growth: undefined, failure: undefined }
}

/** The first view with `worldSize` members (the one recorded at installation, else the current one once it has them). */
export async function waitForView(env: TrainerEnv, ok: (v: View) => boolean, signal?: AbortSignal): Promise<View> {
  const { membership, clock } = env.deps
  for (;;) {
    if (signal?.aborted === true) throw new AbortError('training aborted while waiting for the mesh')
    const v = membership.view()
    if (v !== undefined && ok(v)) return v
    await clock.sleep(TRAIN_LIMITS.pollMs, signal === undefined ? {} : { signal })
  }
}

/** A roster derived from the first view is only a guess for a late joiner: the ranks' announcement replaces it. */
function adopt(env: TrainerEnv, rs: RunState, c: Cursor): void {
  const a = rs.gossip.announced
  const key = (ms: Member[]): string => ms.map(m => `${m.id}/${m.zone}/${m.host}`).join()
  if (a === undefined || (!c.derived && a.epoch <= c.epoch) || key(a.members) === key(c.roster)) return
  c.roster = a.members
  rs.views.admit(c.roster)
  c.epoch = Math.max(c.epoch, a.epoch)
  c.derived = false
  env.deps.log.info({ epoch: a.epoch, ranks: c.roster.length }, 'adopted the roster the ranks announced')
}

/** Replans the roster after a view that dropped a member of it. */
function applyLoss(env: TrainerEnv, rs: RunState, c: Cursor, next: View): void {
  if (rs.plan?.mode === 'grow') rs.grow.handoff = undefined
  const change = env.cfg.outer === undefined ? replan(c.roster, next, rs.plan) : replanZones(c.roster, next, rs.plan)
  rs.plan = change.plan
  c.roster = change.roster
  rs.views.admit(c.roster)
  c.derived = false
  c.epoch = next.epoch
  c.round = 0
}

/** Spare: status says so while it waits. */
export function enterSpare(rs: RunState): void {
  rs.st.role = 'spare'
  rs.st.rank = undefined
  rs.st.phase = 'spare: waiting for a lost rank or the end of the run'
}

/**
 * Spare, polled: takes the ranks' roster announcement, then reports a view that dropped a
 * rank (the roster is replanned; this node may be on it), a growth this node can apply, or
 * the end of the run; undefined while none has come.
 */
export function spareCheck(env: TrainerEnv, rs: RunState, c: Cursor): RoleEvent | undefined {
  const { cfg } = env
  adopt(env, rs, c)
  const next = rs.views.nextLoss(c.roster)
  if (next !== undefined) {
    applyLoss(env, rs, c, next)
    c.initial = undefined
    return placed(env, rs, c)
  }
  if (rs.gossip.runDone) return { type: 'finished' }
  const grow = rs.views.pendingGrowth(c.roster, rs.grow.to, cfg.maxWorldSize ?? cfg.worldSize)
  if (grow === undefined) return undefined
  // The ranks grew the run: the roster grows alike here, and this node may be on it.
  c.growth = { ...rs.grow.to!, view: grow, agreedHere: false }
  return { type: 'grow' }
}

/** The run needs this node no more: the ranks finished while it was a spare (or was replaced). */
function finishedWithout(env: TrainerEnv, rs: RunState, err?: unknown): RoleEvent {
  env.deps.log.info({ err: err instanceof Error ? err.message : String(err) }, 'the run finished without this node')
  rs.st.role = 'spare'
  rs.st.phase = 'the run finished without this node'
  return { type: 'finished' }
}

/** Rank: status says so; returns this node's rank on the roster. */
export function enterRank(env: TrainerEnv, rs: RunState, c: Cursor): number {
  const r = c.roster.findIndex(m => m.id === env.deps.net.self.id)
  rs.st.role = 'rank'
  rs.st.rank = r
  return r
}

/** Rank: the session ended without failing (every step trained, or the ranks agreed to grow). */
export function rankEnded(env: TrainerEnv, rs: RunState, c: Cursor, outcome: SessionOutcome): RoleEvent {
  if (outcome.kind === 'finished') {
    rs.st.role = 'done'
    return { type: 'finished', announce: true }
  }
  const g = outcome.growth
  if (rs.gossip.runDone && rs.finalShard === undefined)
    return finishedWithout(env, rs, new Error(`growing by ${g.count} rank(s) from view ${g.epoch} after step ${g.step}`))
  c.growth = { ...g, view: undefined, agreedHere: true }
  return { type: 'grow' }
}

/** Rank: the session failed. A recoverable failure moves to retry; anything else is thrown. */
export function rankFailed(env: TrainerEnv, rs: RunState, c: Cursor, err: unknown): RoleEvent {
  const { deps, cfg } = env
  // Another rank announced the end of the run (every step committed) and this node never
  // finished a roster's last step: it was a spare (or was replaced) that read finished
  // ranks leaving as lost ones. The run does not need it.
  if (rs.gossip.runDone && rs.finalShard === undefined) return finishedWithout(env, rs, err)
  if (err instanceof DeviceOutOfMemoryError) throw outOfMemory(env, err)
  if (!(err instanceof SessionInterrupted)) throw err
  if (rs.st.step >= cfg.steps && rs.finalShard !== undefined) {
    // Every step is committed; only the held-out evaluation's gather failed (a rank
    // that finished first left while its last bytes were in flight). Training is done.
    deps.log.warn({ err: err.message }, 'the final evaluation gather failed: training is complete, the held-out loss is not reported')
    rs.st.role = 'done'
    return { type: 'finished' }
  }
  if (cfg.snapshot === undefined) throw new TrainingError(`${err.message}; snapshots are off (--snapshot off), so a lost or stalled rank ends the run`)
  // The same snapshot twice out of reach: more holders are gone than the code tolerates.
  c.unrecoverable = err.unrecoverable === undefined ? 0 : c.unrecoverable + 1
  if (c.unrecoverable >= 2 || c.attempt >= TRAIN_LIMITS.maxAttempts) throw giveUp(env, rs, err)
  c.failure = err
  return { type: 'interrupted' }
}

/** Grow: the roster takes the growth's joiners, and the old ranks hand their state over in the next session. */
export function grow(env: TrainerEnv, rs: RunState, c: Cursor): RoleEvent {
  const g = c.growth!
  c.growth = undefined
  const v = g.view ?? rs.views.view(g.epoch)
  if (v === undefined) throw new TrainingError(`view ${g.epoch} that the run grows with is no longer known here`)
  rs.grow.lastStep = g.step
  rs.grow.to = undefined
  const old = c.roster
  c.roster = grownRoster(old, v, g.count)
  rs.views.admit(c.roster)
  c.derived = false
  rs.views.consumeThrough(v)
  rs.plan = { mode: 'grow', lost: [], oldRoster: old }
  rs.st.growths.push({ from: old.length, to: c.roster.length, atStep: g.step })
  if (g.agreedHere) env.deps.log.info({ from: old.length, to: c.roster.length, step: g.step, epoch: g.epoch }, 'the run grows: late joiners become ranks')
  c.epoch = v.epoch
  c.round = 0
  c.initial = undefined
  return placed(env, rs, c)
}

/** Retry: status says why; returns the failure to recover from. */
export function enterRetry(env: TrainerEnv, rs: RunState, c: Cursor): SessionInterrupted {
  const err = c.failure!
  c.failure = undefined
  env.deps.log.warn({ err: err.message, step: rs.st.step }, 'training step failed: recovering')
  rs.st.phase = `after a failure: waiting for a view change (${err.message})`
  return err
}

/**
 * Retry, after {@link afterFailure}: replans after the view that dropped a training member,
 * or (nobody was lost: a stall, a reset stream) runs the same roster again from the newest
 * snapshot they all have.
 */
export function retried(env: TrainerEnv, rs: RunState, c: Cursor, next: View | undefined): RoleEvent {
  if (next === undefined) {
    c.round++
    rs.st.retries++
    rs.plan ??= { mode: 'replace', lost: [], oldRoster: c.roster }
    env.deps.log.warn({ round: c.round, epoch: c.epoch }, 'no training member was lost: retrying from the newest common snapshot')
  } else {
    applyLoss(env, rs, c, next)
  }
  c.initial = undefined
  return placed(env, rs, c)
}

/**
 * After a failed session: the view that dropped a training member (replace or shrink), or
 * undefined when none came within the detector's bound plus slack (a transient failure:
 * retry with the same ranks). A node left in a minority waits for the majority up to
 * `minorityWaitMs`, then fails with a clear error instead of waiting forever.
 */
export async function afterFailure(env: TrainerEnv, rs: RunState, roster: Member[], signal?: AbortSignal): Promise<View | undefined> {
  const { membership, clock, log } = env.deps
  let deadline = clock.monotonic() + membership.status().detectionBoundMs + TRAIN_LIMITS.retrySlackMs
  let pausedSince: number | undefined
  for (;;) {
    if (signal?.aborted === true) throw new AbortError('training aborted while waiting for the mesh')
    const v = rs.views.nextLoss(roster)
    if (v !== undefined) return v
    const st = membership.status()
    const now = clock.monotonic()
    if (st.paused) {
      if (pausedSince === undefined) {
        pausedSince = now
        log.warn(
          { live: st.members.filter(m => m.live).length, members: st.members.length },
          'this node is in a minority of the view: training waits for the majority'
        )
      }
      const limit = env.cfg.minorityWaitMs ?? TRAIN_LIMITS.defaultMinorityWaitMs
      if (now - pausedSince > limit) {
        throw new TrainingError(
          `this node has been in a minority of view ${st.epoch} for ${Math.round(limit / 1000)} s ` +
            `(${st.members.filter(m => m.live).length} of ${st.members.length} members reachable): training cannot go on safely. ` +
            'Restart the nodes with --resume to continue from the disk tier' +
            diskHint(env, rs)
        )
      }
    } else if (pausedSince !== undefined) {
      pausedSince = undefined
      deadline = now + st.detectionBoundMs + TRAIN_LIMITS.retrySlackMs
    }
    if (pausedSince === undefined && now > deadline) return undefined
    await clock.sleep(TRAIN_LIMITS.pollMs, signal === undefined ? {} : { signal })
  }
}

/** A rank whose training does not fit its device: not a fault a retry mends; the error says what would. */
function outOfMemory(env: TrainerEnv, err: DeviceOutOfMemoryError): TrainingError {
  const { cfg } = env
  const tips = [
    ...(cfg.offload === undefined && cfg.zo === undefined ? ['--offload cpu (the optimizer state and master weights to host memory)'] : []),
    'a smaller --batch or --seq',
    'more ranks (--world-size: each holds a smaller shard)'
  ]
  return new TrainingError(`training does not fit this device: ${err.message}. Try ${tips.join(', or ')}`, { ...err.details }, { cause: err })
}

/** The error a rank ends with when its snapshots cannot bring the run back. */
function giveUp(env: TrainerEnv, rs: RunState, err: SessionInterrupted): Error {
  if (err.unrecoverable === undefined)
    return new TrainingError(`training gave up after ${TRAIN_LIMITS.maxAttempts} recovery attempts; the last: ${err.message}`)
  const u = err.unrecoverable
  if (!(u instanceof UnrecoverableError)) {
    return new TrainingError(
      `${err.message}: ${u.reportedBy} found a snapshot this recovery needs unrecoverable (more of its holders are gone than the erasure code tolerates). ` +
        'Restart the nodes with --resume to continue from the disk tier' +
        diskHint(env, rs)
    )
  }
  return new TrainingError(
    `${u.message}: more holders of rank ${u.rank}'s snapshot are gone than the erasure code tolerates (m = ${u.m}). ` +
      'Restart the nodes with --resume to continue from the disk tier' +
      diskHint(env, rs)
  )
}
