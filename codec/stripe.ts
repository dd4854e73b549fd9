import { InvalidArgumentError, ProtocolError } from '../core/index.ts'
import { checksum64 } from './checksum.ts'
import type { ErasureCoder } from './erasure.ts'
import { codecError, CodecErrorCode, TooFewFragmentsError } from './errors.ts'
import { CODEC_LIMITS } from './limits.ts'

/**
 * A payload cut into k data fragments plus m parity fragments, each fragment framed with its
 * own checksummed header so a corrupt fragment is caught *before* it reaches the decoder and
 * is treated as an erasure. Layout of an encoded fragment (little-endian):
 *
 *    0  u32 magic 'ZMFG'        4 u8 version (1)   5 u8 k   6 u8 m   7 u8 index
 *    8  u64 payload bytes      16 u32 fragment bytes         20 u32 reserved (0)
 *   24  u64 payload checksum (xxh64 of the whole payload, checked after decoding)
 *   32  u64 body checksum      40 u64 header checksum (of bytes [0, 40))
 *   48  body (fragment bytes)
 *
 * Owner rank, snapshot version and epoch are the snapshot layer's labels, carried beside this.
 */
export const FRAGMENT_MAGIC = 0x47464d5a
export const FRAGMENT_VERSION = 1
export const FRAGMENT_HEADER_BYTES = 48

export interface StripeFragment {
  index: number
  k: number
  m: number
  payloadBytes: number
  payloadChecksum: bigint
  data: Uint8Array
}

/** Fragment size for a payload: ceil(bytes / k), at least 1 (the coder refuses empty fragments). */
export function fragmentSize(payloadBytes: number, k: number): number {
  return Math.max(1, Math.ceil(payloadBytes / k))
}

/** Cuts `payload` into k + m fragments with `coder`. */
export function encodeStripe(payload: Uint8Array, coder: ErasureCoder): StripeFragment[] {
  const { k, m } = coder
  const size = fragmentSize(payload.length, k)
  if (size > CODEC_LIMITS.maxFragmentBytes)
    throw new InvalidArgumentError(`payload of ${payload.length} bytes needs ${size}-byte fragments, over the cap of ${CODEC_LIMITS.maxFragmentBytes}`)
  const padded = new Uint8Array(size * k)
  padded.set(payload)
  const data: Uint8Array[] = []
  for (let i = 0; i < k; i++) data.push(padded.subarray(i * size, (i + 1) * size))
  const parity = coder.encode(data)
  const payloadChecksum = checksum64(payload)
  return [...data, ...parity].map((d, index) => ({ index, k, m, payloadBytes: payload.length, payloadChecksum, data: d }))
}

/** Serializes one fragment (header + body). */
export function encodeFragment(f: StripeFragment): Uint8Array {
  const out = new Uint8Array(FRAGMENT_HEADER_BYTES + f.data.length)
  const v = new DataView(out.buffer)
  v.setUint32(0, FRAGMENT_MAGIC, true)
  v.setUint8(4, FRAGMENT_VERSION)
  v.setUint8(5, f.k)
  v.setUint8(6, f.m)
  v.setUint8(7, f.index)
  v.setBigUint64(8, BigInt(f.payloadBytes), true)
  v.setUint32(16, f.data.length, true)
  v.setBigUint64(24, f.payloadChecksum, true)
  v.setBigUint64(32, checksum64(f.data), true)
  v.setBigUint64(40, checksum64(out.subarray(0, 40)), true)
  out.set(f.data, FRAGMENT_HEADER_BYTES)
  return out
}

/** What a caller knows about the stripe (from a manifest); each given field is enforced. */
export interface StripeExpectation {
  k?: number
  m?: number
  index?: number
  payloadBytes?: number
  payloadChecksum?: bigint
}

/**
 * Decodes one fragment, checking header checksum, fields, caps and body checksum in that
 * order. Throws a ProtocolError (FRAGMENT_*) on any problem. The body is a view into `bytes`.
 */
