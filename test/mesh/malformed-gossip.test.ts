import test from 'ava'
import { Packr } from 'msgpackr'
import { formed, HB_TOPIC as HB, VIEW_TOPIC as VIEW } from './membership-harness.ts'
import { seededRng } from '../helpers/seed.ts'
import { encodeHeartbeat } from '../../mesh/index.ts'

/** A well-formed heartbeat with one byte or one f64 field changed. */
function badHeartbeat(edit: (bytes: Uint8Array, dv: DataView) => void): Uint8Array {
  const b = encodeHeartbeat({ inc: 1, seq: 99, epoch: 0, step: 0, sentAt: 0, leaving: false, paused: false })
  edit(b, new DataView(b.buffer))
  return b
}

// Hardening of the membership gossip against malformed gossip. Messages are injected as if a relay
// delivered them, with any claimed sender (on libp2p the sender is also bound by the gossipsub
// signature and the run tag: wrong-secret.test.ts).
const raw = new Packr({ useRecords: false, mapsAsObjects: true, variableMapSize: true })

test('malformed gossip: garbage, wrong types and bad fields are rejected, counted, and harmless', async t => {
  const c = await formed(3, 11)
  const { rng } = seededRng(t, 12)
  const target = 'n01'
  const bad: Uint8Array[] = [
    new Uint8Array(0),
    Uint8Array.of(0xc1),
    raw.pack({ v: 1, t: 'hb', p: { inc: 1, seq: -1, epoch: 0, step: 0, sentAt: 0, leaving: false } }),
    badHeartbeat(b => {
      b[0] = 0x49
    }),
    badHeartbeat(b => {
      b[1] = 2
    }),
    badHeartbeat(b => {
      b[2] = 4
    }),
    badHeartbeat(b => {
      b[3] = 1
    }),
    badHeartbeat((_, dv) => {
      dv.setFloat64(12, -1, true)
    }),
    badHeartbeat((_, dv) => {
      dv.setFloat64(12, 1.5, true)
    }),
    badHeartbeat((_, dv) => {
      dv.setFloat64(20, 2 ** 60, true)
    }),
    badHeartbeat((_, dv) => {
      dv.setFloat64(36, Number.NaN, true)
    }),
    encodeHeartbeat({ inc: 1, seq: 99, epoch: 0, step: 0, sentAt: 0, leaving: false, paused: false }).subarray(0, 43),
    raw.pack({ v: 1, t: 'hb', p: { inc: 1, seq: 1, epoch: 0, step: 0, sentAt: 0, leaving: false, extra: 1 } }),
    raw.pack({ v: 1, t: 'commit', p: { view: { epoch: 9, members: [] } } }),
    raw.pack({
      v: 1,
      t: 'commit',
      p: {
        view: {
          epoch: 9,
          members: [
            { id: 'a', zone: 'z', host: 'h' },
            { id: 'a', zone: 'z', host: 'h' }
          ]
        }
      }
    }),
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
  // The positive control: the heartbeat the edits start from, unedited, is not rejected (each
  // rejection above is the edit's doing) and costs the sender nothing.
  const control = c.hub.inject(target, { topic: HB, from: 'n02', data: badHeartbeat(() => {}) })
  t.not(control, 'reject', 'the unedited heartbeat is not rejected')
  t.is(c.nodes.get(target)!.net.rejectedFrom('n02'), rejected, 'and is not counted against the sender')
  t.true(rejected >= bad.length, 'malformed messages are rejected, not just ignored')
  await c.run(1000)
  t.is(c.nodes.get(target)!.m.view(), before, 'nothing changed')
  t.deepEqual(c.violations, [])
})
