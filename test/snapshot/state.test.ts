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
  verifyState,
  type RankState
} from '../../snapshot/index.ts'
import { ADAM8_BLOCK } from '../../gpu/index.ts'
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

/** An 8-bit AdamW state (8-bit Lion's with `lion`: m codes alone, one absmax a block) of `n` elements in `blocks` blocks (random codes and scales). */
function adam8State(seed: number, n: number, blocks: number, outer = false, lion = false): RankState {
  const rng = Rng.fromSeed(seed)
  const s = randomState(rng, n)
  const codes = (): Uint8Array => Uint8Array.from({ length: n }, () => rng.int(0, 256))
  const k = lion ? 1 : 2
  const st: RankState = {
    ...s,
    adamM: new Float32Array(0),
    adamV: new Float32Array(0),
    optimizer: lion ? 'lion8bit' : 'adamw8bit',
    adam8: { m: codes(), v: lion ? new Uint8Array(0) : codes(), scales: Float32Array.from({ length: k * blocks }, () => rng.float()) }
  }
  if (outer)
    st.outer = {
      weights: s.weights.map(x => x + 1),
      momentum: s.weights.map(x => x * 2),
      residual: s.weights.map(x => -x),
      sentInner: s.weights.map(x => x / 2)
    }
  return st
}

test('8-bit AdamW state (optimizer byte 2): scales and u8 codes round-trip, ~6 bytes per parameter, outer buffers after them stay aligned', t => {
  for (const [n, blocks] of [
    [4097, 3],
    [4099, 5],
    [1, 1],
    [0, 0]
  ] as const) {
    const s = adam8State(n + blocks, n, blocks, n === 4099)
    const bytes = encodeState(s)
    t.is(bytes[6], 2, 'optimizer byte')
    t.is(bytes.length, STATE_HEADER_BYTES + 32 + 4 * n + 8 * blocks + ((2 * n + 7) & ~7) + (s.outer === undefined ? 0 : 16 * n))
    const d = decodeState(bytes)
    t.is(d.optimizer, 'adamw8bit')
    t.is(d.adamM.length + d.adamV.length, 0)
    t.deepEqual(d.weights, s.weights)
    t.deepEqual(d.adam8, s.adam8)
    t.deepEqual(d.outer, s.outer)
    // Unaligned: copies instead of views, same values.
    const odd = new Uint8Array(bytes.length + 1)
    odd.set(bytes, 1)
    t.deepEqual(decodeState(odd.subarray(1)).adam8, s.adam8)
  }
  const n = 1 << 16
  const big = stateBytes(adam8State(5, n, Math.ceil(n / ADAM8_BLOCK)))
  const adamw = stateBytes(randomState(Rng.fromSeed(5), n))
  t.true(big / adamw < 0.5005, `8-bit ${big} vs AdamW ${adamw} bytes`)
})

