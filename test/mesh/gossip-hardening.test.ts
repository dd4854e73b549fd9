import test from 'ava'
import { Packr } from 'msgpackr'
import { Cluster } from './membership-harness.ts'
import { seededRng } from '../helpers/seed.ts'
import type { GossipMessage } from '../../mesh/index.ts'

// Hardening of the membership gossip, one test per attack. Messages are injected as if a relay
// delivered them, with any claimed sender (on libp2p the sender is additionally bound by the
// gossipsub signature and the run tag, tested in wrong-secret.test.ts).

const raw = new Packr({ useRecords: false, mapsAsObjects: true, variableMapSize: true })
const HB = 'membership/hb'
const VIEW = 'membership/view'

async function formed (n: number, seed: number): Promise<Cluster> {
  const c = new Cluster(n, seed, { expect: n })
  await c.startAll()
  await c.until(() => c.agree([...c.nodes.keys()]), 5000, 'formation')
  await c.run(1000)
  return c
}

test('malformed gossip: garbage, wrong types and bad fields are rejected, counted, and harmless', async t => {
  const c = await formed(3, 11)
  const { rng } = seededRng(t, 12)
  const target = 'n01'
  const bad: Uint8Array[] = [
    new Uint8Array(0),
    Uint8Array.of(0xc1),
    raw.pack({ v: 1, t: 'hb', p: { inc: 1, seq: -1, epoch: 0, step: 0, sentAt: 0, leaving: false } }),
    raw.pack({ v: 1, t: 'hb', p: { inc: 1, seq: 1, epoch: 0, step: 0, sentAt: 0, leaving: false, extra: 1 } }),
    raw.pack({ v: 1, t: 'commit', p: { view: { epoch: 9, members: [] } } }),
    raw.pack({ v: 1, t: 'commit', p: { view: { epoch: 9, members: [{ id: 'a', zone: 'z', host: 'h' }, { id: 'a', zone: 'z', host: 'h' }] } } }),
    raw.pack({ v: 1, t: 'accept', p: { epoch: 2, round: 1, view: { epoch: 2, members: 'n00' } } }),
    // limit: maxMembers (1024 by default)
    raw.pack({ v: 1, t: 'commit', p: { view: { epoch: 9, members: Array.from({ length: 1025 }, (_, i) => ({ id: `p${i}`, zone: 'z', host: 'h' })) } } }),
    ...Array.from({ length: 200 }, () => rng.fill(new Uint8Array(rng.int(1, 100))))
  ]
  const before = c.nodes.get(target)!.m.view()
  let rejected = 0
  for (const data of bad) {
    for (const topic of [HB, VIEW]) {
      const verdict = c.hub.inject(target, { topic, from: 'n02', data })
      t.not(verdict, 'accept', `accepted ${Buffer.from(data).toString('hex').slice(0, 40)} on ${topic}`)
      if (verdict === 'reject') rejected++
    }
  }
  t.is(c.nodes.get(target)!.net.rejectedFrom('n02'), rejected, 'every rejection counts against the sender')
  t.true(rejected >= bad.length, 'malformed messages are rejected, not just ignored')
  await c.run(1000)
  t.is(c.nodes.get(target)!.m.view(), before, 'nothing changed')
  t.deepEqual(c.violations, [])
})

test('oversize gossip is refused before it is sent', async t => {
  const c = await formed(2, 13)
  await t.throwsAsync(c.nodes.get('n00')!.net.publish(HB, new Uint8Array(256 * 1024 + 1)), { name: 'LimitExceededError' })
})

test('replayed heartbeats do not keep a dead node alive', async t => {
  const c = await formed(4, 14)
  // Capture n03's heartbeats as a relay would see them.
  const captured: GossipMessage[] = []
  const spy = c.hub.createPeer({ id: 'spy', labels: { zone: 'z', host: 'spy' } })
  spy.subscribe(HB, { deliver: m => { if (m.from === 'n03') captured.push(m) } })
  await spy.start()
  await c.run(1000)
  t.true(captured.length > 3)
  c.kill('n03')
  // Keep replaying the captured heartbeats to everyone while the detector runs.
  const deadline = c.clock.monotonic() + 4000
  let replays = 0
  while (c.clock.monotonic() < deadline && !c.agree(['n00', 'n01', 'n02'])) {
    for (const to of ['n00', 'n01', 'n02']) {
      const verdict = c.hub.inject(to, captured[replays % captured.length]!)
      t.is(verdict, 'ignore', 'a replayed heartbeat is ignored, not accepted')
    }
    replays++
    await c.run(50)
  }
  t.true(c.agree(['n00', 'n01', 'n02']), `n03 was removed despite ${replays} replays`)
  t.is(c.nodes.get('n00')!.net.rejectedFrom('n03'), 0, 'replays are ignored (gossip may legitimately repeat), not penalised')
})

test('stale view messages (old epochs) are ignored and change nothing', async t => {
  const c = await formed(3, 15)
  c.kill('n02')
  await c.until(() => c.agree(['n00', 'n01']), 3000, 'removal')
  const v = c.nodes.get('n01')!.m.view()!
  t.is(v.epoch, 2)
  const staleView = { epoch: 1, members: [{ id: 'n00', zone: 'z0', host: 'n00' }] }
  const stale: Array<[string, unknown]> = [
    ['commit', { view: staleView }],
    ['commit', { view: { ...staleView, epoch: 2 } }],
    ['prepare', { epoch: 2, round: 99 }],
    ['accept', { epoch: 1, round: 99, view: staleView }]
  ]
  for (const [type, p] of stale) {
    const verdict = c.hub.inject('n01', { topic: VIEW, from: 'n00', data: raw.pack({ v: 1, t: type, p }) })
    t.is(verdict, 'ignore', `stale ${type}`)
  }
  await c.run(500)
  t.is(c.nodes.get('n01')!.m.view(), v)
  t.deepEqual(c.violations, [])
})
