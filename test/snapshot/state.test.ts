import test from 'ava'
import { LimitExceededError, ProtocolError, Rng } from '../../core/index.ts'
import {
  assembleState,
  assembleStateAsync,
  decodeState,
  encodeState,
  PAUSE_EVERY_BYTES,
  SNAPSHOT_LIMITS,
  STATE_HEADER_BYTES,
  RUN_IDENTITY_BYTES,
  RUN_NONCE_BYTES,
  stateBytes,
  stripeState,
  stripeStateAsync,
  verifyState
} from '../../snapshot/index.ts'
import { createErasureCoder } from '../../codec/index.ts'
import { bytesEqual, randomState } from './helpers.ts'

const code = (fn: () => unknown): string => {
  try {
    fn()
  } catch (err) {
    if (err instanceof ProtocolError) return err.code
    throw err
  }
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

test('a state carries its run identity (32 bytes after the rng); states without one still decode', t => {
  const s = randomState(Rng.fromSeed(2), 64, { rank: 0, worldSize: 2, step: 7, epoch: 1 })
  const identity = new Uint8Array(RUN_IDENTITY_BYTES).map((_, i) => i + 1)
  const bytes = encodeState({ ...s, identity })
  t.is(bytes.length, encodeState(s).length + RUN_IDENTITY_BYTES)
  const d = decodeState(bytes)
  t.deepEqual(d.identity, identity)
  t.deepEqual(d.weights, s.weights)
  t.is(decodeState(encodeState(s)).identity, undefined)
  t.throws(() => encodeState({ ...s, identity: new Uint8Array(5) }), { message: /run identity is 32 bytes/ })
})

test('a state carries its run nonce (16 bytes after the identity), with or without an identity', t => {
  const s = randomState(Rng.fromSeed(3), 64, { rank: 1, worldSize: 2, step: 7, epoch: 1 })
  const identity = new Uint8Array(RUN_IDENTITY_BYTES).fill(9)
  const nonce = new Uint8Array(RUN_NONCE_BYTES).map((_, i) => 100 + i)
  const both = decodeState(encodeState({ ...s, identity, nonce }))
  t.deepEqual(both.identity, identity)
  t.deepEqual(both.nonce, nonce)
  t.deepEqual(both.adamV, s.adamV)
  const alone = encodeState({ ...s, nonce })
  t.is(alone.length, encodeState(s).length + RUN_NONCE_BYTES)
  t.deepEqual(decodeState(alone).nonce, nonce)
  t.is(decodeState(alone).identity, undefined)
  t.throws(() => encodeState({ ...s, nonce: new Uint8Array(8) }), { message: /run nonce is 16 bytes/ })
})

test('every flipped byte, truncation and extension of a state is detected', t => {
  const s = randomState(Rng.fromSeed(2), 64)
  const bytes = encodeState(s)
  for (let i = 0; i < bytes.length; i += 7) {
    const bad = bytes.slice()
    bad[i]! ^= 0x10
    t.not(
      code(() => decodeState(bad)),
      'ok',
      `byte ${i}`
    )
  }
  t.is(
    code(() => verifyState(bytes.subarray(0, bytes.length - 4))),
    'STATE_MALFORMED'
  )
  t.is(
    code(() => verifyState(bytes.subarray(0, 10))),
    'STATE_MALFORMED'
  )
  const longer = new Uint8Array(bytes.length + 8)
  longer.set(bytes)
  t.is(
    code(() => verifyState(longer)),
    'STATE_MALFORMED'
  )
  const flipped = bytes.slice()
  flipped[STATE_HEADER_BYTES + 40]! ^= 1
  t.is(
    code(() => verifyState(flipped)),
    'STATE_CHECKSUM'
  )
})

test('state caps: rng over maxRngBytes and mismatched buffers are refused before allocating', t => {
  const s = randomState(Rng.fromSeed(3), 8)
  t.throws(() => stateBytes({ ...s, rng: new Uint8Array(SNAPSHOT_LIMITS.maxRngBytes + 1) }), { instanceOf: LimitExceededError })
  t.throws(() => stateBytes({ ...s, adamM: new Float32Array(7) }), { name: 'InvalidArgumentError' })
  t.throws(() => stateBytes({ ...s, rank: 8, worldSize: 8 }), { name: 'InvalidArgumentError' })
  // A header claiming a huge state is refused from its lengths alone.
  const bytes = encodeState(s)
  new DataView(bytes.buffer).setBigUint64(40, 1n << 40n, true)
  t.is(
    code(() => verifyState(bytes)),
    'STATE_MALFORMED'
  )
})

test('coding a large state pauses every few MiB and gives the same fragments and state as the one-call coder', async t => {
  const n = Math.floor((3 * PAUSE_EVERY_BYTES) / 12) + 1000
  const fill = (k: number): Float32Array => Float32Array.from({ length: n }, (_, i) => Math.sin(i * k))
  const bytes = encodeState({
    rank: 1,
    worldSize: 4,
    epoch: 2,
    step: 7,
    dataCursor: 7,
    weights: fill(1),
    adamM: fill(2),
    adamV: fill(3),
    rng: new Uint8Array(8)
  })
  const coder = createErasureCoder({ k: 3, m: 2 })
  const init = { owner: 'p1', rank: 1, epoch: 2, coder, segmentBytes: 1024 * 1024 }
  let pauses = 0
  const pause = async (): Promise<void> => {
    pauses++
  }
  const sync = stripeState(bytes, init)
  const paused = await stripeStateAsync(bytes, init, pause)
  t.true(pauses >= 3, `paused ${pauses} times`)
  t.deepEqual(
    paused.map(f => f.label),
    sync.map(f => f.label)
  )
  t.true(paused.every((f, i) => f.segments.every((s, j) => Buffer.compare(s, sync[i]!.segments[j]!) === 0)))
  pauses = 0
  const rebuilt = await assembleStateAsync([paused[4]!, paused[0]!, paused[2]!], coder, pause)
  t.true(pauses >= 3)
  t.is(Buffer.compare(rebuilt.state, bytes), 0)
  t.deepEqual(rebuilt.report, assembleState([sync[4]!, sync[0]!, sync[2]!], coder).report)
})