test('corrupt 8-bit AdamW states: unknown optimizer byte, block counts out of range, lengths that disagree are refused with typed errors before allocating', t => {
  const s = adam8State(7, 5000, 3)
  const bytes = encodeState(s)
  const patched = (fn: (v: DataView) => void): Uint8Array => {
    const b = bytes.slice()
    fn(new DataView(b.buffer))
    return b
  }
  t.is(
    code(() => verifyState(patched(v => v.setUint8(6, 5)))),
    'STATE_MALFORMED',
    'optimizer byte 5'
  )
  t.regex(t.throws(() => verifyState(patched(v => v.setUint8(6, 5))))!.message, /unknown optimizer 5/)
  t.is(
    code(() => verifyState(patched(v => v.setUint8(6, 4)))),
    'STATE_MALFORMED',
    'read as 8-bit Lion the lengths disagree'
  )
  t.is(
    code(() => verifyState(patched(v => v.setUint32(52, 2, true)))),
    'STATE_MALFORMED',
    'fewer blocks than ceil(n / 2048)'
  )
  t.is(
    code(() => verifyState(patched(v => v.setUint32(52, 0xffffffff, true)))),
    'STATE_MALFORMED',
    'more blocks than elements'
  )
  t.is(
    code(() => verifyState(patched(v => v.setUint32(52, 4, true)))),
    'STATE_MALFORMED',
    'a block count the length does not match'
  )
  t.is(
    code(() => verifyState(patched(v => v.setUint8(6, 0)))),
    'STATE_MALFORMED',
    'read as AdamW the lengths disagree'
  )
  t.is(
    code(() => verifyState(patched(v => v.setUint8(6, 1)))),
    'STATE_MALFORMED',
    'read as Lion too'
  )
  // A block count on an AdamW state is a non-zero reserved field.
  const adamw = encodeState(randomState(Rng.fromSeed(8), 64))
  new DataView(adamw.buffer).setUint32(52, 1, true)
  t.is(
    code(() => verifyState(adamw)),
    'STATE_MALFORMED'
  )
  t.is(
    code(() => verifyState(patched(v => v.setUint8(STATE_HEADER_BYTES + 40, 7)))),
    'STATE_CHECKSUM'
  )
  // Encoding refuses inconsistent states.
  const bad = (x: Partial<RankState>, why: RegExp): void => {
    t.throws(() => stateBytes({ ...s, ...x }), { name: 'InvalidArgumentError', message: why })
  }
  bad({ adam8: { ...s.adam8!, v: new Uint8Array(4999) } }, /5000 codes each/)
  bad({ adam8: { ...s.adam8!, scales: new Float32Array(4) } }, /3\.\.5000 absmax pairs/)
  bad({ adam8: { ...s.adam8!, scales: new Float32Array(7) } }, /absmax pairs/)
  bad({ adam8: undefined }, /adam8/)
  bad({ optimizer: 'lion' }, /adam8|Lion/)
  bad({ adamM: new Float32Array(5000) }, /none \(8-bit optimizers/)
  bad({ optimizer: 'lion8bit' }, /none of v/)
})

test('8-bit Lion state (optimizer byte 4): one absmax a block and m codes round-trip, ~5 bytes per parameter; v codes, pairs and wrong block counts are refused', t => {
  for (const [n, blocks] of [
    [4097, 3],
    [4099, 5],
    [1, 1],
    [0, 0]
  ] as const) {
    const s = adam8State(n + blocks, n, blocks, n === 4099, true)
    const bytes = encodeState(s)
    t.is(bytes[6], 4, 'optimizer byte')
    t.is(new DataView(bytes.buffer, bytes.byteOffset).getUint32(52, true), blocks, 'block count')
    t.is(bytes.length, STATE_HEADER_BYTES + 32 + 4 * n + 4 * blocks + ((n + 7) & ~7) + (s.outer === undefined ? 0 : 16 * n))
    const d = decodeState(bytes)
    t.is(d.optimizer, 'lion8bit')
    t.is(d.adamM.length + d.adamV.length, 0)
    t.deepEqual(d.weights, s.weights)
    t.deepEqual(d.adam8, s.adam8)
    t.deepEqual(d.outer, s.outer)
    const odd = new Uint8Array(bytes.length + 1)
    odd.set(bytes, 1)
    t.deepEqual(decodeState(odd.subarray(1)).adam8, s.adam8)
  }
  const n = 1 << 16
  const lion8 = stateBytes(adam8State(5, n, Math.ceil(n / ADAM8_BLOCK), false, true))
  const adamw = stateBytes(randomState(Rng.fromSeed(5), n))
  t.log(`8-bit Lion ${lion8} vs AdamW ${adamw} bytes (${(lion8 / adamw).toFixed(4)}x)`)
  t.true(lion8 / adamw < 0.4175, `8-bit Lion ${lion8} vs AdamW ${adamw} bytes`)
  const s = adam8State(9, 5000, 3, false, true)
  const bytes = encodeState(s)
  const patched = (fn: (v: DataView) => void): Uint8Array => {
    const b = bytes.slice()
    fn(new DataView(b.buffer))
    return b
  }
  t.is(
    code(() => verifyState(patched(v => v.setUint32(52, 2, true)))),
    'STATE_MALFORMED',
    'fewer blocks than ceil(n / 2048)'
  )
  t.is(
    code(() => verifyState(patched(v => v.setUint32(52, 4, true)))),
    'STATE_MALFORMED',
    'a block count the length does not match'
  )
  t.is(
    code(() => verifyState(patched(v => v.setUint8(6, 2)))),
    'STATE_MALFORMED',
    'read as 8-bit AdamW the lengths disagree'
  )
  const bad = (x: Partial<RankState>, why: RegExp): void => {
    t.throws(() => stateBytes({ ...s, ...x }), { name: 'InvalidArgumentError', message: why })
  }
  bad({ adam8: { ...s.adam8!, v: new Uint8Array(5000) } }, /none of v/)
  bad({ adam8: { ...s.adam8!, scales: new Float32Array(2) } }, /3\.\.5000 absmaxes/)
  bad({ adam8: undefined }, /adam8/)
  bad({ optimizer: 'adamw8bit' }, /5000 codes each/)
})

test('a zeroth-order state (optimizer byte 3) is the weights alone: 4 bytes per parameter, round trip, moments refused', t => {
  const base = randomState(Rng.fromSeed(5), 4000)
  const zo: RankState = { ...base, optimizer: 'zo', adamM: new Float32Array(0), adamV: new Float32Array(0) }
  const bytes = encodeState(zo)
  t.is(new DataView(bytes.buffer, bytes.byteOffset).getUint8(6), 3)
  const back = decodeState(bytes)
  t.is(back.optimizer, 'zo')
  t.deepEqual(back.weights, zo.weights)
  t.is(back.adamM.length + back.adamV.length, 0)
  const adamw = encodeState({ ...base, optimizer: undefined })
  t.is(adamw.length - bytes.length, 8 * 4000, 'AdamW carries two f32 moments more')
  t.throws(() => encodeState({ ...zo, adamM: new Float32Array(4000) }), { message: /must have/ })
})
