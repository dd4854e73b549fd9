import { InvalidArgumentError, checkCap } from '../core/index.ts'
import { checksum64 } from './checksum.ts'
import { type DType, DTYPE_BITS, DTYPE_CODES, dtypeFromCode, byteLength, shapeElements } from './dtype.ts'
import { codecError, CodecErrorCode } from './errors.ts'
import { CODEC_LIMITS } from './limits.ts'
import { type Quantized, type QuantBits, quantizedSize, validateQuantOptions, validateQuantized } from './quant.ts'

/**
 * Tensor frame: a fixed little-endian header followed by raw bytes. Layout (offsets in bytes):
 *
 *    0  u32  magic 'ZMTF'
 *    4  u8   version (1)
 *    5  u8   dtype code (DTYPE_CODES)
 *    6  u8   rank r (<= maxTensorRank)
 *    7  u8   flags: bit 0 = blockwise quantized (dtype i8 or i4); other bits must be 0
 *    8  u32  tag (opaque to the codec: bucket id, stream id, ...)
 *   12  u32  chunk index
 *   16  u32  chunk count
 *   20  u32  quantization block size (0 unless quantized)
 *   24  u64  element offset of this chunk in the whole tensor
 *   32  u64  element count of this chunk
 *   40  u64  body bytes
 *   48  u64  body checksum (xxh64)
 *   56  u64  x r  dimensions of the whole tensor
 *   56+8r u64 header checksum (xxh64 of bytes [0, 56+8r))
 *
 * Header and body are checksummed separately (the TigerBeetle habit) so a reader can trust the
 * body length before it waits for, or allocates, the body. A quantized body is the chunk's
 * f32 block scales followed by its packed codes; quantized chunks start on block boundaries.
 */
export const FRAME_MAGIC = 0x46544d5a
export const FRAME_VERSION = 1
/** Bytes of the header before the dimensions; the whole header is this + 8 * rank + 8. */
export const FRAME_FIXED_BYTES = 56
const FLAG_QUANTIZED = 1

/** A dense tensor as raw little-endian bytes. */
export interface TensorView {
  dtype: DType
  shape: readonly number[]
  data: Uint8Array
}

/** Decoded, validated header. */
export interface FrameHeader {
  version: number
  dtype: DType
  shape: number[]
  quantized: boolean
  blockSize: number
  tag: number
  chunkIndex: number
  chunkCount: number
  elementOffset: number
  elementCount: number
  bodyBytes: number
  bodyChecksum: bigint
  headerBytes: number
  /** Elements per chunk for every chunk but the last (derived; equal across a tensor's frames). */
  chunkElements: number
}

/** One frame: header bytes and body bytes kept apart so writers need not concatenate. */
export interface Frame {
  header: Uint8Array
  body: Uint8Array
}

/** A decoded frame: its header and a view of its (checksum-verified) body. */
export interface DecodedFrame {
  header: FrameHeader
  body: Uint8Array
}

export interface EncodeFrameOptions {
  /** Opaque tag copied into every frame. */
  tag?: number
  /** Largest body per frame; default and maximum CODEC_LIMITS.maxFrameBodyBytes. */
  maxBodyBytes?: number
}

/** Header size for a rank. */
export function frameHeaderBytes(rank: number): number {
  return FRAME_FIXED_BYTES + 8 * rank + 8
}

