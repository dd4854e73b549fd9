import test from 'ava'
import { createMetricsRegistry, Rng } from '../../core/index.ts'
import { createFragmentStore, PlacementFailedError, StoreFullError, encodeState } from '../../snapshot/index.ts'
import { fragmentsFor, view7 } from './fixtures.ts'
import { memoryMesh, randomState } from './helpers.ts'

test('store at its memory cap refuses with StoreFullError and a counter, and does not grow', async t => {
  const view = view7()
  const a = fragmentsFor(view, 0, 1)
  const size = a.frags[0]!.label.bodyBytes
  const metrics = createMetricsRegistry()
  const store = createFragmentStore({ self: a.holders[0]!, capBytes: size + 10 }, { metrics })
  store.setView(view)
  t.is(store.put(a.frags[0]!), 'stored')
  const b = fragmentsFor(view, 0, 2)
  const err = t.throws(() => store.put(b.frags[0]!), { instanceOf: StoreFullError })
  t.is(err!.name, 'StoreFullError')
  t.is(err!.capBytes, size + 10)
  t.is(store.stats().usedBytes, size)
  t.is(store.stats().reservedBytes, 0)
  t.is(store.stats().refused['STORE_FULL'], 1)
  const text = await metrics.metrics()
  t.regex(text, /zeromesh_snapshot_store_refused_total\{code="STORE_FULL"\} 1/)
  t.regex(text, new RegExp(`zeromesh_snapshot_store_bytes ${size}`))
})

test('the cap counts reservations in flight: two concurrent puts cannot both squeeze in', t => {
  const view = view7()
  const a = fragmentsFor(view, 0, 1)
  const b = fragmentsFor(view, 0, 2)
  const size = a.frags[0]!.label.bodyBytes
  const store = createFragmentStore({ self: a.holders[0]!, capBytes: size * 1.5 })
  store.setView(view)
  const r = store.reserve(a.frags[0]!.label)
  t.throws(() => store.reserve(b.frags[0]!.label), { instanceOf: StoreFullError })
  store.release(r)
  t.notThrows(() => store.put(b.frags[0]!))
})

test('placement onto a full holder fails with PlacementFailedError naming STORE_FULL', async t => {
  const mesh = await memoryMesh(7, { k: 3, m: 2, segmentBytes: 4096, storeCapBytes: 1000 })
  const s = randomState(Rng.fromSeed(1), 2000, { rank: 0, worldSize: 7, step: 1 })
  const err = await t.throwsAsync(mesh.services[0]!.place(encodeState(s)), { instanceOf: PlacementFailedError })
  t.is(err!.failed.length, 5)
  t.true(
    err!.failed.every(f => f.reason.includes('STORE_FULL') || f.reason.includes('full')),
    err!.message
  )
  t.is(mesh.services[0]!.manifests('p0').length, 0)
  await mesh.close()
})
