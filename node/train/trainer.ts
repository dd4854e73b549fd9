import type { Manifest } from '../../snapshot/index.ts'
import { endOffload, offloadOf } from './offload.ts'
import { AbortError, InvalidArgumentError } from '../../core/index.ts'
import { gptLayout } from '../../gpu/index.ts'
import { validateTrainConfig, type TrainConfig, type TrainStatus, type TrainerDeps } from './config.ts'
import { doneMessage, growMessage } from './messages.ts'
import { GROW_TOPIC } from './grow.ts'
import { nextRole, type Role, type RoleEvent } from './role.ts'
import { ViewQueue, rosterFromView, rosterOf } from './roster.ts'
import {
  DONE_TOPIC,
  afterFailure,
  enterRank,
  enterRetry,
  enterSpare,
  firstRoster,
  grow,
  placed,
  rankEnded,
  rankFailed,
  retried,
  snapshotServiceFor,
  spareCheck,
  waitForView
} from './run.ts'
import { TRAIN_LIMITS } from './limits.ts'
import { releaseHost, reserveHost, reservePlan } from './host-reserve.ts'

/** One owner's newest complete snapshot stripe (from its manifest): holders[i] holds fragment i (the first k are data, the rest parity). */
export type SnapshotPlacement = Pick<Manifest, 'owner' | 'rank' | 'epoch' | 'version' | 'k' | 'm' | 'holders'>
import { ROSTER_TOPIC, runSession } from './session.ts'
import { statusOf, type RunState, type TrainerEnv } from './state.ts'

/**
 * The trainer of one worker: waits for a view with `worldSize` members, then trains as a rank
 * (or waits as a spare), recovering from lost ranks and growing with late joiners on the way.
 * The roles and their transitions are in role.ts; each role's handler in run.ts.
 */
export class Trainer {
  private readonly env: TrainerEnv
  private readonly rs: RunState
  private unsubs: Array<() => void> = []

  constructor(deps: TrainerDeps, cfg: TrainConfig) {
    validateTrainConfig(cfg, deps.corpus)
    this.env = { deps, cfg, layout: gptLayout(cfg.model) }
    // Every view installed from now on is queued and consumed in order (roster.ts).
    const views = new ViewQueue(cfg.worldSize, deps.membership.view(), cfg.outer?.zones)
    this.unsubs.push(
      deps.membership.on('view', v => {
        views.push(v)
      })
    )
    const sent = { host: 0, zone: 0, wan: 0 }
    this.rs = {
      st: {
        role: 'waiting',
        rank: undefined,
        worldSize: cfg.worldSize,
        step: 0,
        steps: cfg.steps,
        loss: undefined,
        evalLoss: undefined,
        tokensPerS: undefined,
        epoch: 0,
        bytes: sent,
        snapshotStep: undefined,
        recoveries: [],
        retries: 0,
        growths: [],
        phase: 'waiting for the first full view'
      },
      sent,
      views,
      snapshots: undefined,
      plan: undefined,
      rosterStart: 0,
      keptStep: 0,
      nonce: undefined,
      gossip: { runDone: false, doneFrom: new Set(), announced: undefined, announcedAt: -Infinity },
      grow: { to: undefined, lastStep: -1, handoff: undefined, msg: undefined },
      disk: { step: undefined, writes: Promise.resolve() },
      finalShard: undefined,
      hostReserve: undefined,
      offload: undefined
    }
  }

  /**
   * Allocates, before the node joins the mesh, the page-locked host arrays every session's
   * saves copy the state into (host-reserve.ts): allocated at the first save instead, they
   * held a GPU rank's event loop long enough for its peers to take it for dead. Optional (the
   * simulator does not call it); the arrays are freed when `run` ends.
   */
  async prepare(): Promise<void> {
    // `--offload cpu`: its optimizer threads start now, not at the first update.
    offloadOf(this.env, this.rs)?.optim.start()
    if (this.rs.hostReserve !== undefined) return
    const { deps } = this.env
    this.rs.hostReserve = await reserveHost(deps.backend, reservePlan(this.env), () => deps.clock.turn())
  }

  /** This rank's master weights after the last step (tests compare runs bit for bit). */
  get finalShard(): { start: number; data: Float32Array } | undefined {
    return this.rs.finalShard
  }

  status(): TrainStatus {
    return statusOf(this.rs)
  }

  /**
   * Where the snapshots of the current view's members live, as this node knows it from the
   * manifests: each owner's newest complete stripe (version, code, holder of each fragment).
   */
  placement(): SnapshotPlacement[] {
    const s = this.rs.snapshots
    const v = s?.view()
    if (s === undefined || v === undefined) return []
    return v.members.flatMap(m => {
      const mf = s.manifests(m.id)[0]
      return mf === undefined ? [] : [{ owner: mf.owner, rank: mf.rank, epoch: mf.epoch, version: mf.version, k: mf.k, m: mf.m, holders: [...mf.holders] }]
    })
  }

