import test from 'ava'
import { Packr } from 'msgpackr'
import { formed, VIEW_TOPIC as VIEW } from './membership-harness.ts'

// Hardening of the membership gossip against stale view messages. Messages are injected as if a relay
// delivered them, with any claimed sender (on libp2p the sender is also bound by the gossipsub
// signature and the run tag: wrong-secret.test.ts).
const raw = new Packr({ useRecords: false, mapsAsObjects: true, variableMapSize: true })

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
