import test from 'ava'
import { RealClock, shardRange } from '../../core/index.ts'
import { createMemoryNetwork, type ByteStream, type PeerNet } from '../../mesh/index.ts'
import {
  COLLECTIVE_LIMITS,
  CollectiveError,
  ENCODINGS,
  OP_KINDS,
  MessageParser,
  createCollective,
  encodeMessage,
  type Collective,
  type MessageHeader
} from '../../mesh/collective/index.ts'

// A two-member view: `a` runs the real collective, `evil` is scripted: it drains what `a`
// sends and writes hand-made messages on its own stream to `a`.
const N = 10
const EPOCH = 3

async function setup(): Promise<{ a: Collective; evil: PeerNet; write: (bytes: Uint8Array) => Promise<void>; stop: () => Promise<void> }> {
  const hub = createMemoryNetwork()
  const na = hub.createPeer({ id: 'a', labels: { zone: 'z0', host: 'h0' } })
  const evil = hub.createPeer({ id: 'evil', labels: { zone: 'z1', host: 'h1' } })
  await Promise.all([na.start(), evil.start()])
  const view = {
    epoch: EPOCH,
    members: [
      { id: 'a', zone: 'z0', host: 'h0' },
      { id: 'evil', zone: 'z1', host: 'h1' }
    ]
  }
  const a = createCollective({ net: na, view, clock: new RealClock(), timeoutMs: 5000 })
  await a.start()
  const protocol = `/zeromesh/collective/1/main/${EPOCH}`
  evil.handle(protocol, async (s: ByteStream) => {
    try {
      for await (const _ of s) {
        /* drain */
      }
    } catch {}
  })
  let stream: ByteStream | undefined
  return {
    a,
    evil,
    async write(bytes) {
      stream ??= await evil.open('a', protocol)
      await stream.write(bytes)
    },
    async stop() {
      await a.stop()
      await Promise.all([na.stop(), evil.stop()])
    }
  }
}

/** The message `evil` (rank 1) owes `a` in a 2-rank all-gather of N f32, with `patch` applied. */
function shardMessage(patch: Partial<MessageHeader> = {}, body?: Uint8Array): Uint8Array {
  const s = shardRange(N, 2, 1)
  const data = body ?? new Uint8Array(new Float32Array(s.length).fill(7).buffer)
  return encodeMessage(
    {
      kind: OP_KINDS.allGather,
      phase: 0,
      encoding: ENCODINGS.f32,
      epoch: EPOCH,
      op: 0,
      step: 9,
      src: 1,
      index: 0,
      elements: s.length,
      blockSize: 0,
      ...patch
    },
    data
  )
}

/** `a`'s all-gather of N elements (its 5 as f32 unless `mine` is given) fails with ProtocolError `code` when `evil` writes `bytes`. */
async function expectProtocolFailure(t: import('ava').ExecutionContext, bytes: Uint8Array, code: string, mine?: Uint32Array): Promise<void> {
  const { a, write, stop } = await setup()
  try {
    const call = mine === undefined ? a.allGather(new Float32Array(5).fill(1), N, { step: 9 }) : a.allGather(mine, N, { step: 9 })
    await write(bytes)
    const err = await t.throwsAsync(call, { instanceOf: CollectiveError })
    t.is(err?.reason, 'protocol')
    t.is(err?.peer, 'evil')
    t.is(err?.op, 'all_gather')
    t.is(err?.step, 9)
    t.is((err?.cause as { code?: string } | undefined)?.code, code)
  } finally {
    await stop()
  }
}

test('a message of another view epoch is a protocol error', t => expectProtocolFailure(t, shardMessage({ epoch: EPOCH + 1 }), 'COLLECTIVE_WRONG_EPOCH'))
test('a message of another step is a protocol error', t => expectProtocolFailure(t, shardMessage({ step: 8 }), 'COLLECTIVE_WRONG_STEP'))
test('a message of another operation kind is a protocol error', t =>
  expectProtocolFailure(t, shardMessage({ kind: OP_KINDS.reduceScatter }), 'COLLECTIVE_WRONG_OP'))
test('a message of the wrong size is a protocol error', t =>
  expectProtocolFailure(t, shardMessage({ elements: 4 }, new Uint8Array(16)), 'COLLECTIVE_SHAPE_MISMATCH'))
