import { Packr } from 'msgpackr'
import { z } from 'zod'
import { InvalidArgumentError, checkCap } from '../core/index.ts'
import { codecError, CodecErrorCode } from './errors.ts'
import { CODEC_LIMITS } from './limits.ts'
import { scanMsgpack } from './msgpack-scan.ts'

/**
 * Control-message envelopes: msgpack maps `{ v, t, p }` = (version, type tag, payload), one
 * strict zod schema per type. Decoding caps the size before touching the bytes, pre-scans the
 * msgpack structure (depth, item counts, claimed lengths), unpacks, and validates: unknown
 * top-level keys, unknown types and unknown payload keys are all rejected.
 *
 * Envelopes are for small control messages only; tensors travel as frames (frame.ts).
 */
export const ENVELOPE_VERSION = 1

/** Map of type tag -> strict object schema. */
export type EnvelopeSchemas = Record<string, z.ZodObject>

/** A decoded envelope: discriminated by `type`. */
export type Envelope<S extends EnvelopeSchemas> = {
  [T in keyof S & string]: { type: T; payload: z.output<S[T]> }
}[keyof S & string]

export interface EnvelopeCodec<S extends EnvelopeSchemas> {
  /** Validates `payload` against the type's schema and packs it. */
  encode<T extends keyof S & string>(type: T, payload: z.input<S[T]>): Uint8Array
  /** Checks size, structure, version, type and schema; throws a ProtocolError on any failure. */
  decode(bytes: Uint8Array): Envelope<S>
  /** The type tags this codec knows. */
  readonly types: readonly string[]
}

export interface EnvelopeCodecInit {
  /** Largest encoded envelope, default CODEC_LIMITS.maxEnvelopeBytes (which is also the maximum). */
  maxBytes?: number
}

const packr = new Packr({ useRecords: false, moreTypes: false, mapsAsObjects: true, bundleStrings: false, variableMapSize: true })

function isStrict(schema: z.ZodObject): boolean {
  return schema._zod.def.catchall?._zod.def.type === 'never'
}

/**
 * Builds a codec for a fixed set of message types. Each schema must be a `z.strictObject`
 * (so unknown keys are rejected); anything else is a programmer error.
 */
export function createEnvelopeCodec<S extends EnvelopeSchemas>(schemas: S, init: EnvelopeCodecInit = {}): EnvelopeCodec<S> {
  const maxBytes = init.maxBytes ?? CODEC_LIMITS.maxEnvelopeBytes
  if (!Number.isSafeInteger(maxBytes) || maxBytes < 16 || maxBytes > CODEC_LIMITS.maxEnvelopeBytes) {
    throw new InvalidArgumentError(`envelope maxBytes must be in [16, ${CODEC_LIMITS.maxEnvelopeBytes}], got ${maxBytes}`)
  }
  for (const [type, schema] of Object.entries(schemas)) {
    if (!(schema instanceof z.ZodObject) || !isStrict(schema)) throw new InvalidArgumentError(`schema for envelope type '${type}' must be a z.strictObject`)
  }
  const types = Object.freeze(Object.keys(schemas))

  return {
    types,
    encode(type, payload) {
      const schema = schemas[type]
      if (schema === undefined) throw new InvalidArgumentError(`unknown envelope type '${type}'`)
      const checked = schema.safeParse(payload)
      if (!checked.success) throw new InvalidArgumentError(`envelope '${type}' payload is invalid: ${z.prettifyError(checked.error)}`)
      const bytes = packr.pack({ v: ENVELOPE_VERSION, t: type, p: checked.data })
      checkCap(`envelope '${type}' bytes`, bytes.length, maxBytes)
      return bytes
    },
    decode(bytes) {
      if (bytes.length > maxBytes) {
        throw codecError(CodecErrorCode.ENVELOPE_TOO_LARGE, `envelope of ${bytes.length} bytes exceeds the cap of ${maxBytes}`, {
          bytes: bytes.length,
          cap: maxBytes
        })
      }
      scanMsgpack(bytes, { maxDepth: CODEC_LIMITS.maxEnvelopeDepth, maxItems: CODEC_LIMITS.maxEnvelopeItems })
      let raw: unknown
      try {
        raw = packr.unpack(bytes)
      } catch (err) {
        throw codecError(CodecErrorCode.ENVELOPE_MALFORMED, `envelope does not unpack: ${(err as Error).message}`)
      }
      if (raw === null || typeof raw !== 'object' || Array.isArray(raw) || ArrayBuffer.isView(raw)) {
        throw codecError(CodecErrorCode.ENVELOPE_MALFORMED, 'envelope is not a map')
      }
      const obj = raw as Record<string, unknown>
      const keys = Object.keys(obj)
      if (keys.length !== 3 || !('v' in obj) || !('t' in obj) || !('p' in obj)) {
        throw codecError(CodecErrorCode.ENVELOPE_MALFORMED, `envelope keys must be exactly v, t, p; got ${keys.slice(0, 8).join(', ')}`)
      }
      if (obj.v !== ENVELOPE_VERSION) {
        throw codecError(CodecErrorCode.ENVELOPE_VERSION, `unsupported envelope version ${String(obj.v)}`, { version: obj.v }, 'ignore')
      }
      const type = obj.t
      if (typeof type !== 'string' || !Object.hasOwn(schemas, type)) {
        throw codecError(CodecErrorCode.ENVELOPE_UNKNOWN_TYPE, `unknown envelope type ${JSON.stringify(type)?.slice(0, 64)}`, {}, 'ignore')
      }
      const parsed = schemas[type]!.safeParse(obj.p)
      if (!parsed.success) {
        const issue = parsed.error.issues[0]
        throw codecError(
          CodecErrorCode.ENVELOPE_SCHEMA,
          `envelope '${type}' payload invalid at '${issue?.path.join('.') ?? ''}': ${issue?.message ?? 'invalid'}`,
          { type }
        )
      }
      return { type, payload: parsed.data } as Envelope<S>
    }
  }
}

/** Zod helper: a byte string of at most `max` bytes (msgpack bin decodes to a Uint8Array). */
export function zBytes(max: number): z.ZodType<Uint8Array> {
  return z.custom<Uint8Array>(v => v instanceof Uint8Array, { message: 'expected bytes' }).refine(b => b.length <= max, { message: `at most ${max} bytes` })
}
