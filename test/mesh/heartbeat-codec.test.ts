import test from 'ava'
import { ProtocolError } from '../../core/index.ts'
import { decodeHeartbeat, encodeHeartbeat, HB_BYTES, HeartbeatCodec, type Heartbeat } from '../../mesh/membership/index.ts'

// The 44-byte heartbeat: golden bytes (the wire format must not drift), round trips, and every
// malformed shape rejected with a ProtocolError.

const hb: Heartbeat = { inc: 1765000000000, seq: 2, epoch: 3, step: 4, sentAt: 1765000000123.5, leaving: true, paused: false }
const GOLDEN = '480101000000202b23af794200000000000000400000000000000840000000000000104000b8272b23af7942'

test('a heartbeat encodes to its golden bytes and decodes back', t => {
  const bytes = encodeHeartbeat(hb)
  t.is(bytes.length, HB_BYTES)
  t.is(Buffer.from(bytes).toString('hex'), GOLDEN)
  t.deepEqual(decodeHeartbeat(bytes), hb)
  const paused = encodeHeartbeat({ inc: 1, seq: 0, epoch: 0, step: 0, sentAt: -0.25, leaving: false, paused: true })
  t.is(Buffer.from(paused).toString('hex'), '48010200000000000000f03f000000000000000000000000000000000000000000000000000000000000d0bf')
})

test('a codec instance encodes the same bytes from fields, and its cache answers for the buffer it decoded last', t => {
  const c = new HeartbeatCodec()
  const bytes = c.encode(hb.inc, hb.seq, hb.epoch, hb.step, hb.sentAt, hb.leaving, hb.paused)
  t.is(Buffer.from(bytes).toString('hex'), GOLDEN)
  const first = c.decodeCached(bytes)
  t.is(c.decodeCached(bytes), first, 'same buffer: the remembered heartbeat')
  const copy = bytes.slice()
  const other = c.decodeCached(copy)
  t.not(other, first, 'another buffer is decoded again')
  t.deepEqual(other, first)
})

test('malformed heartbeats are rejected with MALFORMED_HEARTBEAT', t => {
  const good = encodeHeartbeat(hb)
  const bad = (mutate: (b: Uint8Array) => Uint8Array, why: string): void => {
    const err = t.throws(() => decodeHeartbeat(mutate(good.slice())), { instanceOf: ProtocolError }, why)
    t.is(err?.code, 'MALFORMED_HEARTBEAT', why)
    t.is(err?.action, 'reject', why)
  }
  bad(b => b.subarray(0, 43), 'short')
  bad(b => Uint8Array.of(...b, 0), 'long')
  bad(b => {
    b[0] = 0x49
    return b
  }, 'magic')
  bad(b => {
    b[1] = 2
    return b
  }, 'version')
  bad(b => {
    b[2] = 4
    return b
  }, 'unknown flag')
  bad(b => {
    b[3] = 1
    return b
  }, 'reserved byte')
  const field = (i: number, v: number): Uint8Array => {
    const b = good.slice()
    new DataView(b.buffer).setFloat64(4 + 8 * i, v, true)
    return b
  }
  bad(() => field(0, -1), 'negative incarnation')
  bad(() => field(1, 1.5), 'fractional seq')
  bad(() => field(2, 2 ** 53), 'epoch past the safe integers')
  bad(() => field(3, NaN), 'NaN step')
  bad(() => field(4, Infinity), 'infinite sentAt')
  // Positive control: the same helper with a valid value decodes.
  t.is(decodeHeartbeat(field(3, 7)).step, 7)
})