function writeHeader(h: Omit<FrameHeader, 'headerBytes' | 'version' | 'chunkElements'>): Uint8Array {
  const bytes = new Uint8Array(frameHeaderBytes(h.shape.length))
  const v = new DataView(bytes.buffer)
  v.setUint32(0, FRAME_MAGIC, true)
  v.setUint8(4, FRAME_VERSION)
  v.setUint8(5, DTYPE_CODES[h.dtype])
  v.setUint8(6, h.shape.length)
  v.setUint8(7, h.quantized ? FLAG_QUANTIZED : 0)
  v.setUint32(8, h.tag, true)
  v.setUint32(12, h.chunkIndex, true)
  v.setUint32(16, h.chunkCount, true)
  v.setUint32(20, h.blockSize, true)
  v.setBigUint64(24, BigInt(h.elementOffset), true)
  v.setBigUint64(32, BigInt(h.elementCount), true)
  v.setBigUint64(40, BigInt(h.bodyBytes), true)
  v.setBigUint64(48, h.bodyChecksum, true)
  h.shape.forEach((d, i) => v.setBigUint64(FRAME_FIXED_BYTES + 8 * i, BigInt(d), true))
  const end = FRAME_FIXED_BYTES + 8 * h.shape.length
  v.setBigUint64(end, checksum64(bytes.subarray(0, end)), true)
  return bytes
}

function checkTag(tag: number): void {
  if (!Number.isInteger(tag) || tag < 0 || tag > 0xffffffff) throw new InvalidArgumentError(`frame tag must be a u32, got ${tag}`)
}

function maxBody(opts: EncodeFrameOptions): number {
  const cap = opts.maxBodyBytes ?? CODEC_LIMITS.maxFrameBodyBytes
  if (!Number.isSafeInteger(cap) || cap < 8 || cap > CODEC_LIMITS.maxFrameBodyBytes) {
    throw new InvalidArgumentError(`maxBodyBytes must be in [8, ${CODEC_LIMITS.maxFrameBodyBytes}], got ${cap}`)
  }
  return cap
}

function checkShape(shape: readonly number[]): number {
  if (shape.length > CODEC_LIMITS.maxTensorRank) throw new InvalidArgumentError(`rank ${shape.length} exceeds ${CODEC_LIMITS.maxTensorRank}`)
  return shapeElements(shape)
}

/**
 * Cuts a dense tensor into frames of at most `maxBodyBytes` body each (at least one frame, even
 * for zero elements). Bodies are views into `t.data`: nothing is copied.
 */
export function encodeTensorFrames(t: TensorView, opts: EncodeFrameOptions = {}): Frame[] {
  const tag = opts.tag ?? 0
  checkTag(tag)
  if (!Object.hasOwn(DTYPE_CODES, t.dtype)) throw new InvalidArgumentError(`unknown dtype ${String(t.dtype)}`)
  const total = checkShape(t.shape)
  const expected = byteLength(t.dtype, total)
  if (t.data.length !== expected) {
    throw new InvalidArgumentError(`${t.dtype}[${t.shape.join(', ')}] needs ${expected} bytes, got ${t.data.length}`)
  }
  // Elements per chunk: whole bytes, and even for i4 so no byte is split between chunks.
  let perChunk = Math.floor((maxBody(opts) * 8) / DTYPE_BITS[t.dtype])
  if (t.dtype === 'i4') perChunk -= perChunk % 2
  const chunkCount = Math.max(1, Math.ceil(total / perChunk))
  checkCap('chunks per tensor', chunkCount, CODEC_LIMITS.maxChunksPerTensor)
  const frames: Frame[] = []
  for (let c = 0; c < chunkCount; c++) {
    const off = c * perChunk
    const count = Math.min(perChunk, total - off)
    const start = byteLength(t.dtype, off)
    const body = t.data.subarray(start, start + byteLength(t.dtype, count))
    const header = writeHeader({
      dtype: t.dtype,
      shape: [...t.shape],
      quantized: false,
      blockSize: 0,
      tag,
      chunkIndex: c,
      chunkCount,
      elementOffset: off,
      elementCount: count,
      bodyBytes: body.length,
      bodyChecksum: checksum64(body)
    })
    frames.push({ header, body })
  }
  return frames
}

/**
 * Cuts a quantized vector into frames; each chunk holds whole blocks (its scales, then its
 * codes). `shape` describes the logical tensor (default: a vector).
 */
