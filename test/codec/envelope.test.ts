import test from 'ava'
import { z } from 'zod'
import { Packr } from 'msgpackr'
import { createEnvelopeCodec, zBytes, CODEC_LIMITS } from '../../codec/index.ts'
import { ProtocolError } from '../../core/index.ts'
import { seededRng } from '../helpers/seed.ts'
import { protocolCode } from '../helpers/bytes.ts'

const codec = createEnvelopeCodec({
  heartbeat: z.strictObject({ step: z.int().nonnegative(), zone: z.string().max(64), healthy: z.boolean() }),
  manifest: z.strictObject({ owner: z.int(), hashes: z.array(zBytes(32)).max(255), note: z.string().optional() })
})
const raw = new Packr({ useRecords: false, mapsAsObjects: true, variableMapSize: true })

test('envelopes round-trip per type with binary fields', t => {
  const hb = codec.decode(codec.encode('heartbeat', { step: 12, zone: 'eu-1', healthy: true }))
  t.deepEqual(hb, { type: 'heartbeat', payload: { step: 12, zone: 'eu-1', healthy: true } })
  const hashes = [new Uint8Array(32).fill(1), new Uint8Array(0)]
  const m = codec.decode(codec.encode('manifest', { owner: 3, hashes }))
  t.is(m.type, 'manifest')
  if (m.type === 'manifest') {
    t.is(m.payload.owner, 3)
    t.deepEqual(
      m.payload.hashes.map(h => Array.from(h)),
      hashes.map(h => Array.from(h))
    )
  }
  t.deepEqual(codec.types, ['heartbeat', 'manifest'])
})

test('unknown payload keys, unknown types, wrong versions and extra top-level keys are rejected', t => {
  t.is(
    protocolCode(() => codec.decode(raw.pack({ v: 1, t: 'heartbeat', p: { step: 1, zone: 'a', healthy: true, extra: 1 } }))),
    'ENVELOPE_SCHEMA'
  )
  t.is(
    protocolCode(() => codec.decode(raw.pack({ v: 1, t: 'heartbeat', p: { step: -1, zone: 'a', healthy: true } }))),
    'ENVELOPE_SCHEMA'
  )
  t.is(
    protocolCode(() => codec.decode(raw.pack({ v: 1, t: 'heartbeat', p: { step: 1.5, zone: 'a', healthy: true } }))),
    'ENVELOPE_SCHEMA'
  )
  t.is(
    protocolCode(() => codec.decode(raw.pack({ v: 1, t: 'manifest', p: { owner: 1, hashes: [new Uint8Array(33)] } }))),
    'ENVELOPE_SCHEMA'
  )
  const unknown = t.throws(() => codec.decode(raw.pack({ v: 1, t: 'gossip', p: {} })), { instanceOf: ProtocolError })
  t.is(unknown.code, 'ENVELOPE_UNKNOWN_TYPE')
  t.is(unknown.action, 'ignore', 'a newer peer may know more types')
  t.is(
    protocolCode(() => codec.decode(raw.pack({ v: 1, t: 'toString', p: {} }))),
    'ENVELOPE_UNKNOWN_TYPE',
    'prototype names are not types'
  )
  t.is(
    protocolCode(() => codec.decode(raw.pack({ v: 2, t: 'heartbeat', p: {} }))),
    'ENVELOPE_VERSION'
  )
  t.is(
    protocolCode(() => codec.decode(raw.pack({ v: 1, t: 'heartbeat', p: { step: 1, zone: 'a', healthy: true }, x: 0 }))),
    'ENVELOPE_MALFORMED'
  )
  t.is(
    protocolCode(() => codec.decode(raw.pack([1, 'heartbeat', {}]))),
    'ENVELOPE_MALFORMED'
  )
  t.is(
    protocolCode(() => codec.decode(raw.pack('hello'))),
    'ENVELOPE_MALFORMED'
  )
  t.is(
    protocolCode(() => codec.decode(new Uint8Array(0))),
    'ENVELOPE_MALFORMED'
  )
})

test('encode validates payloads and schemas must be strict', t => {
  t.throws(() => codec.encode('heartbeat', { step: -3, zone: 'a', healthy: true }), { name: 'InvalidArgumentError' })
  t.throws(() => codec.encode('nope' as 'heartbeat', { step: 1, zone: 'a', healthy: true }), { name: 'InvalidArgumentError' })
  t.throws(() => createEnvelopeCodec({ loose: z.object({ a: z.int() }) }), { name: 'InvalidArgumentError' })
  t.throws(() => createEnvelopeCodec({}, { maxBytes: CODEC_LIMITS.maxEnvelopeBytes + 1 }), { name: 'InvalidArgumentError' })
  const tiny = createEnvelopeCodec({ s: z.strictObject({ s: z.string() }) }, { maxBytes: 32 })
  t.throws(() => tiny.encode('s', { s: 'x'.repeat(100) }), { name: 'LimitExceededError' })
})

test('every truncation and every bit flip of an envelope is either valid or a typed error', t => {
  const bytes = codec.encode('manifest', { owner: 7, hashes: [new Uint8Array(4).fill(9)], note: 'hi' })
  for (let len = 0; len < bytes.length; len++) {
    t.not(
      protocolCode(() => codec.decode(bytes.subarray(0, len))),
      'ok',
      `prefix of ${len}`
    )
  }
  let rejected = 0
  for (let bit = 0; bit < bytes.length * 8; bit++) {
    const bad = bytes.slice()
    bad[bit >> 3]! ^= 1 << (bit & 7)
    if (protocolCode(() => codec.decode(bad)) !== 'ok') rejected++
  }
  t.true(rejected > bytes.length * 4, `${rejected} of ${bytes.length * 8} flips rejected; the rest decoded to schema-valid messages`)
})

test('random bytes never crash the envelope decoder', t => {
  const { rng } = seededRng(t, 31)
  for (let i = 0; i < 20_000; i++) {
    const bytes = rng.fill(new Uint8Array(rng.int(0, 64)))
    if (i % 2 === 0) bytes[0] = 0x83 // a 3-entry map, to get further in
    protocolCode(() => codec.decode(bytes))
  }
  t.pass()
})
