import { ProtocolError } from '../../core/index.ts'

/**
 * Heartbeats are the most frequent message (N per period), so they skip the envelope codec:
 * a fixed 44-byte record, 'H', version 1, flags (bit 0 leaving, bit 1 paused), a zero byte,
 * then inc, seq, epoch, step and sentAt as little-endian f64 (the integers must be safe
 * non-negative integers, sentAt finite).
 */
export interface Heartbeat {
  inc: number
  seq: number
  epoch: number
  step: number
  sentAt: number
  leaving: boolean
  paused: boolean
}

/** The size of every heartbeat on the wire. */
export const HB_BYTES = 44
const HB_MAGIC = 0x48
const HB_VERSION = 1
const FIELDS_AT = 4
const hostLittleEndian = new Uint8Array(Uint16Array.of(1).buffer)[0] === 1

/**
 * Encodes and decodes heartbeats through one scratch buffer of five f64 (no DataView per
 * heartbeat: heartbeats are encoded and decoded millions of times in a large simulation), and
 * remembers the last buffer it decoded: validation and delivery see the same buffer back to
 * back, and an in-process network hands one gossip buffer to every receiver. Float64Array is
 * host-endian; on a big-endian host the fields go through a DataView instead. Not reentrant
 * across awaits (nothing here awaits).
 */
export class HeartbeatCodec {
  private readonly fields = new Float64Array(5)
  private readonly fieldBytes = new Uint8Array(this.fields.buffer)
  private readonly dv = new DataView(this.fields.buffer)
  private lastBytes: Uint8Array | undefined = undefined
  private last: Heartbeat | undefined = undefined

  /** {@link encodeHeartbeat} from the fields (a node's tick makes no Heartbeat object). */
  encode(inc: number, seq: number, epoch: number, step: number, sentAt: number, leaving: boolean, paused: boolean): Uint8Array {
    const out = new Uint8Array(HB_BYTES)
    out[0] = HB_MAGIC
    out[1] = HB_VERSION
    out[2] = (leaving ? 1 : 0) | (paused ? 2 : 0)
    const f = this.fields
    if (hostLittleEndian) {
      f[0] = inc
      f[1] = seq
      f[2] = epoch
      f[3] = step
      f[4] = sentAt
    } else {
      const dv = this.dv
      dv.setFloat64(0, inc, true)
      dv.setFloat64(8, seq, true)
      dv.setFloat64(16, epoch, true)
      dv.setFloat64(24, step, true)
      dv.setFloat64(32, sentAt, true)
    }
    out.set(this.fieldBytes, FIELDS_AT)
    return out
  }

  /** Decodes a heartbeat; ProtocolError (action 'reject') for anything malformed. */
  decode(data: Uint8Array): Heartbeat {
    if (data.length !== HB_BYTES) throw badHeartbeat(`${data.length} bytes, want ${HB_BYTES}`)
    if (data[0] !== HB_MAGIC || data[1] !== HB_VERSION) throw badHeartbeat('wrong magic or version')
    const flags = data[2]!
    if (flags > 3 || data[3] !== 0) throw badHeartbeat('unknown flags')
    const bytes = this.fieldBytes
    for (let i = 0; i < 40; i++) bytes[i] = data[FIELDS_AT + i]!
    const f = this.fields
    const dv = this.dv
    const le = hostLittleEndian
    const inc = le ? f[0]! : dv.getFloat64(0, true)
    const seq = le ? f[1]! : dv.getFloat64(8, true)
    const epoch = le ? f[2]! : dv.getFloat64(16, true)
    const step = le ? f[3]! : dv.getFloat64(24, true)
    const sentAt = le ? f[4]! : dv.getFloat64(32, true)
    if (!isCount(inc) || !isCount(seq) || !isCount(epoch) || !isCount(step)) throw badHeartbeat('inc, seq, epoch and step must be non-negative integers')
    if (!Number.isFinite(sentAt)) throw badHeartbeat('sentAt is not finite')
    return { inc, seq, epoch, step, sentAt, leaving: (flags & 1) !== 0, paused: (flags & 2) !== 0 }
  }

  /** {@link decode}, answered from memory when `data` is the buffer decoded last (the result must not be changed). */
  decodeCached(data: Uint8Array): Heartbeat {
    if (data === this.lastBytes && this.last !== undefined) return this.last
    const hb = this.decode(data)
    this.lastBytes = data
    this.last = hb
    return hb
  }
}

/** Encodes a heartbeat as its 44 bytes (see {@link Heartbeat}). */
export function encodeHeartbeat(hb: Heartbeat): Uint8Array {
  return new HeartbeatCodec().encode(hb.inc, hb.seq, hb.epoch, hb.step, hb.sentAt, hb.leaving, hb.paused)
}

/** Decodes a heartbeat; ProtocolError (action 'reject') for anything malformed. */
export function decodeHeartbeat(data: Uint8Array): Heartbeat {
  return new HeartbeatCodec().decode(data)
}

const isCount = (v: number): boolean => Number.isSafeInteger(v) && v >= 0
const badHeartbeat = (why: string): ProtocolError => new ProtocolError('MALFORMED_HEARTBEAT', `malformed heartbeat: ${why}`)
