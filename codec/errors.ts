import { ZeromeshError, protocolCodes } from '../core/index.ts'

/**
 * Stable codes carried by the ProtocolErrors raised in codec/ (`CodecErrorCode.X === 'X'`), and
 * `codecError`, core's protocolError typed to them.
 */
export const { codes: CodecErrorCode, error: codecError } = protocolCodes([
  'ENVELOPE_TOO_LARGE',
  'ENVELOPE_MALFORMED',
  'ENVELOPE_VERSION',
  'ENVELOPE_UNKNOWN_TYPE',
  'ENVELOPE_SCHEMA',
  'FRAME_TRUNCATED',
  'FRAME_TOO_LARGE',
  'FRAME_BAD_MAGIC',
  'FRAME_BAD_VERSION',
  'FRAME_BAD_HEADER',
  'FRAME_HEADER_CHECKSUM',
  'FRAME_BODY_CHECKSUM',
  'FRAME_TRAILING_BYTES',
  'DTYPE_UNKNOWN',
  'DTYPE_MISMATCH',
  'SHAPE_MISMATCH',
  'LENGTH_MISMATCH',
  'CHUNK_MISMATCH',
  'QUANT_INVALID',
  'FRAGMENT_MALFORMED',
  'FRAGMENT_CHECKSUM',
  'FRAGMENT_MISMATCH'
])
export type CodecErrorCodeT = keyof typeof CodecErrorCode

/**
 * Quantization input held NaN or ±Inf. Reported, never smeared into a block scale: a gradient
 * that overflowed must stop the step, not silently zero a block.
 */
export class NonFiniteError extends ZeromeshError {
  static override name = 'NonFiniteError'
  readonly index: number
  readonly value: number
  readonly count: number

  constructor(index: number, value: number, count: number) {
    super(`non-finite value ${value} at element ${index} (${count} non-finite in total)`, { index, value, count })
    this.index = index
    this.value = value
    this.count = count
  }
}

/**
 * Fewer than k usable fragments of a stripe: the payload cannot be rebuilt. Names what is
 * missing and what was rejected as corrupt.
 */
export class TooFewFragmentsError extends ZeromeshError {
  static override name = 'TooFewFragmentsError'
  readonly k: number
  readonly m: number
  readonly present: number[]
  readonly missing: number[]
  readonly corrupt: number[]

  constructor(k: number, m: number, present: number[], missing: number[], corrupt: number[] = []) {
    super(
      `need ${k} of ${k + m} fragments, have ${present.length}: missing [${missing.join(', ')}]` +
        (corrupt.length > 0 ? `, corrupt [${corrupt.join(', ')}]` : ''),
      { k, m, present, missing, corrupt }
    )
    this.k = k
    this.m = m
    this.present = present
    this.missing = missing
    this.corrupt = corrupt
  }
}
