import { shardRange } from '../../core/index.ts'
import { initGptParamsYielding } from '../../gpu/index.ts'
import type { Collective, Member, PeerId } from '../../mesh/index.ts'
import { SNAPSHOT_LIMITS, UnrecoverableError, launchName, loadGptCheckpoint, sameLaunch, type RankState } from '../../snapshot/index.ts'
import { diskFile, diskSteps, loadDiskState, sameRun } from '../disk-tier.ts'
import { GROW_TOPIC } from './grow.ts'
import { TRAIN_LIMITS } from './limits.ts'
import { codedMoments, keepsV, stateOptimizer, TrainingError, type ShardRange, type ShardState } from './config.ts'
import { adam8Runs, cutAdam8, freshAdam8 } from './adam8.ts'
import { recoveryPoint, recoveryVerdict, resumeIndex, resumeLaunch, stateSlot, stateSlot8, type DiskFile } from './messages.ts'
import { copyOuter, outerSchedule, zoneRecoveryPoints } from './outer.ts'
import { zoneGroups } from './roster.ts'
import { diskHint } from './persist.ts'
import { SessionInterrupted, type RunState, type TrainerEnv } from './state.ts'

/**
 * This rank's shard of the initial weights (the seed's, or the `initFrom` checkpoint's), with
 * zero optimizer moments.
 */
export function freshShard(env: TrainerEnv, start: number, length: number): ShardState | Promise<ShardState> {
  const cut = (full: Float32Array): ShardState => {
    // A shard that is the whole model (one rank) is the initial weights themselves: a copy of
    // 500 MB here held a GPU rank's event loop before its first step.
    const whole = start === 0 && length === full.length
    const master = whole ? full : new Float32Array(length)
    if (!whole) master.set(full.subarray(start, Math.min(full.length, start + length)))
    const k8 = codedMoments(env.cfg)
    if (k8 !== 0) return { step: 0, master, m: new Float32Array(0), v: new Float32Array(0), adam8: freshAdam8(env.layout, { start, length }, k8) }
    return { step: 0, master, m: new Float32Array(length), v: new Float32Array(keepsV(env.cfg) ? length : 0) }
  }
  const from = env.cfg.initFrom
  if (from !== undefined) {
    return loadGptCheckpoint(from, { expect: env.cfg.model }).then(
      c => cut(c.flat),
      (err: unknown) => {
        throw new TrainingError(`cannot load the initial weights (--init-from): ${(err as Error).message}`, {}, { cause: err })
      }
    )
  }
  // A large model's initialisation takes seconds on the CPU: it lets the event loop turn.
  const full = initGptParamsYielding(env.cfg.model, env.cfg.seed, () => env.deps.clock.turn())
  return full instanceof Float32Array ? cut(full) : full.then(cut)
}

/**
 * The shard `shard` of the full flat state assembled from every old rank's state (in rank
 * order). 8-bit moments are re-blocked (adam8.ts, cutAdam8): exact only on the same world size.
 */
export function cutShard(env: TrainerEnv, states: readonly RankState[], step: number, shard: ShardRange): ShardState {
  const N = env.layout.length
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
  const k8 = codedMoments(env.cfg)
  if (k8 !== 0) return { step, master: cut(st => st.weights), m: new Float32Array(0), v: new Float32Array(0), adam8: cutAdam8(env.layout, states, shard, k8) }
  return { step, master: cut(st => st.weights), m: cut(st => st.adamM), v: keepsV(env.cfg) ? cut(st => st.adamV) : new Float32Array(0) }
}

/**
 * Per old rank, the newest complete snapshot versions this node knows of (manifests are
 * gossiped, so a rank may lag; captures can be superseded, so owners skip different steps:
 * the recovery point must be one every owner placed, which the holders' own recovery point is).
 */
