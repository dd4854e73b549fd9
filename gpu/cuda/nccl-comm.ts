import { AbortError, type Clock } from '../../core/index.ts'
import type { Tensor } from '../backend.ts'
import { fail } from '../validate.ts'
import { type CollectivePlan, type CollectiveShape, type NcclReduceOp, ncclRedOp, planCollective, timeoutMs } from './nccl-args.ts'
import type { NcclDevice } from './nccl-device.ts'
import { NcclCommClosedError, NcclError } from './nccl-errors.ts'
import { type NcclApi, NcclResult } from './nccl-ffi.ts'
import type { Handle } from './ffi.ts'
import { NCCL_LIMITS } from './nccl-limits.ts'
import { pollUntil, waitAtMost } from './nccl-poll.ts'

/** Options every communicator operation takes. */
export interface NcclOpOptions {
  /** Cancels the operation; once it was handed to NCCL, cancelling aborts the communicator. */
  signal?: AbortSignal | undefined
  /** Bound on the whole operation (ms); past it the communicator is aborted. */
  timeoutMs?: number | undefined
}

export interface NcclReduceOptions extends NcclOpOptions {
  /** Reduction, default `sum`. */
  op?: NcclReduceOp | undefined
}

export interface NcclBroadcastOptions extends NcclOpOptions {
  /** The rank whose `send` every rank receives. */
  root: number
}

/**
 * `joining` until every rank joined; `ready` for collectives; `closing` during a graceful close;
 * `closed` and `aborted` are final (the NCCL handle is gone).
 */
export type NcclCommState = 'joining' | 'ready' | 'closing' | 'closed' | 'aborted'

/** What a communicator is built on. */
export interface NcclCommDeps {
  api: NcclApi
  device: NcclDevice
  clock: Clock
}

interface Wait {
  signal?: AbortSignal | undefined
  deadline: number
  timeoutMs: number
}

type Enqueue = (plan: CollectivePlan, comm: Handle, stream: Handle) => number

/**
 * One rank of an NCCL communicator, created by `Nccl.initComm` (./nccl.ts). Collectives take
 * tensors of the CUDA backend it was created on and run on that backend's stream; each
 * resolves once the device finished it, so its output may be read or overwritten then.
 *
 * The communicator is non-blocking (ncclConfig_t.blocking = 0): NCCL does its work on its own
 * threads and we poll ncclCommGetAsyncError and a CUDA event, so a dead peer never blocks the
 * event loop, and a timeout or an abort signal ends in ncclCommAbort, which makes NCCL's
 * kernels and threads give up. An aborted communicator is final: build a new one.
 */
export class NcclComm {
  /** Ranks in the communicator (ncclCommCount). */
  readonly nranks: number
  /** This process's rank (ncclCommUserRank). */
  readonly rank: number
  private readonly api: NcclApi
  private readonly device: NcclDevice
  private readonly clock: Clock
  private readonly handle: Handle
  private state_: NcclCommState = 'joining'
  // NCCL takes one call at a time on a non-blocking communicator (the next may only start once
  // the previous one left ncclInProgress): enqueues run one after another on this chain.
  private queue: Promise<unknown> = Promise.resolve()
  private readonly inflight = new Set<Promise<void>>()
  private aborted: Promise<void> | null = null
  private closing: Promise<void> | null = null

  private constructor(deps: NcclCommDeps, handle: Handle, nranks: number, rank: number) {
    this.api = deps.api
    this.device = deps.device
    this.clock = deps.clock
    this.handle = handle
    this.nranks = nranks
    this.rank = rank
  }

  /**
   * Waits until every rank joined the communicator NCCL returned in `handle` (still in
   * progress), then checks its size and rank. Aborts it on any failure, timeout or signal.
   */
  static async join(deps: NcclCommDeps, handle: Handle, nranks: number, rank: number, wait: Wait): Promise<NcclComm> {
    const comm = new NcclComm(deps, handle, nranks, rank)
    try {
      await comm.settle('ncclCommInitRank', wait)
      comm.checkIdentity()
      comm.state_ = 'ready'
      return comm
    } catch (err) {
      await comm.abort()
      throw err
    }
  }

  get state(): NcclCommState {
    return this.state_
  }

