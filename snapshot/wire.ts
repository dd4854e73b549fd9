import { checkCap } from '../core/index.ts'
import type { ByteStream } from '../mesh/index.ts'
import { snapshotError, SnapshotErrorCode } from './errors.ts'
import { SNAPSHOT_LIMITS } from './limits.ts'

/**
 * Stream protocol: an owner pushes one fragment to its holder. The owner writes the label; the
 * holder replies (OK, DUPLICATE: nothing more to send, or ERROR); on OK the owner writes one
 * ZMFG frame per segment and ends its side; the holder replies again once the body is verified
 * and stored.
 */
export const PUT_PROTOCOL = '/zeromesh/snapshot/put/1.0.0'
/**
 * Stream protocol: fetch one fragment (GET: a reply, the label, the segment frames) or the
 * labels held for an owner (LIST: a reply, a u16 count, the labels). The client writes one
 * request and ends its side.
 */
export const FETCH_PROTOCOL = '/zeromesh/snapshot/fetch/1.0.0'

/**
 * Exact-length reads from a ByteStream. The caller checks a cap before asking for n bytes; a
 * stream that ends early is a REQUEST_MALFORMED ProtocolError (truncated).
 */
export class StreamReader {
  private readonly it: AsyncIterator<Uint8Array>
  private pending: Uint8Array[] = []
  private pendingBytes = 0
  private readonly onChunk: (() => void) | undefined

  constructor(stream: ByteStream, onChunk?: () => void) {
    this.it = stream[Symbol.asyncIterator]()
    this.onChunk = onChunk
  }

  /** Reads exactly `n` bytes (a view when one chunk holds them, else one copy). */
  async read(n: number, what: string): Promise<Uint8Array> {
    if (n === 0) return new Uint8Array(0)
    while (this.pendingBytes < n) {
      const r = await this.it.next()
      if (r.done === true) throw snapshotError(SnapshotErrorCode.REQUEST_MALFORMED, `stream ended ${n - this.pendingBytes} bytes short of ${what}`, { what })
      this.onChunk?.()
      if (r.value.length === 0) continue
      this.pending.push(r.value)
      this.pendingBytes += r.value.length
    }
    const first = this.pending[0]!
    if (first.length >= n) {
      const out = first.subarray(0, n)
      if (first.length === n) this.pending.shift()
      else this.pending[0] = first.subarray(n)
      this.pendingBytes -= n
      return out
    }
    const out = new Uint8Array(n)
    let o = 0
    while (o < n) {
      const c = this.pending[0]!
      const take = Math.min(c.length, n - o)
      out.set(c.subarray(0, take), o)
      o += take
      if (take === c.length) this.pending.shift()
      else this.pending[0] = c.subarray(take)
    }
    this.pendingBytes -= n
    return out
  }
}

/** Writes `bytes` in chunks of at most streamChunkBytes (ByteStream caps one write). */
export async function writeAll(stream: ByteStream, bytes: Uint8Array, signal?: AbortSignal): Promise<void> {
  const step = SNAPSHOT_LIMITS.streamChunkBytes
  for (let o = 0; o < bytes.length; o += step) {
    await stream.write(bytes.subarray(o, Math.min(bytes.length, o + step)), { signal })
  }
}

/**
 * A little-endian u16 at the start of `b`, read by index: a chunk from a stream can be a view
 * into a larger buffer (a received packet), so its `.buffer` is not where its bytes start.
 */
export function u16le(b: Uint8Array): number {
  return b[0]! | (b[1]! << 8)
}

/** A little-endian u16 (the entry count of a LIST reply). */
export function encodeCount(n: number): Uint8Array {
  const out = new Uint8Array(2)
  new DataView(out.buffer).setUint16(0, n, true)
  return out
}

/** Reply status bytes on snapshot streams. */
export const Status = Object.freeze({ OK: 0, DUPLICATE: 1, ERROR: 2 } as const)

const ascii = new TextEncoder()
const asciiDec = new TextDecoder()