test('raw u32 words where f32 is expected are a protocol error (same byte count, other encoding)', t =>
  expectProtocolFailure(t, shardMessage({ encoding: ENCODINGS.u32 }), 'COLLECTIVE_SHAPE_MISMATCH'))
test('f32 where raw u32 words are expected is a protocol error', t =>
  expectProtocolFailure(t, shardMessage(), 'COLLECTIVE_SHAPE_MISMATCH', new Uint32Array(5).fill(1)))
test('u32 words of the wrong size are a protocol error', t =>
  expectProtocolFailure(t, shardMessage({ encoding: ENCODINGS.u32, elements: 5 }, new Uint8Array(16)), 'COLLECTIVE_SHAPE_MISMATCH', new Uint32Array(5)))
test('a message claiming another source rank is a protocol error', t => expectProtocolFailure(t, shardMessage({ src: 0 }), 'COLLECTIVE_WRONG_SOURCE'))
test('a message beyond the expected count is a protocol error', t => expectProtocolFailure(t, shardMessage({ index: 1 }), 'COLLECTIVE_UNEXPECTED'))
test('garbage bytes are a protocol error', t => expectProtocolFailure(t, new Uint8Array(100).fill(0x41), 'COLLECTIVE_BAD_MAGIC'))

test('a corrupted body is caught by its checksum', t => {
  const bytes = shardMessage()
  bytes[bytes.length - 1]! ^= 1
  return expectProtocolFailure(t, bytes, 'COLLECTIVE_BODY_CHECKSUM')
})

test('a corrupted header is caught by its checksum', t => {
  const bytes = shardMessage()
  bytes[33]! ^= 1
  return expectProtocolFailure(t, bytes, 'COLLECTIVE_HEADER_CHECKSUM')
})

test('an oversize body claim is refused from the header, before any body is allocated', async t => {
  // Header claims a body over the cap; the parser must refuse after 64 bytes.
  const header = shardMessage({}, new Uint8Array(0)).slice(0, 64)
  const v = new DataView(header.buffer)
  v.setUint32(40, COLLECTIVE_LIMITS.maxMessageBodyBytes + 1, true)
  const { checksum64 } = await import('../../codec/index.ts')
  v.setBigUint64(56, checksum64(header.subarray(0, 56)), true)
  t.throws(() => new MessageParser().push(header), { code: 'COLLECTIVE_TOO_LARGE' } as never)
  await expectProtocolFailure(t, header, 'COLLECTIVE_TOO_LARGE')
})

test('a replayed message of a finished operation is ignored (stale), the next operation completes', async t => {
  const { a, write, stop } = await setup()
  try {
    const first = a.allGather(new Float32Array(5).fill(1), N, { step: 9 })
    await write(shardMessage())
    const r0 = await first
    t.deepEqual([...r0.data], [1, 1, 1, 1, 1, 7, 7, 7, 7, 7])
    const second = a.allGather(new Float32Array(5).fill(2), N, { step: 10 })
    await write(shardMessage()) // replay of operation 0
    await write(shardMessage({ op: 1, step: 10 }, new Uint8Array(new Float32Array(5).fill(3).buffer)))
    const r1 = await second
    t.deepEqual([...r1.data], [2, 2, 2, 2, 2, 3, 3, 3, 3, 3])
    t.is(a.stats().staleDropped, 1)
  } finally {
    await stop()
  }
})

test('a message that arrives before this node starts the operation is held and delivered (and is bounded per peer)', async t => {
  const { a, write, stop } = await setup()
  try {
    await write(shardMessage())
    const r = await a.allGather(new Float32Array(5).fill(1), N, { step: 9 })
    t.deepEqual([...r.data], [1, 1, 1, 1, 1, 7, 7, 7, 7, 7])
    t.true(COLLECTIVE_LIMITS.maxPendingBytesPerPeer >= 1 << 20)
  } finally {
    await stop()
  }
})

