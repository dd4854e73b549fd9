import test from 'ava'
import { shardRange } from '../../core/index.ts'
import { buildHierarchy, relayOf, ringOrder, createZeroComm, linkTier } from '../../mesh/collective/index.ts'
import { memoryGroup, zoneOf } from './helpers.ts'

test('shardRange tiles any length with shards differing by at most one (zero-length shards when n < parts)', t => {
  for (let parts = 1; parts <= 9; parts++) {
    for (const n of [0, 1, parts - 1, parts, 2 * parts + 3, 1000]) {
      let at = 0
      for (let i = 0; i < parts; i++) {
        const r = shardRange(n, parts, i)
        t.is(r.start, at)
        t.true(r.length === Math.floor(n / parts) || r.length === Math.ceil(n / parts))
        at += r.length
      }
      t.is(at, n)
    }
  }
})

test('hierarchy: zones contiguous in the ring, relays pair equal local ranks, d collects its own shard', t => {
  const members = ['a', 'b', 'a', 'b', 'a'].map((z, i) => ({ id: `p${i}`, zone: z, host: `h${i}` }))
  const h = buildHierarchy(members, ['zone'])
  t.is(h.levels.length, 3)
  t.deepEqual(ringOrder(h), [0, 2, 4, 1, 3])
  const zoneA = h.groupOf[1]![0]!
  const zoneB = h.groupOf[1]![1]!
  // Destination 3 is index 1 of zone b: zone a relays it through its index 1 (rank 2).
  t.is(relayOf(h, zoneA, 3), 2)
  t.is(relayOf(h, zoneB, 3), 3)
  // Destination 4 is index 2 of zone a; zone b has 2 members: 2 mod 2 = its index 0 (rank 1).
  t.is(relayOf(h, zoneB, 4), 1)
  for (let d = 0; d < 5; d++) t.is(relayOf(h, h.top, d), d)
  t.is(linkTier(members[0]!, members[2]!), 'zone')
  t.is(linkTier(members[0]!, members[1]!), 'wan')
  // One zone only: the zone level splits nothing beyond the top and is dropped.
  t.is(
    buildHierarchy(
      members.map(m => ({ ...m, zone: 'z' })),
      ['zone']
    ).levels.length,
    2
  )
})

test('ZeroComm: a backward gather with hpZ needs the forward gather of the bucket first', async t => {
  const g = await memoryGroup(2, r => zoneOf(r, 2, 2))
  try {
    const z = createZeroComm(g.colls[0]!, { hpZ: true })
    await t.throwsAsync(z.gatherWeights('b', new Float32Array(5), 10, 'backward'), { name: 'InvalidArgumentError' })
    t.throws(() => createZeroComm(g.colls[0]!, { hpZ: { tier: 'host' } }), { name: 'InvalidArgumentError' })
  } finally {
    await g.stop()
  }
})