  /** Element-wise reduction of `send` over all ranks into every rank's `recv` (same length; in place when equal). */
  async allReduce(send: Tensor, recv: Tensor, o: NcclReduceOptions = {}): Promise<void> {
    const op = ncclRedOp('ncclAllReduce', o.op)
    await this.collective('ncclAllReduce', 'same', send, recv, o, (p, c, s) => this.api.allReduce(p.send, p.recv, p.count, p.dtype, op, c, s))
  }

  /** Reduces `send` (nranks × chunk) over all ranks; rank i receives chunk i in `recv`. */
  async reduceScatter(send: Tensor, recv: Tensor, o: NcclReduceOptions = {}): Promise<void> {
    const op = ncclRedOp('ncclReduceScatter', o.op)
    await this.collective('ncclReduceScatter', 'scatter', send, recv, o, (p, c, s) => this.api.reduceScatter(p.send, p.recv, p.count, p.dtype, op, c, s))
  }

  /** Gathers every rank's `send` (one chunk) into `recv` (nranks × chunk, rank order). */
  async allGather(send: Tensor, recv: Tensor, o: NcclOpOptions = {}): Promise<void> {
    await this.collective('ncclAllGather', 'gather', send, recv, o, (p, c, s) => this.api.allGather(p.send, p.recv, p.count, p.dtype, c, s))
  }

  /** Copies `send` of rank `root` into every rank's `recv` (same length; `send` is read on the root only). */
  async broadcast(send: Tensor, recv: Tensor, o: NcclBroadcastOptions): Promise<void> {
    const root = o.root
    if (!Number.isSafeInteger(root) || root < 0 || root >= this.nranks) fail('ncclBroadcast', `root must be a rank in [0, ${this.nranks}), got ${root}`)
    await this.collective('ncclBroadcast', 'same', send, recv, o, (p, c, s) => this.api.broadcast(p.send, p.recv, p.count, p.dtype, root, c, s))
  }

  /**
   * Stops the communicator now (ncclCommAbort): pending collectives reject, NCCL's kernels and
   * threads quit. Idempotent. Resolves when ncclCommAbort returned, or after
   * NCCL_LIMITS.abortWaitMs if it has not (the communicator is unusable either way).
   */
  abort(): Promise<void> {
    if (this.aborted !== null) return this.aborted
    const prev = this.state_
    this.state_ = 'aborted'
    if (prev === 'closed') {
      this.aborted = Promise.resolve()
      return this.aborted
    }
    const call = this.api.commAbortAsync(this.handle).then(
      () => undefined,
      () => undefined
    )
    this.aborted = waitAtMost(this.clock, call, NCCL_LIMITS.abortWaitMs).then(() => undefined)
    return this.aborted
  }

  /**
   * Graceful end: waits for the collectives in flight, flushes (ncclCommFinalize), then frees
   * (ncclCommDestroy). Falls back to {@link abort} and rethrows if that fails or outlasts
   * `timeoutMs` (default NCCL_LIMITS.closeTimeoutMs). Idempotent.
   */
  async close(o: NcclOpOptions = {}): Promise<void> {
    if (this.state_ === 'aborted') return await this.aborted!
    if (this.closing === null) {
      const ms = timeoutMs('ncclCommFinalize', o.timeoutMs, NCCL_LIMITS.closeTimeoutMs)
      this.state_ = 'closing'
      this.closing = this.finish({ signal: o.signal, deadline: this.clock.monotonic() + ms, timeoutMs: ms })
    }
    return await this.closing
  }

  // ---- internals ----------------------------------------------------------------------------

  private async finish(wait: Wait): Promise<void> {
    try {
      await Promise.allSettled([...this.inflight])
      await this.queue.catch(() => undefined)
      if (this.state_ === 'aborted') return await this.abort()
      this.checkCall('ncclCommFinalize', this.api.commFinalize(this.handle))
      await this.settle('ncclCommFinalize', wait)
    } catch (err) {
      await this.abort()
      throw err
    }
    this.state_ = 'closed'
    const rc = await this.api.commDestroyAsync(this.handle)
    if (rc !== NcclResult.success) throw new NcclError('ncclCommDestroy', rc, this.api.getErrorString(rc))
  }

