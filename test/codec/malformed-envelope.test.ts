import test from 'ava'
import { z } from 'zod'
import { createEnvelopeCodec, scanMsgpack, CODEC_LIMITS } from '../../codec/index.ts'
import { protocolCode } from '../helpers/bytes.ts'

const codec = createEnvelopeCodec({ any: z.strictObject({ x: z.unknown() }) })
const codeOf = (bytes: Uint8Array): string => protocolCode(() => codec.decode(bytes))
const u8 = (...parts: Array<number | number[] | Uint8Array>): Uint8Array => new Uint8Array(parts.flatMap(p => (typeof p === 'number' ? [p] : Array.from(p))))
// {v:1, t:'any', p:{x: <value>}} with the value's bytes spliced in.
const wrap = (value: Uint8Array): Uint8Array => u8(0x83, 0xa1, 0x76, 0x01, 0xa1, 0x74, 0xa3, 0x61, 0x6e, 0x79, 0xa1, 0x70, 0x81, 0xa1, 0x78, value)

test('the wrapper itself decodes (so the cases below fail for their own reason)', t => {
  t.deepEqual(codec.decode(wrap(u8(0x2a))), { type: 'any', payload: { x: 42 } })
})

test('an envelope over the size cap is refused before decoding (limit: maxEnvelopeBytes)', t => {
  t.is(codeOf(new Uint8Array(CODEC_LIMITS.maxEnvelopeBytes + 1)), 'ENVELOPE_TOO_LARGE')
})

test('array32 / map32 / str32 / bin32 length bombs are refused without allocating', t => {
  const before = process.memoryUsage().arrayBuffers + process.memoryUsage().heapUsed
  for (const bomb of [
    u8(0xdd, 0xff, 0xff, 0xff, 0xff),
    u8(0xdf, 0x7f, 0xff, 0xff, 0xff),
    u8(0xdb, 0xff, 0xff, 0xff, 0xf0),
    u8(0xc6, 0xff, 0xff, 0xff, 0xf0),
    u8(0xdc, 0xff, 0xff)
  ]) {
    t.is(codeOf(wrap(bomb)), 'ENVELOPE_MALFORMED')
    t.is(codeOf(bomb), 'ENVELOPE_MALFORMED')
  }
  const after = process.memoryUsage().arrayBuffers + process.memoryUsage().heapUsed
  t.true(after - before < 64 * 1024 * 1024, `grew by ${after - before} bytes`)
})

test('a 72 KB nested-array chain is refused by depth, not recursed into (limit: maxEnvelopeDepth)', t => {
  const chain = new Uint8Array(72_000).fill(0x91)
  chain[chain.length - 1] = 0xc0
  t.is(codeOf(wrap(chain)), 'ENVELOPE_MALFORMED')
  const ok = new Uint8Array(CODEC_LIMITS.maxEnvelopeDepth - 2).fill(0x91)
  t.is(codeOf(wrap(u8(ok, 0xc0))), 'ok', 'nesting just under the cap is fine')
  t.is(codeOf(wrap(u8(ok, 0x91, 0x91, 0xc0))), 'ENVELOPE_MALFORMED')
})

test('too many items in total is refused (limit: maxEnvelopeItems)', t => {
  const n = CODEC_LIMITS.maxEnvelopeItems + 1
  const arr = u8(0xdc, (n >> 8) & 0xff, n & 0xff, new Array(n).fill(0xc0))
  t.is(codeOf(wrap(arr)), 'ENVELOPE_MALFORMED')
})

test('ext types, reserved bytes, non-string keys, __proto__ keys and trailing bytes are refused', t => {
  t.is(codeOf(wrap(u8(0xd4, 0x01, 0x00))), 'ENVELOPE_MALFORMED', 'fixext')
  t.is(codeOf(wrap(u8(0xc7, 0x01, 0xff, 0x00))), 'ENVELOPE_MALFORMED', 'ext8 / timestamp')
  t.is(codeOf(wrap(u8(0xc1))), 'ENVELOPE_MALFORMED', 'reserved 0xc1')
  t.is(codeOf(wrap(u8(0x81, 0x01, 0x02))), 'ENVELOPE_MALFORMED', 'integer map key')
  t.is(codeOf(wrap(u8(0x81, 0xa9, Array.from(Buffer.from('__proto__')), 0x80))), 'ENVELOPE_MALFORMED', '__proto__ key')
  t.is(codeOf(u8(wrap(u8(0x01)), 0x00)), 'ENVELOPE_MALFORMED', 'trailing byte')
  t.is(codeOf(u8(0xcb, 0, 0, 0)), 'ENVELOPE_MALFORMED', 'truncated float64')
})

test('scanMsgpack accepts what msgpackr writes for ordinary values', t => {
  const lim = { maxDepth: 16, maxItems: 1000 }
  for (const b of [u8(0xc0), u8(0xcf, 0, 0, 0, 0, 0, 0, 0, 1), u8(0x92, 0xa1, 0x61, 0xc4, 0x02, 1, 2), u8(0x80), u8(0x90), u8(0xe0)]) {
    t.notThrows(() => scanMsgpack(b, lim))
  }
})
