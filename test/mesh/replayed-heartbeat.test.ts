import test from 'ava'
import { formed, HB_TOPIC as HB } from './membership-harness.ts'
import type { GossipMessage } from '../../mesh/index.ts'

// Hardening of the membership gossip against replayed heartbeats. Messages are injected as if a relay
// delivered them, with any claimed sender (on libp2p the sender is also bound by the gossipsub
// signature and the run tag: wrong-secret.test.ts).

test('replayed heartbeats do not keep a dead node alive', async t => {
  const c = await formed(4, 14)
  // Capture the leader's heartbeats as a relay would see them (only the leader gossips its
  // heartbeats; members send theirs to the leader directly).
  const captured: GossipMessage[] = []
  const spy = c.hub.createPeer({ id: 'spy', labels: { zone: 'z', host: 'spy' } })
  spy.subscribe(HB, {
    deliver: m => {
      if (m.from === 'n00') captured.push(m)
    }
  })
  await spy.start()
  await c.run(1000)
  t.true(captured.length > 3)
  c.kill('n00')
  // Keep replaying the captured heartbeats to everyone while the detector runs.
  const deadline = c.clock.monotonic() + 4000
  let replays = 0
  while (c.clock.monotonic() < deadline && !c.agree(['n01', 'n02', 'n03'])) {
    for (const to of ['n01', 'n02', 'n03']) {
      const verdict = c.hub.inject(to, captured[replays % captured.length]!)
      t.is(verdict, 'ignore', 'a replayed heartbeat is ignored, not accepted')
    }
    replays++
    await c.run(50)
  }
  t.true(c.agree(['n01', 'n02', 'n03']), `n00 was removed despite ${replays} replays`)
  t.is(c.nodes.get('n01')!.net.rejectedFrom('n00'), 0, 'replays are ignored (gossip may legitimately repeat), not penalised')
})