function knownVersions(env: TrainerEnv, rs: RunState, old: Member[], K: number): Uint32Array {
  const svc = rs.snapshots
  return recoveryPoint.encode(
    old.map(m => {
      // Snapshots off (`--snapshot off`): nothing is known, the recovery point is the start.
      if (svc === undefined) return []
      const vs = svc.manifests(m.id).map(x => x.version)
      if (m.id === env.deps.net.self.id && svc.retained() !== undefined) vs.unshift(svc.retained()!.step)
      const newest = [...new Set(vs)].sort((a, b) => b - a)
      // The holders' recovery point (a version every member has complete, pinned in their
      // stores: the newest kept capture, persist.ts, or with zone groups the newest outer stage
      // every group snapshotted) stays among the offered versions. Ordinary captures may have
      // been superseded at different steps on different ranks, so the newest K need not
      // share a step.
      const rp = svc.recoveryPoint()?.version
      if (rp === undefined || newest.slice(0, K).includes(rp) || !newest.includes(rp)) return newest.slice(0, K)
      return [...newest.slice(0, K - 1), rp]
    }),
    K
  )
}

/**
 * The recovery point from every rank's knowledge: per owner, the versions anyone knows (a
 * manifest means every holder has it); the point is the newest step every old rank's
 * snapshot reached (holders keep everything from the newest version common to all owners).
 */
function recoveryPointOf(env: TrainerEnv, rs: RunState, sets: Array<Set<number>>, old: Member[]): number {
  const best = sets.map(set => Math.max(0, ...set))
  const common = [...sets[0]!].filter(v => sets.every(set => set.has(v)))
  if (common.length === 0 && best.some(v => v > 0)) {
    throw new TrainingError(
      `no snapshot step is known complete for every rank (newest per rank: ${best.join(', ')}; captures were superseded at different steps): ` +
        'the state cannot be put together from peers. Restart the nodes with --resume to continue from the disk tier' +
        diskHint(env, rs)
    )
  }
  const rp = Math.max(0, ...common)
  if (rp < rs.rosterStart) {
    // An owner of this roster never placed a snapshot of its own: the state of the step
    // this roster started from is gone with it. Never fall back to a fresh start silently.
    throw new TrainingError(
      `rank(s) ${old
        .map((_m, i) => (best[i]! < rs.rosterStart ? i : -1))
        .filter(i => i >= 0)
        .join(', ')} were lost before placing a snapshot ` +
        `since step ${rs.rosterStart}, where this roster began: the state is not recoverable from peers. Restart the nodes with --resume to continue from the disk tier` +
        diskHint(env, rs)
    )
  }
  return rp
}

/**
 * Zone groups (the DiLoCo tier): this rank's group's recovery point. Each group rolls back to
 * the newest step all its ranks placed, among the steps at which every group had applied the
 * same outer exchanges (outer.ts, {@link zoneRecoveryPoints}); step 0 (the seed's weights) is
 * always at hand, but a rank whose roster began later refuses to go back there.
 */
function zoneRecoveryPoint(env: TrainerEnv, rs: RunState, roster: Member[], rank: number, from: number[], sets: Array<Set<number>>, old: Member[]): number {
  const groups = zoneGroups(roster)
  const at = new Map(roster.map((m, i) => [m.id, i]))
  const common = groups.map(g => {
    const loads = g.map(m => sets[from[at.get(m.id)!]!]!)
    const both = [...loads[0]!].filter(v => loads.every(x => x.has(v)))
    // The seed's state is always at hand (a rank that began later refuses it below).
    return new Set([0, ...both])
  })
  const points = zoneRecoveryPoints(outerSchedule(env.cfg.outer!), common)
  if (points === undefined) {
    throw new TrainingError(
      `the zone groups have no snapshot steps at the same outer stage (steps per group: ${common.map(c => [...c].sort((a, b) => a - b).join(',') || 'none').join('; ')}; ranks ${old.length}): ` +
        'the state cannot be put together from peers. Restart the nodes with --resume to continue from the disk tier' +
        diskHint(env, rs)
    )
  }
  const mine = groups.findIndex(g => g.some(m => m.id === roster[rank]!.id))
  const rp = points[mine]!
  if (rp < rs.rosterStart)
    throw new TrainingError(
      `zone group ${mine} can only go back to step ${rp}, before step ${rs.rosterStart} where this roster began: the state is not recoverable from peers. ` +
        'Restart the nodes with --resume to continue from the disk tier' +
        diskHint(env, rs)
    )
  return rp
}

