import { checkCap, protocolError } from '../../core/index.ts'
import { checksum64 } from '../../codec/index.ts'
import { COLLECTIVE_LIMITS } from './limits.ts'

/**
 * One collective message: a fixed 64-byte little-endian header, then the body.
 *
 *    0  u32  magic 'ZMCO'
 *    4  u8   version (1)
 *    5  u8   operation kind (OP_KINDS)
 *    6  u8   phase (stage of the operation: reduce-scatter / all-gather half, tier level)
 *    7  u8   body encoding (ENCODINGS)
 *    8  u32  view epoch
 *   12  u32  operation sequence number (per collective instance, in call order)
 *   16  u64  training step
 *   24  u32  source rank (must be the rank of the stream's remote peer)
 *   28  u32  message index within (source -> destination, operation, phase)
 *   32  u32  element count of the body
 *   36  u32  quantization block size (0 unless quantized)
 *   40  u32  body bytes
 *   44  u32  reserved (0)
 *   48  u64  body checksum (xxh64)
 *   56  u64  header checksum (xxh64 of bytes [0, 56))
 *
 * The header is verified (checksum, then every field) before the body length is trusted or
 * anything is allocated for it. A quantized body is the chunk's f32 block scales followed by
 * its codes, the codec/quant.ts layout.
 */
export const MESSAGE_MAGIC = 0x4f434d5a
export const MESSAGE_VERSION = 1
const HEADER = COLLECTIVE_LIMITS.headerBytes

/** Wire codes of the operation kinds. Never renumber. */
export const OP_KINDS = Object.freeze({ allGather: 1, reduceScatter: 2, allReduce: 3, hierReduceScatter: 4, hierAllGather: 5 })
export type OpKind = keyof typeof OP_KINDS

/**
 * Wire codes of the body encodings. Never renumber. `u32` is raw 32-bit words (integer
 * protocol records), carried bit for bit like bf16 words are.
 */
export const ENCODINGS = Object.freeze({ f32: 1, bf16: 2, q8: 3, q4: 4, u32: 5 })
export type EncodingCode = (typeof ENCODINGS)[keyof typeof ENCODINGS]

export interface MessageHeader {
  kind: number
  phase: number
  encoding: number
  epoch: number
  op: number
  step: number
  src: number
  index: number
  elements: number
  blockSize: number
  bodyBytes: number
  bodyChecksum: bigint
}

export interface Message {
  header: MessageHeader
  body: Uint8Array
  /** The body was written straight into the destination its operation gave for it (see {@link BodySink}). */
  landed: boolean
  /** The body is a buffer from the collective's pool, owned by whoever consumes the message. */
  pooled: boolean
}

type HeaderFields = Omit<MessageHeader, 'bodyBytes' | 'bodyChecksum'> & { bodyChecksum?: bigint }

/** The 64-byte header of a message with `body`. `bodyChecksum` may be passed when known (forwarding). */
export function encodeHeader(h: HeaderFields, body: Uint8Array): Uint8Array {
  const out = new Uint8Array(HEADER)
  const v = new DataView(out.buffer)
  v.setUint32(0, MESSAGE_MAGIC, true)
  v.setUint8(4, MESSAGE_VERSION)
  v.setUint8(5, h.kind)
  v.setUint8(6, h.phase)
  v.setUint8(7, h.encoding)
  v.setUint32(8, h.epoch, true)
  v.setUint32(12, h.op, true)
  v.setBigUint64(16, BigInt(h.step), true)
  v.setUint32(24, h.src, true)
  v.setUint32(28, h.index, true)
  v.setUint32(32, h.elements, true)
  v.setUint32(36, h.blockSize, true)
  v.setUint32(40, body.length, true)
  v.setUint32(44, 0, true)
  v.setBigUint64(48, h.bodyChecksum ?? checksum64(body), true)
  v.setBigUint64(56, checksum64(out.subarray(0, 56)), true)
  return out
}

/** Header + body in one buffer (one stream write). */
export function encodeMessage(h: HeaderFields, body: Uint8Array): Uint8Array {
  return joinMessage(encodeHeader(h, body), body)
}

/** An encoded header and its body in one buffer. */
export function joinMessage(header: Uint8Array, body: Uint8Array): Uint8Array {
  const out = new Uint8Array(HEADER + body.length)
  out.set(header)
  out.set(body, HEADER)
  return out
}

