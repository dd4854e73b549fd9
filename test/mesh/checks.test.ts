import test from 'ava'
import { MESH_LIMITS } from '../../mesh/index.ts'
import { remember } from '../../mesh/index.ts'

test('maps about strangers stay bounded (limit: maxTrackedPeers), evicting the oldest', t => {
  const m = new Map<string, number>()
  for (let i = 0; i < MESH_LIMITS.maxTrackedPeers + 50; i++) remember(m, `peer${i}`, i)
  t.is(m.size, MESH_LIMITS.maxTrackedPeers)
  t.false(m.has('peer0'))
  t.true(m.has(`peer${MESH_LIMITS.maxTrackedPeers + 49}`))
  remember(m, 'peer60', -1)
  remember(m, 'x', 1)
  t.true(m.has('peer60'), 'refreshing an entry makes it the newest')
  t.false(m.has('peer50'), 'the oldest went')
  t.true(m.has('peer51'))
})
