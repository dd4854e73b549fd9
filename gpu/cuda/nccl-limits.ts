/**
 * Caps and defaults of the NCCL binding (./nccl.ts), checked before any NCCL call
 * (InvalidArgumentError). Proposed for docs/LIMITS.md.
 */
export const NCCL_LIMITS = Object.freeze({
  /** Most ranks in one communicator: the intra-host tier spans the GPUs of one host. */
  maxRanks: 64,
  /** Longest timeout an operation accepts (ms). */
  maxTimeoutMs: 3_600_000,
  /** Default wait for every rank to join ncclCommInitRank (ms); past it the communicator is aborted. */
  initTimeoutMs: 120_000,
  /** Default wait for one collective to complete (ms); past it the communicator is aborted. */
  opTimeoutMs: 60_000,
  /** Default wait for a graceful close (ncclCommFinalize) before it falls back to abort (ms). */
  closeTimeoutMs: 30_000,
  /** How long abort() waits for ncclCommAbort to return before it stops waiting (ms). */
  abortWaitMs: 30_000,
  /** Polls on event-loop turns (setImmediate) before the poller starts sleeping. */
  pollSpins: 64,
  /** First and longest sleep between polls once spinning is over (ms). */
  pollMinMs: 1,
  pollMaxMs: 20
})