/**
 * After a lost rank (or a failed attempt): agree on the recovery point with the other ranks,
 * then load state from the snapshots. Replace: each rank loads the state its logical rank
 * had. Shrink: each rank rebuilds the full flat state from every old rank's snapshot and
 * takes its new shard. Resume: the same from the disk tier instead of the peers. Grow: the
 * old ranks hand their states to the new roster.
 */
export async function recover(
  env: TrainerEnv,
  rs: RunState,
  collective: Collective,
  roster: Member[],
  rank: number,
  shard: ShardRange,
  signal?: AbortSignal
): Promise<ShardState> {
  const plan = rs.plan!
  if (plan.mode === 'resume') return await resume(env, rs, collective, roster, shard, signal)
  if (plan.mode === 'grow') return await growExchange(env, rs, collective, roster, shard, signal)
  const svc = rs.snapshots
  const { clock, log } = env.deps
  const t0 = clock.monotonic()
  const old = plan.oldRoster
  const opts = signal === undefined ? {} : { signal }
  const K = SNAPSHOT_LIMITS.maxManifestsPerOwner
  const known = knownVersions(env, rs, old, K)
  rs.st.phase = 'recovery: agreeing on the recovery point'
  const all = await collective.allGather(known, roster.length * known.length, { step: 0, label: recoveryPoint.label, ...opts })
  // The old ranks whose state is loaded: all of them, or in zone groups those that still
  // stand for a rank (a group whose zone dropped out took its snapshots with it).
  const needed = plan.from ?? old.map((_m, i) => i)
  const sets = recoveryPoint.decode(all.data, roster.length, old.length, K)
  const rp =
    env.cfg.outer === undefined || plan.mode !== 'replace'
      ? recoveryPointOf(
          env,
          rs,
          needed.map(i => sets[i]!),
          needed.map(i => old[i]!)
        )
      : zoneRecoveryPoint(env, rs, roster, rank, needed, sets, old)
  const record = (): void => {
    if (plan.lost.length > 0)
      rs.st.recoveries.push({
        // A zone group that dropped out leaves fewer ranks: a shrink, though each rank loads its own state.
        mode: plan.from !== undefined && roster.length < old.length ? 'shrink' : (plan.mode as 'replace' | 'shrink'),
        lost: plan.lost,
        fromStep: rp,
        ms: Math.round(clock.monotonic() - t0)
      })
  }
  // Zone groups may go back to different steps, step 0 for some: every rank still takes part
  // in the verdict below, so the ranks' collective calls stay in step.
  const zoned = env.cfg.outer !== undefined && plan.mode === 'replace'
  if (rp === 0 && !zoned) {
    record()
    return freshShard(env, shard.start, shard.length)
  }
  if (svc === undefined && rp > 0)
    throw new TrainingError(`the other ranks agreed on snapshot step ${rp}, but this node runs with snapshots off (--snapshot must agree)`)
  const fetch = async (owner: PeerId): Promise<RankState> => {
    rs.st.phase = `recovery: loading ${owner}'s snapshot of step ${rp}`
    const st = (await svc!.recover({ owner, version: rp }, opts)).state
    if (st.optimizer !== stateOptimizer(env.cfg))
      throw new TrainingError(
        `${owner}'s snapshot of step ${rp} holds ${st.optimizer ?? 'adamw'} state, but this run trains with ${stateOptimizer(env.cfg) ?? 'adamw'} (--optimizer and --zo must agree)`
      )
    if (st.nonce !== undefined && rs.nonce !== undefined && !sameLaunch(st.nonce, rs.nonce))
      throw new TrainingError(
        `${owner}'s snapshot of step ${rp} belongs to another launch of this run (launch ${launchName(st.nonce)}, this run's is ${launchName(rs.nonce)}): ` +
          'a node of an earlier launch still holds fragments in this mesh; stop it, or give the new launch another --run'
      )
    return st
  }
  // Every rank says whether its load found a snapshot unrecoverable before any goes on, so
  // all count the attempt alike (a rank that gave up first would otherwise cut the others'
  // loads short, and they would not know why).
  let loaded: RankState[] | undefined
  let lost: UnrecoverableError | undefined
  try {
    if (rp > 0) loaded = plan.mode === 'replace' ? [await fetch(old[plan.from?.[rank] ?? rank]!.id)] : await Promise.all(old.map(mb => fetch(mb.id)))
  } catch (err) {
    if (!(err instanceof UnrecoverableError)) throw err
    lost = err
  }
  rs.st.phase = 'recovery: comparing the loads'
  const verdict = (await collective.allGather(recoveryVerdict.encode(lost !== undefined), roster.length, { step: 0, label: recoveryVerdict.label, ...opts }))
    .data
  const reporter = recoveryVerdict.decode(verdict, roster.length)
  if (lost !== undefined) throw lost
  if (reporter >= 0)
    throw new SessionInterrupted(`recovery from step ${rp} failed: rank ${reporter} (${roster[reporter]!.id}) found a snapshot unrecoverable`, {
      reportedBy: `rank ${reporter} (${roster[reporter]!.id})`
    })
  record()
  if (loaded === undefined) {
    const fresh = freshShard(env, shard.start, shard.length)
    return fresh instanceof Promise ? await fresh : fresh
  }
  if (plan.mode === 'replace') {
    const st = loaded[0]!
    log.info({ rank, step: rp, from: old[plan.from?.[rank] ?? rank]!.id }, 'loaded rank state from the snapshot')
    const out: ShardState = { step: rp, master: st.weights.slice(), m: st.adamM.slice(), v: st.adamV.slice() }
    if (st.adam8 !== undefined) out.adam8 = { m: st.adam8.m.slice(), v: st.adam8.v.slice(), scales: st.adam8.scales.slice() }
    if (st.outer !== undefined) out.outer = copyOuter(st.outer)
    return out
  }
  // Shrink: the full flat state from every old rank's shard, then this rank's new shard.
  return cutShard(env, loaded, rp, shard)
}

