import { checkCap, ProtocolError } from '../core/index.ts'
import type { ByteStream } from './peernet.ts'

/**
 * Length-prefixed messages over a ByteStream: a u32 little-endian length, then the bytes.
 * For small request/response protocols (auth, status); bulk tensors use codec frames.
 */
export async function writeMessage(stream: ByteStream, bytes: Uint8Array, options: { signal?: AbortSignal } = {}): Promise<void> {
  const out = new Uint8Array(4 + bytes.length)
  new DataView(out.buffer).setUint32(0, bytes.length, true)
  out.set(bytes, 4)
  await stream.write(out, options)
}

/** `n` as 4 little-endian bytes: the length prefix here, and the same framing in auth's MACs and the bulk channel. */
export function u32le(n: number): Uint8Array {
  const b = new Uint8Array(4)
  new DataView(b.buffer).setUint32(0, n, true)
  return b
}

/** Reads length-prefixed messages of at most `maxBytes` each from a stream. */
export class MessageReader {
  private readonly it: AsyncIterator<Uint8Array>
  private buf = new Uint8Array(0)
  private readonly maxBytes: number

  constructor(stream: AsyncIterable<Uint8Array>, maxBytes: number) {
    this.it = stream[Symbol.asyncIterator]()
    this.maxBytes = maxBytes
  }

  /** The next message; undefined at a clean end; ProtocolError if the stream ends mid-message or a length is over the cap. */
  async next(): Promise<Uint8Array | undefined> {
    for (;;) {
      if (this.buf.length >= 4) {
        const len = new DataView(this.buf.buffer, this.buf.byteOffset, 4).getUint32(0, true)
        if (len > this.maxBytes) throw new ProtocolError('MESSAGE_TOO_LARGE', `message of ${len} bytes exceeds the cap of ${this.maxBytes}`)
        if (this.buf.length >= 4 + len) {
          const msg = this.buf.slice(4, 4 + len)
          this.buf = this.buf.subarray(4 + len)
          return msg
        }
      }
      const r = await this.it.next()
      if (r.done === true) {
        if (this.buf.length > 0) throw new ProtocolError('MESSAGE_TRUNCATED', `stream ended inside a message (${this.buf.length} bytes)`)
        return undefined
      }
      checkCap('buffered message bytes', this.buf.length + r.value.length, this.maxBytes + 4 + r.value.length)
      const next = new Uint8Array(this.buf.length + r.value.length)
      next.set(this.buf)
      next.set(r.value, this.buf.length)
      this.buf = next
    }
  }
}
