import { AbortError, checkCap, InvalidArgumentError, throwIfAborted } from '../core/index.ts'
import { SNAPSHOT_LIMITS } from './limits.ts'
import type { SnapshotCoder } from './coder.ts'
import { sealState, stateBytes, writeState, type RankState } from './state.ts'
import { copyState } from './state-copy.ts'

/** How one capture ended. Never rejects: a trainer may ignore it. */
export type CaptureOutcome<R> =
  | { status: 'placed'; step: number; result: R }
  | { status: 'superseded'; step: number; by: number }
  /** Not copied: a kept capture (of step `by`) was still waiting to be placed. */
  | { status: 'skipped'; step: number; by: number }
  | { status: 'failed'; step: number; error: Error }

export interface CaptureTicket<R> {
  step: number
  /** Settles when this capture is placed, superseded by a newer one, or failed. */
  done: Promise<CaptureOutcome<R>>
  /**
   * Present when the copy goes on after `capture` returned (a state over `chunkBytes`):
   * resolves (never rejects) once the state's buffers are no longer read, and until then they
   * must not change. Absent: the copy was done when `capture` returned.
   */
  copied?: Promise<void>
}

/**
 * Double-buffered, asynchronous capture.
 *
 * Contract for the trainer: call `capture(state)` after step `state.step` has **committed**
 * and before the next optimizer update touches the buffers. `capture`
 * copies the state into one of two buffers: a state of at most `chunkBytes` at once, so that
 * when it returns the trainer may overwrite weights / moments / rng freely; a larger one a
 * piece of `chunkBytes` per turn of the event loop (a 1.5 GB copy in one piece held a GPU
 * rank's loop, and the heartbeats it sends, for seconds: its peers took it for dead), and then
 * the buffers may change once the ticket's `copied` resolved. A capture made while such a copy
 * goes on is a programmer error (InvalidArgumentError). It never waits for an earlier
 * snapshot: one buffer may be placing while the other takes the new copy. If a copy is still
 * queued (not yet placing) when the next capture comes, the queued one is *superseded* (its
 * ticket settles with `superseded`) and the newer step is placed instead, so placement falls
 * behind by at most one snapshot and memory stays at two buffers. Every snapshot is the bytes
 * of exactly one `capture` call: a buffer being placed is never written.
 *
 * A *kept* capture (`{ keep: true }`: the anchor steps every rank captures, see
 * node/train/persist.ts) is never superseded by an ordinary one: an ordinary capture that comes
 * while a kept one waits is skipped instead (settles `skipped`, nothing copied). A kept capture
 * supersedes a kept one only when the trainer did not wait for `room()` first.
 *
 * The checksum pass (`seal`) and the erasure coding (in `place`) run after `capture` returned,
 * on the snapshot coder (coder.ts): worker threads on real nodes, reading the buffer in place
 * (`alloc` gives shared memory), so the trainer's thread pays only the copy.
 */
export interface CaptureOptions {
  /** Never superseded by an ordinary capture (see {@link Capturer}). */
  keep?: boolean
}

export interface Capturer<R> {
  capture(state: RankState, options?: CaptureOptions): CaptureTicket<R>
  /** Undefined when no kept capture waits to be placed, else a promise that resolves once none does: a kept capture made then supersedes none. */
  room(): Promise<void> | undefined
  /**
   * Places the newest placed copy again (after a view change: re-stripe under the new
   * epoch), unless a newer capture is already queued, which will be placed under the new view
   * anyway. Returns its ticket, or undefined when there is nothing to re-place.
   */
  requeue(): CaptureTicket<R> | undefined
  /** Waits until nothing is queued or placing. */
  idle(): Promise<void>
  /** The sealed bytes of the newest placed capture (while no newer capture reuses its buffer). */
  retained(): { step: number; bytes: Uint8Array } | undefined
  /** Aborts the placement in flight; queued captures settle as failed. */
  stop(): void
}

type SlotState = 'free' | 'copying' | 'pending' | 'placing' | 'retained'

interface Slot<R> {
  buf: Uint8Array
  bytes: Uint8Array | undefined
  state: SlotState
  step: number
  keep: boolean
  settle: ((o: CaptureOutcome<R>) => void) | undefined
}

/** Where the capture buffers come from and how they are sealed (a SnapshotCoder's; inline by default). */
export type CaptureCoder = Pick<SnapshotCoder, 'alloc' | 'seal'>

const inlineSeal: CaptureCoder = { alloc: bytes => new Uint8Array(bytes), seal: async bytes => sealState(bytes) }

/** How a capturer copies a large state: pieces of `chunkBytes`, a `turn` of the event loop between them. */
export interface CapturePacing {
  /** Default SNAPSHOT_LIMITS.captureChunkBytes. */
  chunkBytes?: number
  /** Default: one setImmediate (real nodes pass their clock's `turn`). */
  turn?: () => Promise<void>
}

const immediate = (): Promise<void> => new Promise(resolve => setImmediate(resolve))

