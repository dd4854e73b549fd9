import { throwIfAborted } from '../core/index.ts'
import { writeState, type RankState } from './state.ts'

/** What {@link copyState} pauses on and stops with. */
export interface CopyStateOptions {
  /** Most bytes copied between two turns. */
  chunkBytes: number
  /** One turn of the event loop (the node clock's `turn`). */
  turn: () => Promise<void>
  signal?: AbortSignal
}

/** Copies of at most this many bytes are made at once while the layout is written (rng, identity, nonce). */
const SMALL_BYTES = 4096

/**
 * Serializes `state` into `into` exactly as writeState does (unsealed), but copying at most
 * `chunkBytes` before each turn of the event loop. Returns the exact-length view once all is
 * copied; the source buffers must not change meanwhile. Throws AbortError (between pieces)
 * when `signal` aborts.
 *
 * The layout stays writeState's own: writeState runs over a view whose `set` records each large
 * copy (source and offset) instead of making it, and the recorded copies are then made piece by
 * piece. The header, the padding and the small copies it writes as usual.
 */
export async function copyState(state: RankState, into: Uint8Array, options: CopyStateOptions): Promise<Uint8Array> {
  const copies: Array<{ src: Uint8Array; at: number }> = []
  // Typed-array methods that make a view (subarray) make one of this class too.
  class Recording extends Uint8Array<ArrayBufferLike> {
    override set(src: ArrayLike<number>, at = 0): void {
      if (src instanceof Uint8Array && src.length > SMALL_BYTES) copies.push({ src, at: this.byteOffset - into.byteOffset + at })
      else super.set(src, at)
    }
  }
  const laid = writeState(state, new Recording(into.buffer, into.byteOffset, into.length))
  const out = new Uint8Array(into.buffer, into.byteOffset, laid.length)
  let since = 0
  for (const { src, at } of copies) {
    for (let i = 0; i < src.length; ) {
      if (since >= options.chunkBytes) {
        await options.turn()
        throwIfAborted(options.signal)
        since = 0
      }
      const end = Math.min(src.length, i + options.chunkBytes - since)
      out.set(src.subarray(i, end), at + i)
      since += end - i
      i = end
    }
  }
  return out
}
