import { throwIfAborted } from '../core/index.ts'
import type { ErasureCoder } from '../codec/index.ts'
import { assembleStateAsync, stripeStateAsync, type AssembleReport, type OnSegment, type SnapshotFragment, type StripeSpec } from './fragment.ts'
import { sealState } from './state.ts'

/**
 * Where a snapshot's checksum passes and erasure coding run: the seam between the protocol
 * (capture, placement, recovery), which is the same everywhere, and the CPU work under it.
 * `createInlineCoder` runs it on the calling thread, pausing on the node's clock (the
 * simulator and tests: one thread, a deterministic event order); `createThreadCoder` runs it on
 * worker threads (real nodes: the trainer's event loop only copies and sends). Both produce
 * the same bytes: the same functions of fragment.ts and state.ts run on either side
 * (test/snapshot/coder-compliance.ts holds every implementation to that).
 */
export interface SnapshotCoder {
  readonly name: 'inline' | 'threads'
  /** A buffer for a capture copy that `seal` and `stripe` read in place (shared memory for threads). */
  alloc(bytes: number): Uint8Array
  /** Writes the whole-state checksum into a serialization from writeState, in place; resolves with it. */
  seal(state: Uint8Array, options?: { signal?: AbortSignal }): Promise<bigint>
  /**
   * Cuts a sealed state into k + m snapshot fragments (stripeState's bytes), segment by segment.
   * `onSegment` sees each segment's frames as soon as they are coded, so a placement streams
   * fragment i while later segments are still being coded.
   */
  stripe(state: Uint8Array, spec: StripeSpec, options?: { signal?: AbortSignal; onSegment?: OnSegment }): Promise<SnapshotFragment[]>
  /** Rebuilds and verifies a state from any k valid fragments of one stripe (assembleState). */
  assemble(frags: readonly SnapshotFragment[], k: number, m: number, options?: { signal?: AbortSignal }): Promise<{ state: Uint8Array; report: AssembleReport }>
  /**
   * Starts its threads, if any, ahead of the first job: a thread loads its modules for about
   * a second of CPU, which a recovery's first decode should not wait for. Optional: the first
   * job starts them otherwise.
   */
  start(): void
  /** Ends its threads, if any; jobs in flight reject with AbortError. Idempotent. */
  stop(): void
}

/** What the inline coder uses: the erasure coder per (k, m), and the pause that gives the event loop back. */
export interface InlineCoderDeps {
  coderFor: (k: number, m: number) => ErasureCoder
  /** Called every PAUSE_EVERY_BYTES of state coded or decoded (a zero-delay sleep on the node's clock). */
  breathe: () => Promise<void>
}

/**
 * The coder on the calling thread. Its awaits are those the snapshot code had before the seam
 * (a pause every PAUSE_EVERY_BYTES, nothing else), so simulated runs keep their event order.
 */
export function createInlineCoder(deps: InlineCoderDeps): SnapshotCoder {
  return {
    name: 'inline',
    alloc: bytes => new Uint8Array(bytes),
    seal(state, options = {}) {
      return new Promise(resolve => {
        throwIfAborted(options.signal)
        resolve(sealState(state))
      })
    },
    async stripe(state, spec, options = {}) {
      throwIfAborted(options.signal)
      const init = { ...spec, coder: deps.coderFor(spec.k, spec.m), ...(options.onSegment === undefined ? {} : { onSegment: options.onSegment }) }
      return await stripeStateAsync(state, init, deps.breathe)
    },
    async assemble(frags, k, m, options = {}) {
      throwIfAborted(options.signal)
      return await assembleStateAsync(frags, deps.coderFor(k, m), deps.breathe)
    },
    start() {},
    stop() {}
  }
}