export function encodeQuantizedFrames(q: Quantized, opts: EncodeFrameOptions & { shape?: readonly number[] } = {}): Frame[] {
  const tag = opts.tag ?? 0
  checkTag(tag)
  validateQuantOptions(q)
  const shape = opts.shape ?? [q.length]
  if (checkShape(shape) !== q.length) throw new InvalidArgumentError(`shape [${shape.join(', ')}] does not hold ${q.length} elements`)
  const size = quantizedSize(q.length, q)
  if (q.scales.length !== size.blocks || q.data.length !== size.dataBytes) throw new InvalidArgumentError('quantized buffers do not match their length')
  const blockBytes = 4 + (q.bits === 8 ? q.blockSize : q.blockSize / 2)
  const blocksPerChunk = Math.floor(maxBody(opts) / blockBytes)
  if (blocksPerChunk < 1) throw new InvalidArgumentError(`one block (${blockBytes} bytes) does not fit in a ${maxBody(opts)}-byte frame`)
  const perChunk = blocksPerChunk * q.blockSize
  const chunkCount = Math.max(1, Math.ceil(q.length / perChunk))
  checkCap('chunks per tensor', chunkCount, CODEC_LIMITS.maxChunksPerTensor)
  const dtype: DType = q.bits === 8 ? 'i8' : 'i4'
  const frames: Frame[] = []
  for (let c = 0; c < chunkCount; c++) {
    const off = c * perChunk
    const count = Math.min(perChunk, q.length - off)
    const b0 = off / q.blockSize
    const nb = Math.ceil(count / q.blockSize)
    const d0 = byteLength(dtype, off)
    const codes = q.data.subarray(d0, d0 + byteLength(dtype, count))
    const body = new Uint8Array(nb * 4 + codes.length)
    body.set(new Uint8Array(q.scales.buffer, q.scales.byteOffset + b0 * 4, nb * 4), 0)
    body.set(codes, nb * 4)
    const header = writeHeader({
      dtype,
      shape: [...shape],
      quantized: true,
      blockSize: q.blockSize,
      tag,
      chunkIndex: c,
      chunkCount,
      elementOffset: off,
      elementCount: count,
      bodyBytes: body.length,
      bodyChecksum: checksum64(body)
    })
    frames.push({ header, body })
  }
  return frames
}

/** Header + body in one buffer (for transports that want one write). */
export function concatFrame(f: Frame): Uint8Array {
  const out = new Uint8Array(f.header.length + f.body.length)
  out.set(f.header, 0)
  out.set(f.body, f.header.length)
  return out
}

/** Bytes needed to know the header length: through the rank byte. */
const HEADER_PROBE_BYTES = 8

/**
 * Length of the header that starts `bytes`, once at least 8 bytes are present (else
 * undefined). Validates magic, version and rank first, so garbage is refused after 8 bytes.
 */
export function peekHeaderBytes(bytes: Uint8Array): number | undefined {
  if (bytes.length < HEADER_PROBE_BYTES) return undefined
  const v = new DataView(bytes.buffer, bytes.byteOffset, HEADER_PROBE_BYTES)
  if (v.getUint32(0, true) !== FRAME_MAGIC) throw codecError(CodecErrorCode.FRAME_BAD_MAGIC, 'not a tensor frame (bad magic)')
  const version = v.getUint8(4)
  if (version !== FRAME_VERSION) throw codecError(CodecErrorCode.FRAME_BAD_VERSION, `unsupported frame version ${version}`, { version }, 'ignore')
  const rank = v.getUint8(6)
  if (rank > CODEC_LIMITS.maxTensorRank) throw codecError(CodecErrorCode.FRAME_TOO_LARGE, `rank ${rank} exceeds ${CODEC_LIMITS.maxTensorRank}`, { rank })
  return frameHeaderBytes(rank)
}

function u64(v: DataView, off: number, what: string): number {
  const x = v.getBigUint64(off, true)
  if (x > BigInt(Number.MAX_SAFE_INTEGER)) throw codecError(CodecErrorCode.FRAME_BAD_HEADER, `${what} ${x} is too large`)
  return Number(x)
}

