import { Gpt, zoSeed } from '../../gpu/index.ts'
import { batchFor } from '../data.ts'
import { callAt, commitStep, type PhaseTimes, type SessionParts, type ShardTensors } from './step.ts'
import { readPaced, writePaced } from './host-copy.ts'
import { SessionInterrupted } from './state.ts'
import { TrainingError } from './config.ts'

/**
 * Zeroth-order training (`--zo`, MeZO: Malladi et al. 2023, "Fine-Tuning Language Models with
 * Just Forward Passes"). Every rank holds the whole model, forward-only (no gradients, no
 * optimizer state). Step s draws a direction z from the step's seed (gpu/zo.ts: one sign per
 * parameter), and each rank measures its own batch's loss at θ + εz and θ − εz: its projected
 * gradient is d = (L+ − L−) / 2ε. The ranks all-gather (d, loss): 8 bytes each, the only bytes
 * a step moves, by the collective's tiered all-gather (hierAllGather): the ranks of a zone
 * send their pairs to its lowest rank, those leaders swap their zones' pairs (one message per
 * pair of zones), and each hands the whole array back inside its zone, so a step crosses a
 * zone boundary as few times as it can. Every rank then applies θ ← θ − lr·mean(d)·z, the
 * same f32 operations in the same order, so the replicas stay bit-identical without moving a
 * weight.
 *
 * The weights move only when a roster forms: each rank brings its shard of θ (its own state,
 * a snapshot or the disk tier, as in first-order training) and one all-gather makes the whole
 * model on every rank. Each rank's saves (snapshots, the disk tier) hold its shard of θ, with
 * no moments, so recovery and `--resume` work as they do for the other optimizers, and a
 * recovered run replays the lost steps bit for bit (the seeds, batches and scalars are the same).
 */

/** What the session gives the zeroth-order loop. */
export interface ZoHooks {
  /** After step s committed (saves, progress); a promise when the step must wait for a save. */
  afterCommit(s: number): Promise<void> | undefined
  phases: PhaseTimes
}

/**
 * Trains steps `from` … cfg.steps − 1 under one roster, then leaves θ's shard in `t.master` (the
 * session's final evaluation and the last save read it there).
 */
export async function zoSteps(p: SessionParts, t: ShardTensors, from: number, hooks: ZoHooks): Promise<void> {
  const { env, rs, be, collective, shard, roster, fail } = p
  const { cfg, deps } = env
  const zo = cfg.zo!
  const N = env.layout.length
  const turn = (): Promise<void> => deps.clock.turn()
  rs.st.phase = `session: gathering the model (${N} parameters) for zeroth-order steps`
  const mineRead = readPaced(be, t.master, turn)
  const mine = mineRead instanceof Promise ? await mineRead : mineRead
  const gathered = await collective.allGather(mine, N, { ...callAt(p, from), label: 'zo_gather' }).catch(fail)
  p.acct.account(gathered.bytes)
  // In f32 whatever the run's dtype: ±ε (1e-3) is below half a bf16 step of any weight of
  // magnitude 0.5 or more, so a bf16 forward would see no perturbation of those at all.
  const model = new Gpt(be, cfg.model, { B: cfg.B, T: cfg.T, dtype: 'f32', seed: cfg.seed, params: 'forward', init: false })
  try {
    const written = writePaced(be, model.weights(), gathered.data, turn)
    if (written !== undefined) await written
    model.refreshLowp()
    const now = (): number => deps.clock.monotonic()
    const eps = zo.eps
    for (let s = from; s < cfg.steps; s++) {
      const dropped = rs.views.scanLoss(roster, false)
      if (dropped !== undefined) throw new SessionInterrupted(`view ${dropped.epoch} dropped a training member before step ${s + 1}`)
      const t0 = now()
      rs.st.phase = `step ${s + 1}: two forward passes`
      const seed = zoSeed(cfg.seed, s)
      const batch = batchFor(deps.corpus.train, cfg.seed, s, p.rank, cfg.B, cfg.T)
      model.addSigns(eps, seed)
      const plus = model.forward(batch.inputs, batch.targets)
      model.addSigns(-2 * eps, seed)
      const minus = model.forward(batch.inputs, batch.targets)
      model.addSigns(eps, seed)
      const modelled = deps.computeMs?.(2 * cfg.B * cfg.T)
      if (modelled !== undefined && modelled > 0) await deps.clock.sleep(modelled, p.signal === undefined ? {} : { signal: p.signal })
      const passed = now()
      rs.st.phase = `step ${s + 1}: exchanging the projected gradients`
      const mineD = Float32Array.of((plus - minus) / (2 * eps), (plus + minus) / 2)
      // When the all-gather returns, every rank has finished step s: it is committed.
      const all = await collective.hierAllGather(mineD, 2 * p.P, { ...callAt(p, s), label: 'zo_scalars' }).catch(fail)
      const exchanged = now()
      p.acct.account(all.bytes)
      // The mean projected gradient, summed in rank order in f32 (every rank the same bits).
      let g = 0
      let lossSum = 0
      for (let r = 0; r < p.P; r++) {
        g = Math.fround(g + all.data[2 * r]!)
        lossSum += all.data[2 * r + 1]!
      }
      g = Math.fround(g / p.P)
      // Not a fault to recover from: a replay computes the same value.
      if (!Number.isFinite(g)) throw new TrainingError(`step ${s + 1}: the zeroth-order projected gradient is not finite (${g}): lower --lr or change --zo-eps`)
      rs.st.phase = `step ${s + 1}: update`
      model.addSigns(-cfg.lr * g, seed)
      // The shard of θ the saves read (the session's master tensor).
      model.copyParams(t.master, shard.start)
      const updated = now()
      commitStep(p, s, lossSum, updated - t0)
      const saving = hooks.afterCommit(s)
      if (saving !== undefined) await saving
      // Forward passes never wait for I/O: without this turn the heartbeats would starve.
      await deps.clock.turn()
      hooks.phases.add({ compute: passed - t0, wire: exchanged - passed, optimizer: updated - exchanged, snapshot: now() - updated }, s === from)
    }
  } finally {
    model.dispose()
  }
}
