import test from 'ava'
import { LimitExceededError, ProtocolError, Rng } from '../../core/index.ts'
import { decodeState, encodeState, SNAPSHOT_LIMITS, STATE_HEADER_BYTES, stateBytes, verifyState } from '../../snapshot/index.ts'
import { bytesEqual, randomState } from './helpers.ts'

const code = (fn: () => unknown): string => {
  try { fn() } catch (err) { if (err instanceof ProtocolError) return err.code; throw err }
  return 'ok'
}

test('state encodes and decodes every field bit-exactly', t => {
  const s = randomState(Rng.fromSeed(1), 1001, { rank: 3, worldSize: 5, step: 123456789, epoch: 42 })
  const bytes = encodeState(s)
  t.is(bytes.length, STATE_HEADER_BYTES + 32 + 12 * 1001)
  const d = decodeState(bytes)
  for (const key of ['rank', 'worldSize', 'epoch', 'step', 'dataCursor'] as const) t.is(d[key], s[key])
  t.deepEqual(d.rng, s.rng)
  t.true(bytesEqual(new Uint8Array(d.weights.buffer, d.weights.byteOffset, d.weights.byteLength), new Uint8Array(s.weights.buffer)))
  t.deepEqual(d.adamM, s.adamM)
  t.deepEqual(d.adamV, s.adamV)
  // An unaligned copy decodes too (f32 views would be impossible there).
  const odd = new Uint8Array(bytes.length + 1)
  odd.set(bytes, 1)
  t.deepEqual(decodeState(odd.subarray(1)).adamV, s.adamV)
})

test('every flipped byte, truncation and extension of a state is detected', t => {
  const s = randomState(Rng.fromSeed(2), 64)
  const bytes = encodeState(s)
  for (let i = 0; i < bytes.length; i += 7) {
    const bad = bytes.slice()
    bad[i]! ^= 0x10
    t.not(code(() => decodeState(bad)), 'ok', `byte ${i}`)
  }
  t.is(code(() => verifyState(bytes.subarray(0, bytes.length - 4))), 'STATE_MALFORMED')
  t.is(code(() => verifyState(bytes.subarray(0, 10))), 'STATE_MALFORMED')
  const longer = new Uint8Array(bytes.length + 8)
  longer.set(bytes)
  t.is(code(() => verifyState(longer)), 'STATE_MALFORMED')
  const flipped = bytes.slice()
  flipped[STATE_HEADER_BYTES + 40]! ^= 1
  t.is(code(() => verifyState(flipped)), 'STATE_CHECKSUM')
})

test('state caps: rng over maxRngBytes and mismatched buffers are refused before allocating', t => {
  const s = randomState(Rng.fromSeed(3), 8)
  t.throws(() => stateBytes({ ...s, rng: new Uint8Array(SNAPSHOT_LIMITS.maxRngBytes + 1) }), { instanceOf: LimitExceededError })
  t.throws(() => stateBytes({ ...s, adamM: new Float32Array(7) }), { name: 'InvalidArgumentError' })
  t.throws(() => stateBytes({ ...s, rank: 8, worldSize: 8 }), { name: 'InvalidArgumentError' })
  // A header claiming a huge state is refused from its lengths alone.
  const bytes = encodeState(s)
  new DataView(bytes.buffer).setBigUint64(40, 1n << 40n, true)
  t.is(code(() => verifyState(bytes)), 'STATE_MALFORMED')
})