/**
 * Decodes and validates a header (checksum first, then every field and their agreement).
 * `bytes` must start with the header; anything after it is ignored here.
 */
export function decodeFrameHeader(bytes: Uint8Array, limits: { maxBodyBytes?: number } = {}): FrameHeader {
  const headerBytes = peekHeaderBytes(bytes)
  if (headerBytes === undefined || bytes.length < headerBytes) {
    throw codecError(CodecErrorCode.FRAME_TRUNCATED, `frame header truncated: have ${bytes.length} bytes, need ${headerBytes ?? HEADER_PROBE_BYTES}`)
  }
  const v = new DataView(bytes.buffer, bytes.byteOffset, headerBytes)
  const end = headerBytes - 8
  if (v.getBigUint64(end, true) !== checksum64(bytes.subarray(0, end))) {
    throw codecError(CodecErrorCode.FRAME_HEADER_CHECKSUM, 'frame header checksum mismatch')
  }
  const dtype = dtypeFromCode(v.getUint8(5))
  if (dtype === undefined) throw codecError(CodecErrorCode.DTYPE_UNKNOWN, `unknown dtype code ${v.getUint8(5)}`)
  const rank = v.getUint8(6)
  const flags = v.getUint8(7)
  if ((flags & ~FLAG_QUANTIZED) !== 0) throw codecError(CodecErrorCode.FRAME_BAD_HEADER, `unknown frame flags 0x${flags.toString(16)}`)
  const quantized = (flags & FLAG_QUANTIZED) !== 0
  const shape: number[] = []
  for (let i = 0; i < rank; i++) shape.push(u64(v, FRAME_FIXED_BYTES + 8 * i, 'dimension'))
  let total = 1
  for (const d of shape) {
    total *= d
    if (!Number.isSafeInteger(total)) throw codecError(CodecErrorCode.FRAME_BAD_HEADER, `shape [${shape.join(', ')}] overflows`)
  }
  const h: FrameHeader = {
    version: v.getUint8(4),
    dtype,
    shape,
    quantized,
    tag: v.getUint32(8, true),
    chunkIndex: v.getUint32(12, true),
    chunkCount: v.getUint32(16, true),
    blockSize: v.getUint32(20, true),
    elementOffset: u64(v, 24, 'element offset'),
    elementCount: u64(v, 32, 'element count'),
    bodyBytes: u64(v, 40, 'body bytes'),
    bodyChecksum: v.getBigUint64(48, true),
    headerBytes,
    chunkElements: 0
  }
  const cap = limits.maxBodyBytes ?? CODEC_LIMITS.maxFrameBodyBytes
  if (h.bodyBytes > cap)
    throw codecError(CodecErrorCode.FRAME_TOO_LARGE, `frame body of ${h.bodyBytes} bytes exceeds the cap of ${cap}`, { bodyBytes: h.bodyBytes, cap })
  if (h.chunkCount < 1 || h.chunkIndex >= h.chunkCount || h.chunkCount > CODEC_LIMITS.maxChunksPerTensor) {
    throw codecError(CodecErrorCode.CHUNK_MISMATCH, `chunk ${h.chunkIndex} of ${h.chunkCount} is not valid`)
  }
  h.chunkElements = checkChunkLayout(h, total)
  let expectedBody: number
  if (quantized) {
    if (dtype !== 'i8' && dtype !== 'i4') throw codecError(CodecErrorCode.DTYPE_MISMATCH, `a quantized frame must be i8 or i4, got ${dtype}`)
    const opts = { bits: (dtype === 'i8' ? 8 : 4) as QuantBits, blockSize: h.blockSize }
    try {
      validateQuantOptions(opts)
    } catch (err) {
      throw codecError(CodecErrorCode.QUANT_INVALID, (err as Error).message)
    }
    if (h.elementOffset % h.blockSize !== 0)
      throw codecError(CodecErrorCode.CHUNK_MISMATCH, `quantized chunk offset ${h.elementOffset} is not on a block boundary`)
    const s = quantizedSize(h.elementCount, opts)
    expectedBody = s.scaleBytes + s.dataBytes
  } else {
    if (h.blockSize !== 0) throw codecError(CodecErrorCode.FRAME_BAD_HEADER, 'block size set on an unquantized frame')
    if (dtype === 'i4' && h.elementOffset % 2 !== 0) throw codecError(CodecErrorCode.CHUNK_MISMATCH, 'i4 chunk offset must be even')
    expectedBody = byteLength(dtype, h.elementCount)
  }
  if (h.bodyBytes !== expectedBody) {
    throw codecError(
      CodecErrorCode.LENGTH_MISMATCH,
      `${h.elementCount} ${quantized ? 'quantized ' : ''}${dtype} elements need ${expectedBody} body bytes, header says ${h.bodyBytes}`
    )
  }
  return h
}

