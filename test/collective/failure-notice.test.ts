import test from 'ava'
import { ManualClock } from '../../core/index.ts'
import { createMemoryNetwork, type ByteStream, type MemoryNetwork, type PeerNet } from '../../mesh/index.ts'
import { COLLECTIVE_DEFAULTS, CollectiveError, createCollective, type Collective } from '../../mesh/collective/index.ts'

// How a failure's origin reaches every member. `a` runs the real collective; b, c and d are
// scripted members of the same view (one zone, ring a b c d). A member that fails resets its
// streams and sends a failure notice (u32 op, u8 reason, u32 rank the failure started on),
// which travel separately: the notice decides what the others report.

const EPOCH = 4
const PROTOCOL = `/zeromesh/collective/1/main/${EPOCH}`
const TOPIC = `${PROTOCOL}/failed`
const GRACE = COLLECTIVE_DEFAULTS.noticeGraceMs
const REASON = { 'peer-gone': 0, timeout: 1 } as const

interface Setup {
  hub: MemoryNetwork
  clock: ManualClock
  a: Collective
  peers: Record<'b' | 'c' | 'd', PeerNet>
  /** Notices `a` sent to b. */
  heard: Uint8Array[]
  /** a's all-gather (it waits on d's shard forever), settled into `outcome`. */
  outcome: { error?: unknown; done: boolean }
  stop(): Promise<void>
}

function notice(reason: number, origin: number, bytes = 9): Uint8Array {
  const out = new Uint8Array(bytes)
  const dv = new DataView(out.buffer)
  if (bytes >= 5) out[4] = reason
  if (bytes >= 9) dv.setUint32(5, origin, true)
  return out
}

async function setup(): Promise<Setup> {
  const hub = createMemoryNetwork()
  const clock = new ManualClock()
  const ids = ['a', 'b', 'c', 'd'] as const
  const nets = ids.map(id => hub.createPeer({ id, labels: { zone: 'z0', host: id } }))
  await Promise.all(nets.map(n => n.start()))
  const view = { epoch: EPOCH, members: ids.map(id => ({ id, zone: 'z0', host: id })) }
  const a = createCollective({ net: nets[0]!, view, clock, timeoutMs: 60_000 })
  await a.start()
  const heard: Uint8Array[] = []
  for (const n of nets.slice(1))
    n.handle(PROTOCOL, async (s: ByteStream) => {
      try {
        for await (const _ of s) {
          /* drain */
        }
      } catch {}
    })
  nets[1]!.subscribe(TOPIC, {
    deliver: msg => {
      if (msg.from === 'a') heard.push(msg.data)
    }
  })
  const outcome: Setup['outcome'] = { done: false }
  a.allGather(new Float32Array(a.shardOf(40).length), 40, { step: 9 }).then(
    () => {
      outcome.done = true
    },
    error => {
      outcome.done = true
      outcome.error = error
    }
  )
  await clock.advanceAsync(1)
  return {
    hub,
    clock,
    a,
    heard,
    outcome,
    peers: { b: nets[1]!, c: nets[2]!, d: nets[3]! },
    async stop() {
      await a.stop()
      await Promise.all(nets.map(n => n.stop()))
    }
  }
}

async function resetStreamTo(from: PeerNet): Promise<void> {
  const s = await from.open('a', PROTOCOL)
  s.abort()
}

test('a stream reset with no failure notice fails the call as peer-gone, blaming the resetter, after noticeGraceMs (not at once, no hang)', async t => {
  const s = await setup()
  try {
    await resetStreamTo(s.peers.b)
    await s.clock.advanceAsync(GRACE - 5)
    t.false(s.outcome.done, 'waits for the notice that should follow a deliberate reset')
    await s.clock.advanceAsync(10)
    t.true(s.outcome.done)
    const e = s.outcome.error as CollectiveError
    t.true(e instanceof CollectiveError)
    t.like(e, { name: 'CollectiveError', reason: 'peer-gone', peer: 'b', op: 'all_gather', step: 9 })
  } finally {
    await s.stop()
  }
})

