import test from 'ava'
import { ProtocolError, Rng } from '../../core/index.ts'
import { createFragmentStore, encodeState } from '../../snapshot/index.ts'
import { fragmentsFor, view7 } from './fixtures.ts'
import { memoryMesh, randomState } from './helpers.ts'

const code = (fn: () => unknown): string => {
  try {
    fn()
  } catch (err) {
    if (err instanceof ProtocolError) return err.code
    throw err
  }
  return 'ok'
}

test('stale epoch: a put labelled with an older epoch is refused (ignore, not reject)', t => {
  const old = fragmentsFor(view7(1), 0, 5)
  const store = createFragmentStore({ self: old.holders[0]! })
  store.setView(view7(2))
  let err: ProtocolError | undefined
  try {
    store.put(old.frags[0]!)
  } catch (e) {
    err = e as ProtocolError
  }
  t.is(err?.code, 'STALE_EPOCH')
  t.is(err?.action, 'ignore')
  // A replayed fragment from the old epoch after the store moved on is the same case.
  t.is(
    code(() => store.put(old.frags[0]!)),
    'STALE_EPOCH'
  )
  t.is(store.stats().refused['STALE_EPOCH'], 2)
})

test('future epoch: refused until the holder installs the view; the placer retries and succeeds', async t => {
  const mesh = await memoryMesh(7, { k: 3, m: 2, segmentBytes: 4096, putRetries: 20, putRetryMs: 5 })
  const v2 = { epoch: 2, members: mesh.view.members }
  mesh.services[0]!.setView(v2)
  const s = randomState(Rng.fromSeed(1), 300, { step: 2, rank: 0, worldSize: 7 })
  const placing = mesh.services[0]!.place(encodeState(s))
  // Holders learn of epoch 2 a little later.
  await new Promise(resolve => setTimeout(resolve, 20))
  for (const svc of mesh.services.slice(1)) svc.setView(v2)
  const res = await placing
  t.is(res.manifest.epoch, 2)
  t.true(mesh.services.slice(1).some(x => (x.store.stats().refused['FUTURE_EPOCH'] ?? 0) > 0))
  await mesh.close()
})

test("stale version: below the recovery point a put is refused; older versions are GC'd once a newer one is complete everywhere", async t => {
  const mesh = await memoryMesh(7, { k: 3, m: 2, segmentBytes: 4096 })
  const place = async (step: number): Promise<void> => {
    const outs = await Promise.all(
      mesh.services.slice(0, 7).map((svc, r) => svc.capture(randomState(Rng.fromSeed(r * 1000 + step), 200, { rank: r, worldSize: 7, step })).done)
    )
    t.true(outs.every(o => o.status === 'placed'))
  }
  // Recovery points need manifests from every member: wait for gossip to settle.
  const settle = (): Promise<void> => new Promise(resolve => setTimeout(resolve, 10))
  await place(1)
  await settle()
  t.deepEqual(mesh.services[3]!.recoveryPoint(), { version: 1, epoch: 1 })
  const versionsHeld = (): number[] =>
    [...new Set(mesh.services.flatMap(svc => mesh.view.members.flatMap(mem => svc.store.list(mem.id).map(l => l.version))))].sort()
  t.deepEqual(versionsHeld(), [1])
  // Rank 0 alone snapshots step 2: version 1 must stay (2 is not complete everywhere yet).
  const only = await mesh.services[0]!.capture(randomState(Rng.fromSeed(2), 200, { rank: 0, worldSize: 7, step: 2 })).done
  t.is(only.status, 'placed')
  await settle()
  t.deepEqual(versionsHeld(), [1, 2])
  t.deepEqual(mesh.services[3]!.recoveryPoint(), { version: 1, epoch: 1 })
  await place(2)
  await settle()
  t.deepEqual(mesh.services[3]!.recoveryPoint(), { version: 2, epoch: 1 })
  t.deepEqual(versionsHeld(), [2])
  // A late put of version 1 is now stale.
  const late = fragmentsFor(mesh.view, 0, 1)
  const holder = mesh.services[mesh.nets.findIndex(n => n.self.id === late.holders[0])]!
  t.is(
    code(() => holder.store.put(late.frags[0]!)),
    'STALE_VERSION'
  )
  await mesh.close()
})

test('version cap: an owner flooding new versions never holds more than maxVersionsPerOwner on a holder', t => {
  const view = view7()
  const store = createFragmentStore({ self: fragmentsFor(view, 0, 1).holders[0]! })
  store.setView(view)
  for (let step = 1; step <= 10; step++) t.is(store.put(fragmentsFor(view, 0, step).frags[0]!), 'stored')
  t.is(store.list('p0').length, 3)
  t.deepEqual(
    store.list('p0').map(l => l.version),
    [10, 9, 8]
  )
  t.true(store.stats().evicted >= 7)
})

void encodeState