/**
 * Decodes one complete frame held in `bytes` (header immediately followed by body, nothing
 * after). Verifies the body checksum. The returned body is a view into `bytes`.
 */
export function decodeFrame(bytes: Uint8Array, limits: { maxBodyBytes?: number } = {}): DecodedFrame {
  const header = decodeFrameHeader(bytes, limits)
  const need = header.headerBytes + header.bodyBytes
  if (bytes.length < need) throw codecError(CodecErrorCode.FRAME_TRUNCATED, `frame truncated: have ${bytes.length} bytes, need ${need}`)
  if (bytes.length > need) throw codecError(CodecErrorCode.FRAME_TRAILING_BYTES, `${bytes.length - need} bytes after the frame`)
  const body = bytes.subarray(header.headerBytes, need)
  verifyBody(header, body)
  return { header, body }
}

/**
 * Chunks are laid out canonically: every chunk but the last holds P elements and chunk i starts
 * at i * P. Each frame proves its own place, so an assembler needs no overlap search: equal P
 * and distinct indices mean the chunks tile the tensor exactly. Returns P.
 */
function checkChunkLayout(h: FrameHeader, total: number): number {
  const last = h.chunkCount - 1
  let p: number
  if (last === 0) p = total
  else if (h.chunkIndex < last) p = h.elementCount
  else p = h.elementOffset / last
  const ok =
    h.chunkCount === 1
      ? h.elementOffset === 0 && h.elementCount === total
      : Number.isSafeInteger(p) &&
        p >= 1 &&
        h.elementOffset === h.chunkIndex * p &&
        Math.ceil(total / p) === h.chunkCount &&
        h.elementCount === Math.min(p, total - h.elementOffset)
  if (!ok) {
    throw codecError(
      CodecErrorCode.CHUNK_MISMATCH,
      `chunk ${h.chunkIndex} of ${h.chunkCount} at [${h.elementOffset}, +${h.elementCount}) does not tile a tensor of ${total} elements`
    )
  }
  return p
}

function verifyBody(header: FrameHeader, body: Uint8Array): void {
  if (checksum64(body) !== header.bodyChecksum)
    throw codecError(CodecErrorCode.FRAME_BODY_CHECKSUM, 'frame body checksum mismatch', { tag: header.tag, chunk: header.chunkIndex })
}

/** Views a quantized frame's body as a {@link Quantized} chunk (scales copied to align them). */
export function quantizedChunk(frame: DecodedFrame): Quantized {
  const h = frame.header
  if (!h.quantized) throw codecError(CodecErrorCode.DTYPE_MISMATCH, 'frame is not quantized')
  const opts = { bits: (h.dtype === 'i8' ? 8 : 4) as QuantBits, blockSize: h.blockSize }
  const s = quantizedSize(h.elementCount, opts)
  const scales = new Float32Array(s.blocks)
  new Uint8Array(scales.buffer).set(frame.body.subarray(0, s.scaleBytes))
  const q: Quantized = { ...opts, length: h.elementCount, scales, data: frame.body.subarray(s.scaleBytes) }
  validateQuantized(q)
  return q
}