/** The newest step for which some member holds every old rank's file, and who holds which. */
function newestComplete(index: DiskFile[][]): { step: number; worldSize: number; from: Map<number, number> } {
  // For each step, which old ranks some member holds (and which member).
  const byStep = new Map<number, { worldSize: number; from: Map<number, number> }>()
  index.forEach((files, r) => {
    for (const f of files) {
      let e = byStep.get(f.step)
      if (e === undefined) byStep.set(f.step, (e = { worldSize: f.worldSize, from: new Map() }))
      if (e.worldSize !== f.worldSize)
        throw new TrainingError(`--resume: the disk tier files of step ${f.step} disagree on the world size (${e.worldSize} and ${f.worldSize})`)
      if (!e.from.has(f.rank)) e.from.set(f.rank, r)
    }
  })
  const usable = [...byStep.entries()]
    .filter(([, e]) => e.from.size === e.worldSize)
    .map(([step]) => step)
    .sort((a, b) => b - a)
  if (usable.length === 0) {
    const seen = [...byStep.entries()].map(([step, e]) => `step ${step}: ranks ${[...e.from.keys()].sort((a, b) => a - b).join(',')} of ${e.worldSize}`)
    throw new TrainingError(
      `--resume: no step has every rank's state on the training members' disks (${seen.length === 0 ? 'no disk tier files at all' : seen.join('; ')})`
    )
  }
  return { step: usable[0]!, ...byStep.get(usable[0]!)! }
}

/**
 * The run nonce of the disk tier files a resume loads, from what every member said of its own
 * file at that step (all members see the same, so all adopt the same), or undefined for files
 * written before nonces. Files of two launches of one run (the same run id and settings,
 * started twice) are a TrainingError naming the members.
 */
