import { encodeState, type RankState } from '../../snapshot/index.ts'
import { persistDiskState } from '../disk-tier.ts'
import type { TrainerEnv, RunState } from './state.ts'

/** The optimizer state of one rank at a committed step, as snapshots and the disk tier store it. */
export function rankState(rank: number, P: number, epoch: number, step: number, weights: Float32Array, adamM: Float32Array, adamV: Float32Array): RankState {
  return { rank, worldSize: P, epoch, step, dataCursor: step, weights, adamM, adamV, rng: new Uint8Array(0) }
}

/**
 * After step `s` commits: an erasure-coded snapshot (every `snapshot.every` steps, the first
 * step of a roster and the last step) and a disk tier file (every `disk.every` steps).
 * `read` gives the master shard and AdamW moments; it is called only when something is saved.
 */
export function saveCommitted(
  env: TrainerEnv,
  rs: RunState,
  at: { rank: number; P: number; epoch: number; s: number },
  read: () => [Float32Array, Float32Array, Float32Array]
): void {
  const { cfg } = env
  const { s } = at
  const disk = cfg.disk !== undefined && cfg.disk.every > 0 && (s + 1) % cfg.disk.every === 0 ? cfg.disk : undefined
  // The first step of a session is always captured (a roster's own recovery point), and
  // the last one (the state the run ends with).
  const snap = rs.snapshots !== undefined && ((s + 1) % (cfg.snapshot?.every ?? 1) === 0 || s === rs.rosterStart || s + 1 === cfg.steps)
  if (!snap && disk === undefined) return
  const [master, m, v] = read()
  const st = rankState(at.rank, at.P, at.epoch, s + 1, master, m, v)
  if (snap && rs.snapshots !== undefined) {
    const ticket = rs.snapshots.capture(st)
    void ticket.done.then(o => {
      if (o.status === 'placed') rs.st.snapshotStep = Math.max(rs.st.snapshotStep ?? 0, o.step)
    })
  }
  // The disk tier writes in the background, one file after another; the session waits
  // for the last write before it ends.
  if (disk !== undefined) {
    const sealed = encodeState(st)
    rs.disk.writes = rs.disk.writes
      .then(async () => {
        await persistDiskState(disk.dir, s + 1, sealed)
        rs.disk.step = s + 1
      })
      .catch((err: unknown) => {
        env.deps.log.warn({ err: (err as Error).message, step: s + 1 }, 'disk tier: persisting the state failed')
      })
  }
}

/** What an error that ends the run says about the disk tier (the way back with --resume). */
export function diskHint(env: TrainerEnv, rs: RunState): string {
  const d = env.cfg.disk
  if (d === undefined || d.every === 0) return ' (the disk tier is off here: --disk-every N turns it on)'
  return rs.disk.step === undefined ? ` (no step persisted yet; every ${d.every} steps)` : ` (newest step on this node's disk: ${rs.disk.step})`
}
