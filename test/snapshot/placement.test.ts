import test from 'ava'
import { PlacementError, placeStripe, validateStripeParams } from '../../snapshot/index.ts'
import type { View } from '../../mesh/index.ts'
import { topology } from './helpers.ts'

const viewOf = (members: ReturnType<typeof topology>): View => ({ epoch: 3, members })

test('placement is deterministic, distinct, excludes the owner and spreads hosts before zones', t => {
  // 12 nodes on 6 hosts in 3 zones.
  const v = viewOf(topology(12, 6, 3))
  for (let owner = 0; owner < 12; owner++) {
    const h = placeStripe(v, owner, 3, 2)
    t.deepEqual(h, placeStripe(v, owner, 3, 2))
    t.is(new Set(h).size, 5)
    t.false(h.includes(`p${owner}`))
    const mem = (id: string) => v.members.find(x => x.id === id)!
    const hosts = h.map(id => mem(id).host)
    // 5 fragments, 5 hosts other than the owner's: all on distinct hosts, none on the owner's host.
    t.is(new Set(hosts).size, 5)
    t.false(hosts.includes(v.members[owner]!.host))
    const zones = new Map<string, number>()
    for (const id of h) zones.set(mem(id).zone, (zones.get(mem(id).zone) ?? 0) + 1)
    // Zones as even as the hosts allow: 3 zones, 5 fragments, the owner's zone counted once already.
    t.true(Math.max(...zones.values()) <= 2, JSON.stringify([...zones]))
  }
})

test('with fewer hosts than fragments, hosts are shared as evenly as possible', t => {
  const v = viewOf(topology(9, 3, 1))
  const h = placeStripe(v, 0, 4, 4)
  const perHost = new Map<string, number>()
  for (const id of h) {
    const host = v.members.find(x => x.id === id)!.host
    perHost.set(host, (perHost.get(host) ?? 0) + 1)
  }
  t.true(Math.max(...perHost.values()) - Math.min(...perHost.values()) <= 1)
})

test('load spreads: every member holds about the same number of fragments over all owners', t => {
  const v = viewOf(topology(16, 16, 4))
  const load = new Map<string, number>()
  for (let owner = 0; owner < 16; owner++) for (const id of placeStripe(v, owner, 4, 2)) load.set(id, (load.get(id) ?? 0) + 1)
  t.true(Math.max(...load.values()) <= 9, JSON.stringify([...load]))
})

test('k and m are validated against the view size with a typed error', t => {
  t.throws(() => validateStripeParams(4, 2, 6), { instanceOf: PlacementError })
  t.notThrows(() => validateStripeParams(4, 2, 7))
  t.throws(() => validateStripeParams(0, 2, 7), { name: 'PlacementError' })
  t.throws(() => validateStripeParams(200, 60, 1000), { name: 'PlacementError' })
  t.throws(() => placeStripe(viewOf(topology(4)), 0, 2, 2), { name: 'PlacementError' })
  t.throws(() => placeStripe(viewOf(topology(8)), 8, 2, 2), { name: 'PlacementError' })
})