function launchOf(nonces: ReadonlyArray<Uint8Array | undefined>, roster: readonly Member[], step: number): Uint8Array | undefined {
  const have = nonces.flatMap((n, r) => (n === undefined ? [] : [{ n, r }]))
  const first = have[0]
  if (first === undefined) return undefined
  const odd = have.filter(x => !sameLaunch(x.n, first.n))
  if (odd.length > 0) {
    const who = (x: { n: Uint8Array; r: number }): string => `${roster[x.r]!.host} (launch ${launchName(x.n)})`
    throw new TrainingError(
      `--resume: the disk tier files of step ${step} come from different launches of this run: ${who(first)} but ${odd.map(who).join(', ')}; ` +
        "the same run id and settings were started twice. Move the other launch's files out of the data dirs"
    )
  }
  return first.n
}

/**
 * `--resume`: every training member reads its disk tier, they agree on the newest step for
 * which some member holds the file of every old rank, exchange those states and each takes
 * its shard (the world size may differ from the run that wrote them).
 */
async function resume(env: TrainerEnv, rs: RunState, collective: Collective, roster: Member[], shard: ShardRange, signal?: AbortSignal): Promise<ShardState> {
  const { log, clock } = env.deps
  const t0 = clock.monotonic()
  const dir = env.cfg.disk!.dir
  const opts = signal === undefined ? {} : { signal }
  // Per member: up to DISK_SLOTS (step, rank, world size) triples of the files it has.
  const steps = (await diskSteps(dir)).slice(0, resumeIndex.slots)
  const held = new Map<number, RankState>()
  const files: Array<DiskFile | undefined> = []
  for (const [i, step] of steps.entries()) {
    const st = await loadDiskState(dir, step)
    files[i] = undefined
    if (st === undefined) continue
    if (!sameRun(st, env.cfg.identity))
      throw new TrainingError(
        `--resume: ${diskFile(dir, step)} (rank ${st.rank}, step ${step}) is another run's state: its run id, model, seed or training settings differ from this node's; move it away or start this node with that run's settings`
      )
    if (st.optimizer !== stateOptimizer(env.cfg))
      throw new TrainingError(
        `--resume: ${diskFile(dir, step)} holds ${st.optimizer ?? 'adamw'} state, but this node trains with ${stateOptimizer(env.cfg) ?? 'adamw'}; start it with the run's --optimizer (or --zo)`
      )
    held.set(step, st)
    files[i] = { step, rank: st.rank, worldSize: st.worldSize }
  }
  const mine = resumeIndex.encode(files)
  const P = roster.length
  const all = (await collective.allGather(mine, P * mine.length, { step: 0, label: resumeIndex.label, ...opts })).data
  const { step, worldSize: oldP, from } = newestComplete(resumeIndex.decode(all, P))
  // A data dir holds one file per step, so each member contributes at most one old rank.
  const self = roster.findIndex(m => m.id === env.deps.net.self.id)
  const own = held.get(step)
  // The launch the files belong to: the run goes on with their nonce.
  const launches = (await collective.allGather(resumeLaunch.encode(own?.nonce), P * resumeLaunch.words, { step: 0, label: resumeLaunch.label, ...opts })).data
  rs.nonce = launchOf(resumeLaunch.decode(launches, P), roster, step) ?? rs.nonce
  const states = await exchangeStates(env, collective, roster, own !== undefined && from.get(own.rank) === self ? own : undefined, oldP, 'resume_state', opts)
  log.info({ step, oldWorldSize: oldP, worldSize: P, ms: Math.round(clock.monotonic() - t0) }, 'resumed from the disk tier')
  rs.st.resumedFrom = step
  return cutShard(env, states.states, step, shard)
}

/**
 * Hands old ranks' states to a new roster: each member puts the old rank state it holds
 * (or nothing) into a fixed-size slot (old rank, step, weights, m, v; the 8-bit optimizers:
 * weights, codes and absmaxes, messages.ts stateSlot8), one all-gather, and
 * every member gets every old rank's state. Every old rank must be held by some member.
 */