  /**
   * Waits for a view with `worldSize` members, then trains to `steps`, recovering from lost
   * ranks on the way. Resolves when this node's part is over: training done, or (a spare)
   * the run finished without needing it.
   *
   * The roles follow role.ts; the handlers (run.ts) are synchronous steps around the few
   * awaits below, which stay in this loop: the simulator drains promise continuations by
   * watching promise activity, so an extra async hop would move its schedule.
   */
  async run(signal?: AbortSignal): Promise<TrainStatus> {
    const { env, rs } = this
    const { deps } = env
    try {
      // Subscribed first: a node that joins late must not miss an announcement made while it
      // waits for its first view or starts its snapshot service.
      this.subscribeGossip()
      const first = rs.views.firstFull ?? (await waitForView(env, v => rosterFromView(v, env.cfg.worldSize, env.cfg.outer?.zones) !== undefined, signal))
      const c = firstRoster(env, rs, first)
      rs.snapshots = snapshotServiceFor(env, first)
      if (rs.snapshots !== undefined) {
        await rs.snapshots.start()
        rs.snapshots.setView(first)
        this.unsubs.push(deps.membership.on('view', v => rs.snapshots?.setView(v)))
      }
      if (env.cfg.disk?.resume === true) rs.plan = { mode: 'resume', lost: [], oldRoster: c.roster }
      let role: Role = 'waiting'
      let event: RoleEvent = placed(env, rs, c)
      for (;;) {
        role = nextRole(role, event)
        if (event.type === 'finished' && event.announce === true) {
          await deps.net.publish(DONE_TOPIC, doneMessage.encode(rs.st.step)).catch(() => {})
          // The others may still be gathering this rank's final weights for their held-out
          // loss: it leaves once every rank of its roster said it is done too, or is gone.
          const others = c.roster.map(m => m.id).filter(id => id !== deps.net.self.id)
          const until = deps.clock.monotonic() + TRAIN_LIMITS.doneWaitMs
          for (;;) {
            const connected = new Set(deps.net.peers().map(p => p.id))
            if (others.every(id => rs.gossip.doneFrom.has(id) || !connected.has(id)) || deps.clock.monotonic() > until) break
            await deps.clock.sleep(TRAIN_LIMITS.pollMs, signal === undefined ? {} : { signal }).catch(() => {})
            if (signal?.aborted === true) break
          }
        }
        if (role === 'end') return this.status()
        if (role === 'spare') {
          // (`signal` ends the wait when the run is over: `zeromesh up` stops its spares.)
          enterSpare(rs)
          let next: RoleEvent | undefined
          while ((next = spareCheck(env, rs, c)) === undefined) {
            if (signal?.aborted === true) throw new AbortError('training aborted while waiting for the mesh')
            await deps.clock.sleep(TRAIN_LIMITS.pollMs, signal === undefined ? {} : { signal })
          }
          event = next
        } else if (role === 'rank') {
          const r = enterRank(env, rs, c)
          try {
            event = rankEnded(env, rs, c, await runSession(env, rs, c.roster, c.epoch, c.round, r, c.initial, signal))
          } catch (err) {
            event = rankFailed(env, rs, c, err)
          }
        } else if (role === 'retry') {
          enterRetry(env, rs, c)
          event = retried(env, rs, c, await afterFailure(env, rs, c.roster, signal))
        } else if (role === 'grow') {
          event = grow(env, rs, c)
        } else {
          throw new InvalidArgumentError(`trainer role ${role} has no handler`)
        }
      }
    } catch (err) {
      // A spare told to stop (the run is over) ends quietly.
      if (rs.st.role === 'spare' && signal?.aborted === true) return this.status()
      rs.st.role = 'failed'
      rs.st.error = err instanceof Error ? err.message : String(err)
      throw err
    } finally {
      for (const u of this.unsubs) u()
      this.unsubs = []
      await rs.snapshots?.stop()
      if (rs.hostReserve !== undefined) releaseHost(rs.hostReserve)
      rs.hostReserve = undefined
      endOffload(rs)
    }
  }

  /** The run's gossip: the end of the run, the roster rank 0 announces, growths. */
  private subscribeGossip(): void {
    const { net } = this.env.deps
    const { rs } = this
    // Ranks announce the end of the run, so spares stop waiting (and do not mistake ranks
    // leaving after the last step for lost ones). From any node that was ever a rank here:
    // a spare that read a finished rank's departure as a loss has already replaced it.
    this.unsubs.push(
      net.subscribe(DONE_TOPIC, {
        validate: msg => (msg.data.length === 4 ? 'accept' : 'reject'),
        deliver: msg => {
          if (!rs.views.wasRostered(msg.from)) return
          rs.gossip.runDone = true
          rs.gossip.doneFrom.add(msg.from)
        }
      })
    )
    this.unsubs.push(
      net.subscribe(ROSTER_TOPIC, {
        validate: msg => (rosterOf(msg.data) === undefined ? 'reject' : 'accept'),
        deliver: msg => {
          const a = rosterOf(msg.data)
          // Only a rank speaks for its own roster.
          if (a === undefined || !a.members.some(m => m.id === msg.from)) return
          if (a.epoch >= (rs.gossip.announced?.epoch ?? 0)) rs.gossip.announced = a
        }
      })
    )
    this.unsubs.push(
      net.subscribe(GROW_TOPIC, {
        validate: msg => (msg.data.length === growMessage.bytes ? 'accept' : 'reject'),
        deliver: msg => {
          if (!rs.views.wasRostered(msg.from)) return
          const g = growMessage.decode(msg.data)
          if (g.count > 0 && g.step > rs.grow.lastStep && g.epoch > (rs.grow.to?.epoch ?? 0)) rs.grow.to = g
        }
      })
    )
  }
}
