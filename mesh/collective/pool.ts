import { InvalidArgumentError } from '../../core/index.ts'

/**
 * Reused byte buffers for message bodies and partial sums. A fresh 1 MiB buffer per chunk cost
 * more than the bytes it carried: its first touch (page faults, zeroing) is several times a
 * copy, and the garbage collector then runs on external memory pressure. Buffers come in
 * power-of-two sizes (at least `MIN_CLASS`), so chunks of one operation, whose sizes differ
 * only at the end of a shard, share a size class. A view starts at offset 0 of its buffer, so
 * it is aligned for any typed array.
 *
 * The cap bounds what the pool holds while nobody uses it (`maxIdleBytes`): a buffer given back
 * past it is dropped for the collector. What is lent out is bounded by its users (a stream's
 * parser holds one body; an operation's messages are bounded by its plan).
 */
export class BufferPool {
  readonly maxIdleBytes: number
  readonly maxBufferBytes: number
  private readonly idle = new Map<number, ArrayBuffer[]>()
  /** Buffers this pool made and has lent out; anything else given back is ignored. */
  private readonly lent = new WeakSet<ArrayBuffer>()
  private idleBytes = 0
  private made = 0
  private reused = 0

  constructor(maxIdleBytes: number, maxBufferBytes: number) {
    if (!(Number.isSafeInteger(maxIdleBytes) && maxIdleBytes >= 0))
      throw new InvalidArgumentError(`maxIdleBytes must be a non-negative integer, got ${maxIdleBytes}`)
    this.maxIdleBytes = maxIdleBytes
    this.maxBufferBytes = maxBufferBytes
  }

  /** `bytes` bytes (contents undefined) from a pooled buffer, or a plain one past `maxBufferBytes`. */
  acquire(bytes: number): Uint8Array {
    if (bytes > this.maxBufferBytes) return new Uint8Array(bytes)
    const size = classOf(bytes)
    const list = this.idle.get(size)
    let ab = list?.pop()
    if (ab !== undefined) {
      this.idleBytes -= size
      this.reused++
    } else {
      ab = new ArrayBuffer(size)
      this.made++
    }
    this.lent.add(ab)
    return new Uint8Array(ab, 0, bytes)
  }

  /** Gives a buffer back (once its last reader is done); a second give-back of one loan is ignored. */
  release(view: ArrayBufferView): void {
    const ab = view.buffer as ArrayBuffer
    if (!this.lent.has(ab)) return
    this.lent.delete(ab)
    if (this.idleBytes + ab.byteLength > this.maxIdleBytes) return
    let list = this.idle.get(ab.byteLength)
    if (list === undefined) this.idle.set(ab.byteLength, (list = []))
    list.push(ab)
    this.idleBytes += ab.byteLength
  }

  /** Buffers allocated, loans served from idle buffers, and bytes held idle. */
  stats(): { made: number; reused: number; idleBytes: number } {
    return { made: this.made, reused: this.reused, idleBytes: this.idleBytes }
  }
}

/** Smallest pooled buffer: tiny bodies (tests, small windows) share one class. */
const MIN_CLASS = 4096

function classOf(bytes: number): number {
  let size = MIN_CLASS
  while (size < bytes) size *= 2
  return size
}
