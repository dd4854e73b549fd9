import { ZeromeshError } from '../../core/index.ts'
import type { PeerId } from '../peernet.ts'

/** Why a collective call failed. */
export type CollectiveFailure =
  /** A member disconnected or its stream broke (including a reset by a member that failed). */
  | 'peer-gone'
  /** No progress within the timeout bound (a stalled or partitioned member). */
  | 'timeout'
  /** A member sent bytes that do not decode or do not fit the operation (see `cause`). */
  | 'protocol'
  /** A member (possibly this node) aborted or failed locally. */
  | 'aborted'
  /** The collective was stopped. */
  | 'closed'
  /**
   * A member gave up on work between calls because state it needed cannot be recovered (the
   * trainer's snapshot loads); the caller decides what that means.
   */
  | 'unrecoverable'

/**
 * A collective call that did not complete. Every surviving member of the view rejects with
 * one of these (never a partial result); the instance is then poisoned, and the caller
 * builds a new one for the next view. `reason` and `peer` say where the failure started, as
 * far as anyone saw it: the member this node saw fail (stall, disconnect, bad bytes), or the
 * one named in the failure notice of the member that saw it first (that member itself when
 * it named none: it aborted, or gave up as unrecoverable).
 */
export class CollectiveError extends ZeromeshError {
  static override name = 'CollectiveError'
  readonly reason: CollectiveFailure
  readonly op: string
  readonly step: number
  readonly peer: PeerId | undefined

  constructor(reason: CollectiveFailure, message: string, ctx: { op: string; step: number; peer?: PeerId | undefined }, options?: ErrorOptions) {
    super(message, { reason, op: ctx.op, step: ctx.step, peer: ctx.peer }, options)
    this.reason = reason
    this.op = ctx.op
    this.step = ctx.step
    this.peer = ctx.peer
  }
}
