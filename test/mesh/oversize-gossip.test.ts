import test from 'ava'
import { formed, HB_TOPIC as HB } from './membership-harness.ts'

// Hardening of the membership gossip against oversize gossip. Messages are injected as if a relay
// delivered them, with any claimed sender (on libp2p the sender is also bound by the gossipsub
// signature and the run tag: wrong-secret.test.ts).

test('oversize gossip is refused before it is sent', async t => {
  const c = await formed(2, 13)
  await t.throwsAsync(c.nodes.get('n00')!.net.publish(HB, new Uint8Array(256 * 1024 + 1)), { name: 'LimitExceededError' })
})