/** Creates a capturer over `place` (the snapshot service's placement of sealed state bytes). */
export function createCapturer<R>(
  place: (sealed: Uint8Array, signal: AbortSignal) => Promise<R>,
  coder: CaptureCoder = inlineSeal,
  pacing: CapturePacing = {}
): Capturer<R> {
  const chunkBytes = pacing.chunkBytes ?? SNAPSHOT_LIMITS.captureChunkBytes
  if (!Number.isSafeInteger(chunkBytes) || chunkBytes < 1) throw new InvalidArgumentError(`chunkBytes must be a positive integer, got ${chunkBytes}`)
  const turn = pacing.turn ?? immediate
  const slots: Array<Slot<R>> = [0, 1].map(() => ({
    buf: new Uint8Array(0),
    bytes: undefined,
    state: 'free' as SlotState,
    step: -1,
    keep: false,
    settle: undefined
  }))
  const ctl = new AbortController()
  let pumping: Promise<void> | undefined
  /** The copy of a large state in progress (at most one). */
  let copying: Promise<void> | undefined
  let stopped = false
  // Waiters of room(): called whenever a pending slot leaves 'pending'.
  let roomWaiters: Array<() => void> = []
  const keptWaiting = (): boolean => slots.some(s => (s.state === 'pending' || s.state === 'copying') && s.keep)
  const wakeRoom = (): void => {
    if (keptWaiting()) return
    const w = roomWaiters
    roomWaiters = []
    for (const f of w) f()
  }

  const ticket = (slot: Slot<R>): CaptureTicket<R> => {
    const done = new Promise<CaptureOutcome<R>>(resolve => {
      slot.settle = resolve
    })
    return { step: slot.step, done }
  }

  const pump = async (): Promise<void> => {
    for (;;) {
      const slot = slots.find(s => s.state === 'pending')
      if (slot === undefined || stopped) return
      slot.state = 'placing'
      const settle = slot.settle!
      slot.settle = undefined
      wakeRoom()
      // Let the trainer's code after capture() run before the checksum and coding passes.
      await Promise.resolve()
      try {
        await coder.seal(slot.bytes!, { signal: ctl.signal })
        // stop() may have come while the seal ran.
        throwIfAborted(ctl.signal)
        const result = await place(slot.bytes!, ctl.signal)
        for (const s of slots) if (s !== slot && s.state === 'retained') s.state = 'free'
        slot.state = 'retained'
        settle({ status: 'placed', step: slot.step, result })
      } catch (err) {
        slot.state = 'free'
        slot.bytes = undefined
        settle({ status: 'failed', step: slot.step, error: err instanceof Error ? err : new Error(String(err)) })
      }
    }
  }

  const kick = (): void => {
    if (pumping !== undefined) return
    pumping = pump().finally(() => {
      pumping = undefined
      // A capture or requeue that arrived after the loop's last look must not be stranded.
      if (!stopped && slots.some(s => s.state === 'pending')) kick()
    })
  }

  /** Copies a large state into `slot` piece by piece; the slot turns pending once it is whole. */
  const copyInto = async (slot: Slot<R>, state: RankState): Promise<void> => {
    try {
      const bytes = await copyState(state, slot.buf, { chunkBytes, turn, signal: ctl.signal })
      throwIfAborted(ctl.signal)
      slot.bytes = bytes
      slot.state = 'pending'
      kick()
    } catch (err) {
      slot.state = 'free'
      slot.bytes = undefined
      const error = stopped ? new AbortError('snapshot capture stopped') : err instanceof Error ? err : new Error(String(err))
      const settle = slot.settle
      slot.settle = undefined
      settle?.({ status: 'failed', step: slot.step, error })
      wakeRoom()
    }
  }

  return {
    capture(state, options) {
      const need = stateBytes(state)
      checkCap('snapshot state bytes', need, SNAPSHOT_LIMITS.maxStateBytes)
      if (copying !== undefined)
        throw new InvalidArgumentError(`capture of step ${state.step} while the copy of an earlier one goes on: wait for its ticket's copied`)
      const keep = options?.keep === true
      const slot = slots.find(s => s.state === 'pending') ?? slots.find(s => s.state === 'free') ?? slots.find(s => s.state === 'retained')!
      if (slot.state === 'pending' && slot.keep && !keep) {
        return { step: state.step, done: Promise.resolve({ status: 'skipped', step: state.step, by: slot.step }) }
      }
      if (slot.state === 'pending') slot.settle?.({ status: 'superseded', step: slot.step, by: state.step })
      slot.keep = keep
      if (slot.buf.length < need) slot.buf = coder.alloc(need)
      slot.step = state.step
      if (need > chunkBytes) {
        slot.state = 'copying'
        slot.bytes = undefined
        const t = ticket(slot)
        const c = copyInto(slot, state).finally(() => {
          copying = undefined
        })
        copying = c
        return { ...t, copied: c }
      }
      slot.bytes = writeState(state, slot.buf)
      slot.state = 'pending'
      const t = ticket(slot)
      kick()
      return t
    },

    requeue() {
      // A copy going on is a newer capture: it will be placed under the new view anyway.
      if (slots.some(s => s.state === 'pending' || s.state === 'copying')) return undefined
      const slot = slots.find(s => s.state === 'retained')
      if (slot === undefined) return undefined
      // A kept copy (an anchor step) stays kept: re-placed under the new view it is still the step every rank keeps.
      slot.state = 'pending'
      const t = ticket(slot)
      kick()
      return t
    },

    room() {
      if (!keptWaiting()) return undefined
      return new Promise<void>(resolve => roomWaiters.push(resolve))
    },

    async idle() {
      while (pumping !== undefined || copying !== undefined) await (copying ?? pumping)
    },

    retained() {
      const s = slots.find(x => x.state === 'retained')
      return s === undefined ? undefined : { step: s.step, bytes: s.bytes! }
    },

    stop() {
      stopped = true
      ctl.abort()
      for (const s of slots) {
        if (s.state === 'pending') {
          s.settle?.({ status: 'failed', step: s.step, error: new AbortError('snapshot capture stopped') })
          s.state = 'free'
        }
      }
      wakeRoom()
    }
  }
}