/**
 * Incremental frame decoder for byte streams. Buffers at most one frame (bounded by
 * maxBodyBytes + header, allocated once per frame after its header is verified) and yields each
 * frame once its body checksum is verified. A frame that arrives whole inside one pushed chunk
 * is returned as a view of that chunk (zero-copy), so callers must not reuse pushed buffers.
 * After an error the reader is poisoned: a stream that sent one bad frame is not trusted again.
 */
export class FrameReader {
  private buf: Uint8Array = new Uint8Array(frameHeaderBytes(CODEC_LIMITS.maxTensorRank))
  private len = 0
  private header: FrameHeader | undefined
  private failed: Error | undefined
  private readonly maxBodyBytes: number

  constructor(limits: { maxBodyBytes?: number } = {}) {
    this.maxBodyBytes = limits.maxBodyBytes ?? CODEC_LIMITS.maxFrameBodyBytes
    checkCap('frame reader body cap', this.maxBodyBytes, CODEC_LIMITS.maxFrameBodyBytes)
  }

  /** Bytes held waiting for the rest of a frame. */
  get buffered(): number {
    return this.len
  }

  /** Feeds bytes; returns every frame completed by them. */
  push(chunk: Uint8Array): DecodedFrame[] {
    if (this.failed !== undefined) throw this.failed
    const out: DecodedFrame[] = []
    try {
      let pos = 0
      while (pos < chunk.length) {
        if (this.len === 0) {
          const whole = this.wholeFrameAt(chunk, pos)
          if (whole !== undefined) {
            out.push(whole)
            pos += whole.header.headerBytes + whole.header.bodyBytes
            continue
          }
        }
        pos = this.buffer(chunk, pos, out)
      }
    } catch (err) {
      this.failed = err as Error
      throw err
    }
    return out
  }

  /** Throws FRAME_TRUNCATED if the stream ended inside a frame. */
  end(): void {
    if (this.failed !== undefined) throw this.failed
    if (this.len > 0) throw codecError(CodecErrorCode.FRAME_TRUNCATED, `stream ended inside a frame (${this.len} bytes buffered)`)
  }

  /** The frame starting at `pos` if `chunk` holds all of it, verified, as a view. */
  private wholeFrameAt(chunk: Uint8Array, pos: number): DecodedFrame | undefined {
    const rest = chunk.subarray(pos)
    const hb = peekHeaderBytes(rest)
    if (hb === undefined || rest.length < hb) return undefined
    const header = decodeFrameHeader(rest, { maxBodyBytes: this.maxBodyBytes })
    if (rest.length < hb + header.bodyBytes) return undefined
    const body = rest.subarray(hb, hb + header.bodyBytes)
    verifyBody(header, body)
    return { header, body }
  }

  /** Copies what the current partial frame still needs; returns the new position in `chunk`. */
  private buffer(chunk: Uint8Array, pos: number, out: DecodedFrame[]): number {
    const h = this.header
    const need =
      h !== undefined ? h.headerBytes + h.bodyBytes : this.len >= HEADER_PROBE_BYTES ? peekHeaderBytes(this.buf.subarray(0, this.len))! : HEADER_PROBE_BYTES
    const take = Math.min(need - this.len, chunk.length - pos)
    this.buf.set(chunk.subarray(pos, pos + take), this.len)
    this.len += take
    pos += take
    if (this.len < need) return pos
    if (h === undefined) {
      if (need === HEADER_PROBE_BYTES) {
        // Validate magic, version and rank as soon as they are here.
        peekHeaderBytes(this.buf.subarray(0, this.len))
        return pos
      }
      const header = decodeFrameHeader(this.buf.subarray(0, this.len), { maxBodyBytes: this.maxBodyBytes })
      this.header = header
      // The header is verified and its body within the cap: now allocate the frame, once.
      const frame = new Uint8Array(header.headerBytes + header.bodyBytes)
      frame.set(this.buf.subarray(0, this.len))
      this.buf = frame
      if (header.bodyBytes > 0) return pos
    }
    const header = this.header!
    const body = this.buf.subarray(header.headerBytes, header.headerBytes + header.bodyBytes)
    verifyBody(header, body)
    out.push({ header, body })
    // The body now belongs to the caller; start the next frame in a fresh small buffer.
    this.buf = new Uint8Array(frameHeaderBytes(CODEC_LIMITS.maxTensorRank))
    this.header = undefined
    this.len = 0
    return pos
  }
}