export async function exchangeStates(
  env: TrainerEnv,
  collective: Collective,
  roster: Member[],
  own: RankState | undefined,
  oldP: number,
  label: string,
  opts: { signal?: AbortSignal }
): Promise<{ states: RankState[]; step: number }> {
  const N = env.layout.length
  const L = shardRange(N, oldP, 0).length
  const P = roster.length
  const k8 = codedMoments(env.cfg)
  // 8-bit moments: every old shard's block count follows from the layout (adam8.ts).
  const blocksOf = (r: number): number => adam8Runs(env.layout, shardRange(N, oldP, r)).blocks
  const B = k8 !== 0 ? Math.max(...Array.from({ length: oldP }, (_, r) => blocksOf(r))) : 0
  const buf = k8 !== 0 ? stateSlot8.encode(label, own, L, B, k8) : stateSlot.encode(label, own, L)
  const got = (await collective.allGather(buf, P * buf.length, { step: 0, label, ...opts })).data
  const states: RankState[] = new Array(oldP)
  let step = -1
  const optimizer = stateOptimizer(env.cfg)
  for (let r = 0; r < P; r++) {
    const slot = k8 !== 0 ? stateSlot8.decode(label, got, P, L, B, k8, r) : stateSlot.decode(label, got, P, L, r)
    if (slot === undefined) continue
    if (slot.rank >= oldP || (step >= 0 && slot.step !== step))
      throw new TrainingError(`${label}: member ${r} offers old rank ${slot.rank} at step ${slot.step}, which does not fit the other states`)
    step = slot.step
    const len = shardRange(N, oldP, slot.rank).length
    const empty = new Float32Array(0)
    const moments =
      'part' in slot
        ? { weights: slot.part(0, len), adamM: env.cfg.zo === undefined ? slot.part(1, len) : empty, adamV: keepsV(env.cfg) ? slot.part(2, len) : empty }
        : {
            weights: slot.weights(len),
            adamM: empty,
            adamV: empty,
            adam8: { m: slot.codes(0, len), v: slot.codes(1, len), scales: slot.scales(blocksOf(slot.rank)) }
          }
    states[slot.rank] = {
      rank: slot.rank,
      worldSize: oldP,
      epoch: 0,
      step,
      dataCursor: step,
      ...moments,
      rng: new Uint8Array(0),
      ...(optimizer === undefined ? {} : { optimizer })
    }
  }
  const missing = Array.from({ length: oldP }, (_, i) => i).filter(i => states[i] === undefined)
  if (missing.length > 0) throw new TrainingError(`${label}: no member holds the state of old rank(s) ${missing.join(', ')}`)
  return { states, step }
}

/** The run grew: the old ranks hand their states (kept from the step it grew at) to the new roster. */
async function growExchange(
  env: TrainerEnv,
  rs: RunState,
  collective: Collective,
  roster: Member[],
  shard: ShardRange,
  signal?: AbortSignal
): Promise<ShardState> {
  const plan = rs.plan!
  const g = rs.grow.handoff
  const own =
    g === undefined
      ? undefined
      : {
          rank: g.rank,
          worldSize: plan.oldRoster.length,
          epoch: 0,
          step: g.state.step,
          dataCursor: g.state.step,
          weights: g.state.master,
          adamM: g.state.m,
          adamV: g.state.v,
          ...(g.state.adam8 === undefined ? {} : { adam8: g.state.adam8 }),
          rng: new Uint8Array(0)
        }
  // The joiners may have missed the announcement (it is gossip): repeat it until the
  // exchange, which needs them, is over.
  const msg = rs.grow.msg
  let repeating = g !== undefined && msg !== undefined
  const repeat = async (): Promise<void> => {
    while (repeating) {
      await env.deps.clock.sleep(TRAIN_LIMITS.growEveryMs)
      if (repeating) await env.deps.net.publish(GROW_TOPIC, msg!).catch(() => {})
    }
  }
  if (repeating) void repeat()
  try {
    const { states, step } = await exchangeStates(env, collective, roster, own, plan.oldRoster.length, 'grow_state', signal === undefined ? {} : { signal })
    rs.grow.handoff = undefined
    rs.grow.msg = undefined
    return cutShard(env, states, step, shard)
  } finally {
    repeating = false
  }
}