/** A reply: status byte, then for errors a u8-length code and a u16-length message. */
export function encodeReply(status: number, code = '', message = ''): Uint8Array {
  const c = ascii.encode(code).subarray(0, 64)
  const msg = ascii.encode(message).subarray(0, 1024)
  const out = new Uint8Array(1 + 1 + c.length + 2 + msg.length)
  out[0] = status
  out[1] = c.length
  out.set(c, 2)
  new DataView(out.buffer).setUint16(2 + c.length, msg.length, true)
  out.set(msg, 4 + c.length)
  return out
}

/** A decoded reply (code and message are empty unless the status is ERROR). */
export interface Reply {
  status: number
  code: string
  message: string
}

/** Reads one reply: an unknown status is REQUEST_MALFORMED, a message over maxControlBytes fails its cap check. */
export async function readReply(r: StreamReader): Promise<Reply> {
  const head = await r.read(2, 'reply')
  const status = head[0]!
  if (status > Status.ERROR) throw snapshotError(SnapshotErrorCode.REQUEST_MALFORMED, `unknown reply status ${status}`)
  const code = asciiDec.decode(await r.read(head[1]!, 'reply code'))
  const len = u16le(await r.read(2, 'reply length'))
  checkCap('snapshot reply bytes', len, SNAPSHOT_LIMITS.maxControlBytes)
  const message = asciiDec.decode(await r.read(len, 'reply message'))
  return { status, code, message }
}

/** GET / LIST requests on the fetch protocol. */
export const Op = Object.freeze({ GET: 1, LIST: 2 } as const)

const utf8 = new TextEncoder()
const utf8d = new TextDecoder('utf-8', { fatal: true })

/**
 * Request layout: u8 op, u64 version, u64 epoch, u8 index, u16 owner id bytes, owner id.
 * LIST ignores version, epoch and index.
 */
export function encodeRequest(op: number, owner: string, version = 0, epoch = 0, index = 0): Uint8Array {
  const id = utf8.encode(owner)
  checkCap('snapshot owner id bytes', id.length, SNAPSHOT_LIMITS.maxPeerIdBytes)
  const out = new Uint8Array(20 + id.length)
  const v = new DataView(out.buffer)
  v.setUint8(0, op)
  v.setBigUint64(1, BigInt(version), true)
  v.setBigUint64(9, BigInt(epoch), true)
  v.setUint8(17, index)
  v.setUint16(18, id.length, true)
  out.set(id, 20)
  return out
}

/** A decoded fetch request. */
export interface Request {
  op: number
  owner: string
  version: number
  epoch: number
  index: number
}

/** Reads one request, checking the op, the 2^53 range of version and epoch, and the owner id cap. */
export async function readRequest(r: StreamReader): Promise<Request> {
  const head = await r.read(20, 'request')
  const v = new DataView(head.buffer, head.byteOffset, head.byteLength)
  const op = v.getUint8(0)
  if (op !== Op.GET && op !== Op.LIST) throw snapshotError(SnapshotErrorCode.REQUEST_MALFORMED, `unknown op ${op}`)
  const version = v.getBigUint64(1, true)
  const epoch = v.getBigUint64(9, true)
  if (version > BigInt(Number.MAX_SAFE_INTEGER) || epoch > BigInt(Number.MAX_SAFE_INTEGER))
    throw snapshotError(SnapshotErrorCode.REQUEST_MALFORMED, 'version or epoch over 2^53')
  const idLen = v.getUint16(18, true)
  if (idLen > SNAPSHOT_LIMITS.maxPeerIdBytes) throw snapshotError(SnapshotErrorCode.REQUEST_MALFORMED, `owner id of ${idLen} bytes is over the cap`)
  let owner: string
  try {
    owner = utf8d.decode(await r.read(idLen, 'owner id'))
  } catch (err) {
    if (err instanceof TypeError) throw snapshotError(SnapshotErrorCode.REQUEST_MALFORMED, 'owner id is not UTF-8')
    throw err
  }
  return { op, owner, version: Number(version), epoch: Number(epoch), index: v.getUint8(17) }
}