  private async collective(op: string, shape: CollectiveShape, send: Tensor, recv: Tensor, o: NcclOpOptions, call: Enqueue): Promise<void> {
    this.usable(op)
    const plan = planCollective(op, shape, (o_, n, t) => this.device.address(o_, n, t), send, recv, this.nranks, this.rank)
    const ms = timeoutMs(op, o.timeoutMs, NCCL_LIMITS.opTimeoutMs)
    if (o.signal?.aborted === true) throw new AbortError(`${op} aborted`, { op })
    if (plan.count === 0) return
    const run = this.run(op, plan, call, { signal: o.signal, deadline: this.clock.monotonic() + ms, timeoutMs: ms })
    this.inflight.add(run)
    try {
      await run
    } finally {
      this.inflight.delete(run)
    }
  }

  /** Enqueue (in turn with other calls), then wait for the device; any failure once NCCL has the call aborts. */
  private async run(op: string, plan: CollectivePlan, call: Enqueue, wait: Wait): Promise<void> {
    const issued = { yes: false }
    let marker: Handle
    try {
      marker = await this.inTurn(() => this.enqueue(op, plan, call, wait, issued))
    } catch (err) {
      if (issued.yes) await this.abort()
      throw err
    }
    try {
      await pollUntil(() => this.passed(op, marker), { clock: this.clock, what: op, ...wait })
    } catch (err) {
      await this.abort()
      throw err
    } finally {
      this.device.release(marker)
    }
  }

  private inTurn<T>(task: () => Promise<T>): Promise<T> {
    const turn = this.queue.then(task)
    this.queue = turn.catch(() => undefined)
    return turn
  }

  private async enqueue(op: string, plan: CollectivePlan, call: Enqueue, wait: Wait, issued: { yes: boolean }): Promise<Handle> {
    // An accepted collective still runs during a graceful close (close waits for it); only an
    // abort drops it.
    this.live(op)
    if (wait.signal?.aborted === true) throw new AbortError(`${op} aborted`, { op })
    issued.yes = true
    this.device.makeCurrent()
    this.checkCall(op, call(plan, this.handle, this.device.stream))
    // Until the communicator leaves ncclInProgress, NCCL's thread has not put the kernel on the
    // stream yet: a marker recorded now would pass before the collective ran.
    await this.settle(op, wait)
    return this.device.record()
  }

  /** One poll of a collective: raises the communicator's async error, else whether the marker passed. */
  private passed(op: string, marker: Handle): true | undefined {
    this.asyncResult(op)
    return this.device.done(marker) ? true : undefined
  }

  /** Polls ncclCommGetAsyncError until the communicator leaves ncclInProgress. */
  private async settle(op: string, wait: Wait): Promise<void> {
    await pollUntil(() => (this.asyncResult(op) === NcclResult.inProgress ? undefined : true), { clock: this.clock, what: op, ...wait })
  }

  /** ncclCommGetAsyncError: success or in-progress, else throws NcclError naming `op`. */
  private asyncResult(op: string): number {
    this.live(op)
    const out: number[] = [NcclResult.inProgress]
    this.checkCall('ncclCommGetAsyncError', this.api.commGetAsyncError(this.handle, out))
    const r = out[0]!
    if (r !== NcclResult.success && r !== NcclResult.inProgress) throw this.error(op, r)
    return r
  }

  private checkIdentity(): void {
    const count = [0]
    const rank = [0]
    this.checkCall('ncclCommCount', this.api.commCount(this.handle, count))
    this.checkCall('ncclCommUserRank', this.api.commUserRank(this.handle, rank))
    if (count[0] !== this.nranks || rank[0] !== this.rank) {
      throw new NcclError(
        'ncclCommInitRank',
        NcclResult.internalError,
        `the communicator is rank ${rank[0]} of ${count[0]}, asked ${this.rank} of ${this.nranks}`
      )
    }
  }

  /** A call's immediate result: success and in-progress pass, anything else throws. */
  private checkCall(call: string, rc: number): void {
    if (rc !== NcclResult.success && rc !== NcclResult.inProgress) throw this.error(call, rc)
  }

  private error(call: string, rc: number): NcclError {
    return new NcclError(call, rc, this.api.getErrorString(rc), this.api.getLastError(this.handle))
  }

  /** New operations need a ready communicator. */
  private usable(op: string): void {
    if (this.state_ !== 'ready') throw new NcclCommClosedError(op, this.state_)
  }

  /** Touching the handle needs one NCCL has not freed. */
  private live(op: string): void {
    if (this.state_ === 'aborted' || this.state_ === 'closed') throw new NcclCommClosedError(op, this.state_)
  }
}