/** Decodes and checks a header (checksum first, then magic, version, reserved, body cap). */
export function decodeHeader(bytes: Uint8Array): MessageHeader {
  if (bytes.length < HEADER) throw protocolError('COLLECTIVE_TRUNCATED', `collective header needs ${HEADER} bytes, got ${bytes.length}`)
  const v = new DataView(bytes.buffer, bytes.byteOffset, HEADER)
  if (v.getUint32(0, true) !== MESSAGE_MAGIC) throw protocolError('COLLECTIVE_BAD_MAGIC', 'not a collective message (bad magic)')
  if (v.getBigUint64(56, true) !== checksum64(bytes.subarray(0, 56))) throw protocolError('COLLECTIVE_HEADER_CHECKSUM', 'collective header checksum mismatch')
  const version = v.getUint8(4)
  if (version !== MESSAGE_VERSION) throw protocolError('COLLECTIVE_BAD_VERSION', `unsupported collective message version ${version}`, { version })
  if (v.getUint32(44, true) !== 0) throw protocolError('COLLECTIVE_BAD_HEADER', 'reserved header field is not zero')
  const step = v.getBigUint64(16, true)
  if (step > BigInt(Number.MAX_SAFE_INTEGER)) throw protocolError('COLLECTIVE_BAD_HEADER', `step ${step} is too large`)
  const h: MessageHeader = {
    kind: v.getUint8(5),
    phase: v.getUint8(6),
    encoding: v.getUint8(7),
    epoch: v.getUint32(8, true),
    op: v.getUint32(12, true),
    step: Number(step),
    src: v.getUint32(24, true),
    index: v.getUint32(28, true),
    elements: v.getUint32(32, true),
    blockSize: v.getUint32(36, true),
    bodyBytes: v.getUint32(40, true),
    bodyChecksum: v.getBigUint64(48, true)
  }
  if (h.bodyBytes > COLLECTIVE_LIMITS.maxMessageBodyBytes) {
    throw protocolError('COLLECTIVE_TOO_LARGE', `collective body of ${h.bodyBytes} bytes exceeds the cap of ${COLLECTIVE_LIMITS.maxMessageBodyBytes}`, {
      bodyBytes: h.bodyBytes
    })
  }
  return h
}

/**
 * Where a parser puts bodies. `land` gives the destination an operation expects a body in (a
 * view of its output, exactly `bodyBytes` long) after the header is verified, or undefined;
 * then `acquire` lends a buffer (the pool). Either way the body is copied out of the stream's
 * chunks once, and its checksum is verified where it lies.
 */
export interface BodySink {
  land(h: MessageHeader): Uint8Array | undefined
  acquire(bytes: number): Uint8Array
}

/** Bodies in fresh buffers, or as views of a chunk that holds the whole message. */
const PLAIN_SINK: BodySink = {
  land: () => undefined,
  acquire: bytes => new Uint8Array(bytes)
}

/**
 * Incremental message decoder for one stream. Holds at most one partial message; takes a
 * body buffer only after its header is verified and within the cap. With the plain sink a
 * message that arrives whole in one chunk is returned as a view of it. Poisoned after the
 * first error.
 */
export class MessageParser {
  private readonly sink: BodySink
  private readonly pooled: boolean
  private head = new Uint8Array(HEADER)
  private headLen = 0
  private header: MessageHeader | undefined
  private body: Uint8Array | undefined
  private landed = false
  private bodyLen = 0
  private failed: Error | undefined

  constructor(sink?: BodySink) {
    this.sink = sink ?? PLAIN_SINK
    this.pooled = sink !== undefined
  }

  /** Bytes held for a message not yet complete. */
  get buffered(): number {
    return this.headLen + this.bodyLen
  }

  push(chunk: Uint8Array): Message[] {
    if (this.failed !== undefined) throw this.failed
    const out: Message[] = []
    try {
      let pos = 0
      while (pos < chunk.length) {
        if (this.header === undefined) {
          if (this.headLen === 0 && chunk.length - pos >= HEADER) {
            const header = decodeHeader(chunk.subarray(pos, pos + HEADER))
            pos += HEADER
            if (!this.pooled && chunk.length - pos >= header.bodyBytes) {
              const body = chunk.subarray(pos, pos + header.bodyBytes)
              pos += header.bodyBytes
              out.push(finish(header, body, false, false))
              continue
            }
            this.begin(header)
            if (header.bodyBytes === 0) out.push(this.complete())
            continue
          }
          const take = Math.min(HEADER - this.headLen, chunk.length - pos)
          this.head.set(chunk.subarray(pos, pos + take), this.headLen)
          this.headLen += take
          pos += take
          if (this.headLen < HEADER) break
          this.begin(decodeHeader(this.head))
          this.headLen = 0
          if (this.header!.bodyBytes === 0) out.push(this.complete())
          continue
        }
        const need = this.header.bodyBytes - this.bodyLen
        const take = Math.min(need, chunk.length - pos)
        this.body!.set(chunk.subarray(pos, pos + take), this.bodyLen)
        this.bodyLen += take
        pos += take
        if (this.bodyLen === this.header.bodyBytes) out.push(this.complete())
      }
    } catch (err) {
      this.failed = err as Error
      throw err
    }
    return out
  }

  /** Throws if the stream ended inside a message. */
  end(): void {
    if (this.failed !== undefined) throw this.failed
    if (this.header !== undefined || this.headLen > 0) throw protocolError('COLLECTIVE_TRUNCATED', 'stream ended inside a collective message')
  }

  private begin(header: MessageHeader): void {
    checkCap('collective message body bytes', header.bodyBytes, COLLECTIVE_LIMITS.maxMessageBodyBytes)
    const dest = this.sink.land(header)
    this.header = header
    this.landed = dest !== undefined
    this.body = dest ?? this.sink.acquire(header.bodyBytes)
    this.bodyLen = 0
  }

  private complete(): Message {
    const m = finish(this.header!, this.body!, this.landed, this.pooled && !this.landed)
    this.header = undefined
    this.body = undefined
    this.bodyLen = 0
    return m
  }
}

function finish(header: MessageHeader, body: Uint8Array, landed: boolean, pooled: boolean): Message {
  if (checksum64(body) !== header.bodyChecksum)
    throw protocolError('COLLECTIVE_BODY_CHECKSUM', 'collective body checksum mismatch', { op: header.op, index: header.index })
  return { header, body, landed, pooled }
}
