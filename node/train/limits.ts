import { COLLECTIVE_LIMITS } from '../../mesh/index.ts'
import { DISK_KEEP } from '../disk-tier.ts'

/**
 * Every cap and timing constant of the trainer (docs/LIMITS.md, "node: trainer"). Caps bound
 * what the trainer keeps or decodes from peers; the timings set how long it waits for the mesh.
 */
export const TRAIN_LIMITS = Object.freeze({
  /** Recovery attempts (view changes or retries) a rank makes before it gives up. */
  maxAttempts: 8,
  /** After a failed step, how long past the detector's bound a view change may take to arrive (ms). */
  retrySlackMs: 2000,
  /** Snapshot transfers' idle timeout in the trainer (ms). */
  snapshotIdleMs: 10_000,
  /** Extra collective timeout until a session's first step commits (ms): a snapshot load or kernel compile. */
  settleGraceMs: 10_000 + 5000,
  /** Collective no-progress allowance on top of the failure detector's bound (ms). */
  collectiveSlackMs: 5000,
  /**
   * More allowance for an outer exchange (the DiLoCo tier, ms): zone groups meet there after
   * `--outer-every` steps each, and a slower zone may arrive that much later.
   */
  outerSlackMs: 60_000,
  /** How long a rank in a minority waits for the majority before it fails (ms), unless configured. */
  defaultMinorityWaitMs: 300_000,
  /** Installed views a trainer queues before it consumes them (the oldest are dropped beyond). */
  maxQueuedViews: 1024,
  /** Installed views kept by epoch (a growth names one; spares may have consumed it already). */
  recentViews: 64,
  /** Disk tier files each member offers on --resume: the newest ones, as many as the disk tier keeps. */
  diskSlots: DISK_KEEP,
  /** How often rank 0 repeats the roster while nodes beyond it are in the view (ms). */
  rosterEveryMs: 1000,
  /** How often old ranks repeat a growth announcement while the grown run exchanges state (ms). */
  growEveryMs: 500,
  /** Poll interval while waiting for a view, a connection or the end of the run (ms). */
  pollMs: 50,
  /**
   * How long a rank that finished waits for the others of its roster to announce that they
   * finished too (they may still be gathering its final weights for the held-out loss), ms.
   */
  doneWaitMs: 30_000,
  /** Extra time to connect to every rank beyond the detector's bound (ms). */
  connectSlackMs: 30_000,
  /** A roster announcement (`train/roster`, JSON), checked before parsing. */
  maxRosterBytes: 256 * 1024,
  /** Members of an announced roster (as many as a collective group may hold). */
  maxRosterMembers: COLLECTIVE_LIMITS.maxGroupSize,
  /** Characters of a member's id, zone and host label in a roster announcement. */
  maxRosterLabelChars: 128,
  /**
   * Most bytes a host↔device copy of the shard (its upload at a session's start, the final
   * weights' read) moves between two turns of the event loop (host-copy.ts): a rank's loop
   * sends its heartbeats, and a 1.5 GB copy in one piece reads as a dead node.
   */
  hostCopyChunkBytes: 32 * 1024 * 1024,
  /** Integers in the trainer's all-gather records (u32 words) stay below this (NONE, all bits set, marks an empty slot). */
  maxRecordInteger: 2 ** 24
})
