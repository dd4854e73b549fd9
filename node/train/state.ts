import type { GptLayout } from '../../gpu/index.ts'
import type { Offload } from './offload.ts'
import type { UnrecoverableError, SnapshotService } from '../../snapshot/index.ts'
import type { ShardState, TrainConfig, TrainStatus, TrainerDeps } from './config.ts'
import type { Growth, RecoveryPlan, RosterAnnouncement, ViewQueue } from './roster.ts'
import type { TierBytes } from './streamer.ts'
import type { HostReserve } from './host-reserve.ts'

/** What a trainer was built with; never changes. */
export interface TrainerEnv {
  deps: TrainerDeps
  cfg: TrainConfig
  layout: GptLayout
}

/** What the run learned from the other nodes' gossip (`train/done`, `train/roster`, `train/grow`). */
export interface Gossip {
  /** A rank announced the end of the run. */
  runDone: boolean
  /** The nodes that announced it (bounded by the roster: only rostered nodes are counted). */
  doneFrom: Set<string>
  /** The newest roster rank 0 announced (spares that joined late adopt it). */
  announced: RosterAnnouncement | undefined
  /** When this node (as rank 0) last announced the roster (monotonic ms). */
  announcedAt: number
}

/** A growth in progress, as this node sees it. */
export interface GrowState {
  /** The newest growth the ranks announced (spares apply it to their roster). */
  to: Growth | undefined
  /** The step of the last growth applied here (later announcements of it are stale). */
  lastStep: number
  /** This rank's state when the run grew (handed to the new ranks in the next session). */
  handoff: { rank: number; state: ShardState } | undefined
  /** This rank's growth announcement, repeated while the grown run exchanges state. */
  msg: Uint8Array | undefined
}

/** Background disk tier writes and the newest step they persisted. */
export interface DiskState {
  step: number | undefined
  writes: Promise<void>
}

/** A trainer's state across sessions (one record per concern). */
export interface RunState {
  readonly st: TrainStatus
  readonly sent: TierBytes
  readonly views: ViewQueue
  snapshots: SnapshotService | undefined
  /** The recovery the next session starts with (undefined: none). */
  plan: RecoveryPlan | undefined
  /** The step the current roster began training from (agreed: every rank starts from the same state). */
  rosterStart: number
  /** The step of this rank's newest kept snapshot capture (persist.ts; 0: none yet). */
  keptStep: number
  /** The run nonce the ranks agreed on (settings.ts), or the one `--resume` found in the files; written into every state. */
  nonce: Uint8Array | undefined
  readonly gossip: Gossip
  readonly grow: GrowState
  readonly disk: DiskState
  /** This rank's master weights after the last step. */
  finalShard: { start: number; data: Float32Array } | undefined
  /** Host arrays for the saves, allocated before the node joined (Trainer.prepare); undefined: each session allocates its own. */
  hostReserve: HostReserve | undefined
  /** `--offload cpu`'s host backend and optimizer threads (offload.ts), made at the first session. */
  offload: Offload | undefined
}

/**
 * Why a training session ended early: the step (or the recovery before it) failed in a way
 * the run recovers from (a lost or stalled member, a snapshot out of reach).
 */
export class SessionInterrupted extends Error {
  /**
   * Set when a snapshot needed for recovery could not be decoded: here (the error), or on
   * another rank, which said so in its failure notice (its peer id).
   */
  readonly unrecoverable: UnrecoverableError | { reportedBy: string } | undefined
  constructor(message: string, unrecoverable?: UnrecoverableError | { reportedBy: string }) {
    super(message)
    this.name = 'SessionInterrupted'
    this.unrecoverable = unrecoverable
  }
}

/** A copy of the status for callers (they may keep it; the trainer goes on changing its own). */
export function statusOf(rs: RunState): TrainStatus {
  const st: TrainStatus = { ...rs.st, bytes: { ...rs.sent }, recoveries: [...rs.st.recoveries], growths: [...rs.st.growths] }
  const placed = rs.snapshots?.placedBytes()
  if (placed !== undefined) st.snapshotBytes = placed
  return st
}