test("a reset followed by the resetter's notice reports the notice's reason and origin (the member it saw fail), not the messenger", async t => {
  const s = await setup()
  try {
    await resetStreamTo(s.peers.b)
    await s.peers.b.send('a', TOPIC, notice(REASON['peer-gone'], 2))
    await s.clock.advanceAsync(1)
    t.true(s.outcome.done, 'a notice that is not a timeout settles at once')
    t.like(s.outcome.error as CollectiveError, { reason: 'peer-gone', peer: 'c', op: 'all_gather', step: 9 })
    // And a relays it: its own notice names c too.
    const last = s.heard.at(-1)!
    t.is(last.length, 9)
    t.is(last[4], REASON['peer-gone'])
    t.is(new DataView(last.buffer, last.byteOffset).getUint32(5, true), 2)
  } finally {
    await s.stop()
  }
})

test('timeout notices are collected for noticeGraceMs and followed to the member that stalled first (b waited on c, c waited on d: d)', async t => {
  const s = await setup()
  try {
    await s.peers.b.send('a', TOPIC, notice(REASON.timeout, 2))
    await s.clock.advanceAsync(GRACE / 2)
    t.false(s.outcome.done)
    await s.peers.c.send('a', TOPIC, notice(REASON.timeout, 3))
    await s.clock.advanceAsync(GRACE / 2 + 1)
    t.true(s.outcome.done)
    const e = s.outcome.error as CollectiveError
    t.like(e, { reason: 'timeout', peer: 'd', op: 'all_gather', step: 9 })
    t.regex(e.message, /d stalled first/)
  } finally {
    await s.stop()
  }
})

test("a member's own watchdog: it tells the others at once whom it waited on, then settles on the origin after noticeGraceMs", async t => {
  const hub = createMemoryNetwork()
  const clock = new ManualClock()
  const ids = ['a', 'b', 'c'] as const
  const nets = ids.map(id => hub.createPeer({ id, labels: { zone: 'z0', host: id } }))
  await Promise.all(nets.map(n => n.start()))
  const view = { epoch: EPOCH, members: ids.map(id => ({ id, zone: 'z0', host: id })) }
  const a = createCollective({ net: nets[0]!, view, clock, timeoutMs: 1000 })
  await a.start()
  const heard: Uint8Array[] = []
  for (const n of nets.slice(1))
    n.handle(PROTOCOL, async (s: ByteStream) => {
      try {
        for await (const _ of s) {
          /* drain */
        }
      } catch {}
    })
  nets[1]!.subscribe(TOPIC, {
    deliver: msg => {
      heard.push(msg.data)
    }
  })
  try {
    // Ring a b c: a waits on c's shard. c sends nothing (stalled).
    const call = a.allGather(new Float32Array(a.shardOf(30).length), 30, { step: 2 }).then(
      () => undefined,
      (e: unknown) => e
    )
    await clock.advanceAsync(1000)
    t.is(heard.length, 1, 'the timeout is announced when the watchdog fires')
    t.is(heard[0]![4], REASON.timeout)
    t.is(new DataView(heard[0]!.buffer, heard[0]!.byteOffset).getUint32(5, true), 2)
    t.false(a.failed.aborted, 'not failed yet: listening for the others')
    await clock.advanceAsync(GRACE)
    t.like((await call) as CollectiveError, { name: 'CollectiveError', reason: 'timeout', peer: 'c', op: 'all_gather', step: 2 })
  } finally {
    await a.stop()
    await Promise.all(nets.map(n => n.stop()))
  }
})

test('malformed failure notices (old 5-byte form, origin outside the view, from a non-member) are rejected and poison nothing', async t => {
  const s = await setup()
  try {
    const verdict = (from: string, data: Uint8Array): unknown => s.hub.inject('a', { topic: TOPIC, from, data })
    t.is(verdict('b', notice(REASON.timeout, 0, 5)), 'reject')
    t.is(verdict('b', notice(REASON.timeout, 4)), 'reject')
    t.is(verdict('b', notice(REASON['peer-gone'], 0xfffffffe)), 'reject')
    t.is(verdict('zz', notice(REASON.timeout, 2)), 'reject')
    t.is(verdict('a', notice(REASON.timeout, 2)), 'reject')
    await s.clock.advanceAsync(2 * GRACE)
    t.false(s.outcome.done)
    t.false(s.a.failed.aborted)
    // A well-formed one with no origin (0xffffffff) blames its sender.
    t.is(verdict('c', notice(REASON['peer-gone'], 0xffffffff)), 'accept')
    await s.clock.advanceAsync(1)
    t.like(s.outcome.error as CollectiveError, { reason: 'peer-gone', peer: 'c' })
  } finally {
    await s.stop()
  }
})