/** What an assembler expects (anything omitted is taken from the first frame). */
export interface AssemblerInit {
  dtype?: DType
  shape?: readonly number[]
  tag?: number
  /** Cap on the whole tensor; default CODEC_LIMITS.maxTensorBytes. */
  maxTensorBytes?: number
}

/**
 * Reassembles the frames of one dense tensor, in any order. Checks that every frame agrees on
 * dtype, shape, tag and chunk layout, that no chunk repeats (the canonical layout then rules
 * out overlaps and gaps), and that the
 * tensor fits the cap before allocating it.
 */
export class TensorAssembler {
  private readonly init: AssemblerInit
  private data: Uint8Array | undefined
  private first: FrameHeader | undefined
  private readonly seen = new Set<number>()

  constructor(init: AssemblerInit = {}) {
    this.init = init
  }

  /** Adds one decoded frame; returns the tensor when the last chunk arrives. */
  add(frame: DecodedFrame): TensorView | undefined {
    const h = frame.header
    if (h.quantized) throw codecError(CodecErrorCode.DTYPE_MISMATCH, 'TensorAssembler takes dense frames; use quantizedChunk for quantized ones')
    const want = this.first ?? this.init
    if (want.dtype !== undefined && want.dtype !== h.dtype) {
      throw codecError(CodecErrorCode.DTYPE_MISMATCH, `expected dtype ${want.dtype}, frame has ${h.dtype}`, { expected: want.dtype, got: h.dtype })
    }
    if (want.shape !== undefined && (want.shape.length !== h.shape.length || want.shape.some((d, i) => d !== h.shape[i]))) {
      throw codecError(CodecErrorCode.SHAPE_MISMATCH, `expected shape [${want.shape.join(', ')}], frame has [${h.shape.join(', ')}]`, {
        expected: want.shape,
        got: h.shape
      })
    }
    if (want.tag !== undefined && want.tag !== h.tag) throw codecError(CodecErrorCode.CHUNK_MISMATCH, `expected tag ${want.tag}, frame has ${h.tag}`)
    if (this.first !== undefined && (this.first.chunkCount !== h.chunkCount || this.first.chunkElements !== h.chunkElements)) {
      throw codecError(CodecErrorCode.CHUNK_MISMATCH, 'chunk layout changed between frames')
    }
    if (this.seen.has(h.chunkIndex)) throw codecError(CodecErrorCode.CHUNK_MISMATCH, `chunk ${h.chunkIndex} received twice`, { chunk: h.chunkIndex }, 'ignore')
    if (this.first === undefined) {
      const total = h.shape.reduce((a, b) => a * b, 1)
      const bytes = byteLength(h.dtype, total)
      checkCap('tensor bytes', bytes, this.init.maxTensorBytes ?? CODEC_LIMITS.maxTensorBytes)
      this.first = h
      this.data = new Uint8Array(bytes)
    }
    this.seen.add(h.chunkIndex)
    this.data!.set(frame.body, byteLength(h.dtype, h.elementOffset))
    if (this.seen.size < h.chunkCount) return undefined
    return { dtype: h.dtype, shape: h.shape, data: this.data! }
  }
}