test('a stalled member (sends nothing) fails the call with reason timeout, naming it', async t => {
  const hub = createMemoryNetwork()
  const na = hub.createPeer({ id: 'a', labels: { zone: 'z0', host: 'h0' } })
  const nb = hub.createPeer({ id: 'b', labels: { zone: 'z0', host: 'h1' } })
  await Promise.all([na.start(), nb.start()])
  const view = {
    epoch: 1,
    members: [
      { id: 'a', zone: 'z0', host: 'h0' },
      { id: 'b', zone: 'z0', host: 'h1' }
    ]
  }
  const a = createCollective({ net: na, view, clock: new RealClock(), timeoutMs: 200 })
  const b = createCollective({ net: nb, view, clock: new RealClock(), timeoutMs: 5000 })
  await Promise.all([a.start(), b.start()])
  try {
    const t0 = performance.now()
    const err = await t.throwsAsync(a.reduceScatter(new Float32Array(8)), { instanceOf: CollectiveError })
    t.is(err?.reason, 'timeout')
    t.is(err?.peer, 'b')
    t.true(performance.now() - t0 < 2000)
  } finally {
    await Promise.all([a.stop(), b.stop()])
  }
})

test('bad arguments are InvalidArgumentErrors and do not poison the collective', async t => {
  const { a, stop } = await setup()
  try {
    t.throws(() => a.allGather(new Float32Array(3), N), { name: 'InvalidArgumentError' })
    t.throws(() => a.allGather(new Float32Array(5), -1), { name: 'InvalidArgumentError' })
    t.throws(() => a.reduceScatter(new Float32Array(4), { wire: { kind: 'quant', bits: 4, blockSize: 32 } }), { name: 'InvalidArgumentError' })
    t.throws(() => a.reduceScatter(new Float32Array(4), { step: -1 }), { name: 'InvalidArgumentError' })
    t.throws(() => a.allGather(new Float32Array(0), COLLECTIVE_LIMITS.maxElements + 1), { name: 'LimitExceededError' })
    t.is(a.stats().failure, undefined)
    t.throws(() => createCollective({ net: a as never, view: { epoch: 1, members: [] }, clock: new RealClock() }), { name: 'InvalidArgumentError' })
  } finally {
    await stop()
  }
})

test('a message too far ahead (maxOpsAhead) is a protocol error', t =>
  expectProtocolFailure(t, shardMessage({ op: COLLECTIVE_LIMITS.maxOpsAhead + 5 }), 'COLLECTIVE_TOO_FAR_AHEAD'))

test('messages of operations not started yet are buffered up to maxPendingBytesPerPeer, then the stream is not read (backpressure)', async t => {
  const { a, write, stop } = await setup()
  try {
    const body = new Uint8Array(4 * 1024 * 1024 - 64)
    const msg = shardMessage({ op: 1, elements: body.length / 4 }, body)
    let written = 0
    const limit = Math.ceil((COLLECTIVE_LIMITS.maxPendingBytesPerPeer + 16 * 1024 * 1024) / msg.length) + 4
    let blocked = false
    for (let i = 0; i < limit; i++) {
      const w = write(msg).then(() => {
        written++
      })
      // Give the reader every chance to drain the stream before judging the write blocked.
      for (let k = 0; k < 20; k++) await new Promise(resolve => setImmediate(resolve))
      if (written === i) {
        blocked = true
        void w.catch(() => {})
        break
      }
    }
    t.true(blocked, 'the writer was held back')
    t.true(written * msg.length >= COLLECTIVE_LIMITS.maxPendingBytesPerPeer, `${written} messages were taken before blocking`)
    t.true(
      written * msg.length <= COLLECTIVE_LIMITS.maxPendingBytesPerPeer + 2 * 8 * 1024 * 1024 + msg.length,
      `${written} messages were taken before blocking`
    )
    t.is(a.stats().failure, undefined)
  } finally {
    await stop()
  }
})

test('more tier keys than maxTiers are refused', async t => {
  const hub = createMemoryNetwork()
  const na = hub.createPeer({ id: 'a', labels: { zone: 'z0', host: 'h0' } })
  const view = { epoch: 1, members: [{ id: 'a', zone: 'z0', host: 'h0' }] }
  const tiers = Array.from({ length: COLLECTIVE_LIMITS.maxTiers + 1 }, () => 'zone' as const)
  t.throws(() => createCollective({ net: na, view, clock: new RealClock(), tiers }), { name: 'LimitExceededError' })
  t.throws(() => createCollective({ net: na, view, clock: new RealClock(), chunkBytes: COLLECTIVE_LIMITS.maxChunkBytes + 1 }), { name: 'InvalidArgumentError' })
  t.throws(() => createCollective({ net: na, view: { epoch: 1, members: [{ id: 'b', zone: 'z', host: 'h' }] }, clock: new RealClock() }), {
    name: 'InvalidArgumentError'
  })
})
