import type { Backend, HostArray, Tensor } from '../../gpu/index.ts'
import { TRAIN_LIMITS } from './limits.ts'

/**
 * Copies between the host and a backend's tensor that give the event loop back between pieces
 * of TRAIN_LIMITS.hostCopyChunkBytes (a GPU rank's loop sends its heartbeats: a 1.5 GB
 * synchronous copy reads as a dead node). A copy of at most one piece is done at once and
 * returns undefined, so a small state (every simulated one) keeps its synchronous schedule.
 */

/** Elements of `bytesPer`-byte elements in one piece. */
const pieceOf = (bytesPer: number): number => Math.max(1, Math.floor(TRAIN_LIMITS.hostCopyChunkBytes / bytesPer))

/** Whether a copy of `n` f32 elements takes more than one piece (then the paced copies return promises). */
export const pacedCopy = (n: number): boolean => n > pieceOf(4)

/** `be.write(t, src)` piece by piece, `turn` between pieces. */
export function writePaced(be: Backend, t: Tensor, src: HostArray, turn: () => Promise<void>): Promise<void> | undefined {
  const piece = pieceOf(src.BYTES_PER_ELEMENT)
  if (src.length <= piece) {
    be.write(t, src)
    return undefined
  }
  return (async () => {
    for (let at = 0; at < src.length; at += piece) {
      if (at > 0) await turn()
      be.write(t, src.subarray(at, Math.min(src.length, at + piece)), at)
    }
  })()
}

/** `be.read(t)` of an f32 tensor piece by piece (views of it), `turn` between pieces. */
export function readPaced(be: Backend, t: Tensor, turn: () => Promise<void>): Float32Array | Promise<Float32Array> {
  const piece = pieceOf(4)
  if (t.length <= piece) return be.read(t) as Float32Array
  return (async () => {
    const out = new Float32Array(t.length)
    for (let at = 0; at < t.length; at += piece) {
      if (at > 0) await turn()
      const n = Math.min(piece, t.length - at)
      out.set(be.read(be.view(t, at, [n])) as Float32Array, at)
    }
    return out
  })()
}
