import test from 'ava'
import type { CollectiveSent } from '../../mesh/index.ts'
import { memoryGroup, zoneOf } from './helpers.ts'

test('onSent reports every message a collective sends: operation, encoding, step, tier and bytes add up to the call results', async t => {
  const sent: CollectiveSent[] = []
  const P = 4
  const g = await memoryGroup(P, r => zoneOf(r, P, 2), {
    onSent: s => {
      sent.push(s)
    }
  })
  try {
    const results = await Promise.all(g.colls.map((c, r) => c.allGather(Float32Array.of(r, r + 1), 2 * P, { step: 3 })))
    t.true(sent.length > 0)
    t.true(sent.every(s => s.op === 'allGather' && s.encoding === 'f32' && s.step === 3))
    for (const tier of ['host', 'zone', 'wan'] as const) {
      const hook = sent.filter(s => s.tier === tier).reduce((a, s) => a + s.bytes, 0)
      t.is(
        hook,
        results.reduce((a, r) => a + r.bytes[tier], 0),
        tier
      )
    }
    t.true(
      sent.some(s => s.tier === 'wan'),
      'two zones: some messages cross them'
    )
    // Raw 32-bit words are reported as encoding u32, with the bytes of the same gather as f32.
    const before = sent.length
    const words = await Promise.all(g.colls.map((c, r) => c.allGather(Uint32Array.of(r, 0xffffffff), 2 * P, { step: 4 })))
    const wordsSent = sent.slice(before)
    t.true(wordsSent.length > 0)
    t.true(wordsSent.every(s => s.op === 'allGather' && s.encoding === 'u32' && s.step === 4))
    t.deepEqual(
      wordsSent.map(s => s.bytes),
      sent.slice(0, before).map(s => s.bytes)
    )
    t.is(
      wordsSent.reduce((a, s) => a + s.bytes, 0),
      words.reduce((a, r) => a + r.bytes.host + r.bytes.zone + r.bytes.wan, 0)
    )
  } finally {
    await g.stop()
  }
})