export function decodeFragment(bytes: Uint8Array, expect: StripeExpectation = {}): StripeFragment {
  const bad = (
    code: typeof CodecErrorCode.FRAGMENT_MALFORMED | typeof CodecErrorCode.FRAGMENT_CHECKSUM | typeof CodecErrorCode.FRAGMENT_MISMATCH,
    why: string
  ): never => {
    throw codecError(code, `bad fragment: ${why}`)
  }
  if (bytes.length < FRAGMENT_HEADER_BYTES) bad(CodecErrorCode.FRAGMENT_MALFORMED, `${bytes.length} bytes is shorter than a header`)
  const v = new DataView(bytes.buffer, bytes.byteOffset, FRAGMENT_HEADER_BYTES)
  if (v.getUint32(0, true) !== FRAGMENT_MAGIC) bad(CodecErrorCode.FRAGMENT_MALFORMED, 'bad magic')
  if (v.getBigUint64(40, true) !== checksum64(bytes.subarray(0, 40))) bad(CodecErrorCode.FRAGMENT_CHECKSUM, 'header checksum mismatch')
  if (v.getUint8(4) !== FRAGMENT_VERSION) bad(CodecErrorCode.FRAGMENT_MALFORMED, `unsupported version ${v.getUint8(4)}`)
  const k = v.getUint8(5)
  const m = v.getUint8(6)
  const index = v.getUint8(7)
  const payloadBig = v.getBigUint64(8, true)
  const size = v.getUint32(16, true)
  if (k < 1 || m < 1 || k + m > CODEC_LIMITS.maxErasureTotal || index >= k + m)
    bad(CodecErrorCode.FRAGMENT_MALFORMED, `k=${k} m=${m} index=${index} is not valid`)
  if (v.getUint32(20, true) !== 0) bad(CodecErrorCode.FRAGMENT_MALFORMED, 'reserved field is not zero')
  if (size > CODEC_LIMITS.maxFragmentBytes)
    bad(CodecErrorCode.FRAGMENT_MALFORMED, `fragment of ${size} bytes exceeds the cap of ${CODEC_LIMITS.maxFragmentBytes}`)
  if (payloadBig > BigInt(size) * BigInt(k)) bad(CodecErrorCode.FRAGMENT_MALFORMED, `payload of ${payloadBig} bytes does not fit ${k} fragments of ${size}`)
  const payloadBytes = Number(payloadBig)
  if (size !== fragmentSize(payloadBytes, k))
    bad(CodecErrorCode.FRAGMENT_MALFORMED, `fragment size ${size} does not match a ${payloadBytes}-byte payload over k=${k}`)
  if (bytes.length !== FRAGMENT_HEADER_BYTES + size)
    bad(CodecErrorCode.FRAGMENT_MALFORMED, `expected ${FRAGMENT_HEADER_BYTES + size} bytes, got ${bytes.length}`)
  const f: StripeFragment = { index, k, m, payloadBytes, payloadChecksum: v.getBigUint64(24, true), data: bytes.subarray(FRAGMENT_HEADER_BYTES) }
  for (const key of ['k', 'm', 'index', 'payloadBytes', 'payloadChecksum'] as const) {
    if (expect[key] !== undefined && expect[key] !== f[key]) bad(CodecErrorCode.FRAGMENT_MISMATCH, `${key} is ${f[key]}, expected ${expect[key]}`)
  }
  if (v.getBigUint64(32, true) !== checksum64(f.data)) bad(CodecErrorCode.FRAGMENT_CHECKSUM, `body checksum mismatch (index ${index})`)
  return f
}

/** Result of rebuilding a stripe: the payload and what was wrong with the fragments given. */
export interface DecodedStripe {
  payload: Uint8Array
  /** Fragment indices whose bytes were used. */
  used: number[]
  /** Fragments rejected (treated as erasures): position in the input, index if known, reason. */
  rejected: Array<{ position: number; index: number | undefined; error: ProtocolError }>
}

/**
 * Rebuilds a payload from encoded fragments (any order, any subset, duplicates and garbage
 * allowed). Fragments that fail their checks, disagree with `expect` or with the first valid
 * fragment, or repeat an index are rejected and reported, never decoded. Throws
 * {@link TooFewFragmentsError} when fewer than k remain, and a FRAGMENT_CHECKSUM ProtocolError
 * when the rebuilt payload does not match its checksum (a well-formed lie).
 */
export function decodeStripe(encoded: readonly Uint8Array[], coder: ErasureCoder, expect: StripeExpectation = {}): DecodedStripe {
  const { k, m } = coder
  const want: StripeExpectation = { ...expect, k, m }
  const slots: Array<Uint8Array | undefined> = new Array(k + m).fill(undefined)
  const rejected: DecodedStripe['rejected'] = []
  encoded.forEach((bytes, position) => {
    try {
      const f = decodeFragment(bytes, { ...want, index: undefined })
      if (slots[f.index] !== undefined) {
        throw codecError(CodecErrorCode.FRAGMENT_MISMATCH, `duplicate fragment index ${f.index}`, {}, 'ignore')
      }
      want.payloadBytes = f.payloadBytes
      want.payloadChecksum = f.payloadChecksum
      slots[f.index] = f.data
    } catch (err) {
      if (!(err instanceof ProtocolError)) throw err
      const idx = bytes.length >= 8 ? bytes[7] : undefined
      rejected.push({ position, index: idx, error: err })
    }
  })
  const used = slots.flatMap((s, i) => (s === undefined ? [] : [i]))
  if (used.length < k) {
    const corrupt = rejected.flatMap(r => (r.index === undefined || used.includes(r.index) ? [] : [r.index]))
    throw new TooFewFragmentsError(
      k,
      m,
      used,
      slots.flatMap((s, i) => (s === undefined ? [i] : [])),
      [...new Set(corrupt)]
    )
  }
  const data = coder.reconstruct(slots)
  const size = data[0]!.length
  const payload = new Uint8Array(want.payloadBytes!)
  for (let i = 0; i < k && i * size < payload.length; i++) {
    payload.set(data[i]!.subarray(0, Math.min(size, payload.length - i * size)), i * size)
  }
  if (checksum64(payload) !== want.payloadChecksum) {
    throw codecError(CodecErrorCode.FRAGMENT_CHECKSUM, 'rebuilt payload does not match its checksum: a fragment lied', { used })
  }
  return { payload, used, rejected }
}
