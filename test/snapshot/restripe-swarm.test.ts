import test from 'ava'
import { Rng } from '../../core/index.ts'
import { createSnapshotService, encodeState, placeStripe } from '../../snapshot/index.ts'
import type { View } from '../../mesh/index.ts'
import { bytesEqual, memoryMesh, randomState } from './helpers.ts'

const stateOf = (r: number, step: number, P = 8) => randomState(Rng.fromSeed(r * 100 + step), 4000, { rank: r, worldSize: P, step })
const settle = (): Promise<void> => new Promise(resolve => setTimeout(resolve, 10))

test('re-stripe after a view change: the new placement again survives any m losses; the departed rank stays recoverable', async t => {
  const mesh = await memoryMesh(8, { k: 3, m: 2, segmentBytes: 8 * 1024 })
  const outs = await Promise.all(mesh.services.map((s, r) => s.capture(stateOf(r, 1)).done))
  t.true(outs.every(o => o.status === 'placed'))
  await settle()
  // p0's holder of fragment 0 crashes; the survivors install epoch 2 without it.
  const gone = placeStripe(mesh.view, 0, 3, 2)[0]!
  mesh.hub.kill(gone)
  const v2: View = { epoch: 2, members: mesh.view.members.filter(x => x.id !== gone) }
  const alive = mesh.services.filter((_, i) => mesh.nets[i]!.self.id !== gone)
  for (const s of alive) s.setView(v2)
  await Promise.all(alive.map(s => s.idle()))
  await settle()
  t.deepEqual(alive[0]!.recoveryPoint(), { version: 1, epoch: 2 })
  const m0 = alive[0]!.manifests('p0')[0]!
  t.is(m0.epoch, 2)
  const newHolders = placeStripe(v2, 0, 3, 2)
  t.deepEqual(m0.holders, newHolders)
  // Any two of the new holders may now die.
  const [a, b] = [newHolders[1]!, newHolders[4]!]
  mesh.hub.kill(a)
  mesh.hub.kill(b)
  const recoverer = alive.find((_, i) => ![a, b, 'p0'].includes(v2.members[i]!.id))!
  const rec = await recoverer.recover({ owner: 'p0' })
  t.is(rec.report.epoch, 2)
  t.true(bytesEqual(rec.bytes, encodeState(stateOf(0, 1))))
  // Old-epoch fragments of members were dropped after the re-stripe ...
  t.false(alive.some(s => s.store.list('p0').some(l => l.epoch === 1)))
  // ... but the departed rank's own epoch-1 stripe is kept for whoever replaces it.
  const lost = await recoverer.recover({ owner: gone })
  t.true(
    bytesEqual(
      lost.bytes,
      encodeState(
        stateOf(
          mesh.view.members.findIndex(x => x.id === gone),
          1
        )
      )
    )
  )
  await mesh.close()
})

test('swarm transfer: a joiner with no manifests finds holders by LIST and pulls k fragments from k distinct holders', async t => {
  const mesh = await memoryMesh(8, { k: 4, m: 2, segmentBytes: 8 * 1024 })
  const outs = await Promise.all(mesh.services.map((s, r) => s.capture(stateOf(r, 2)).done))
  t.true(outs.every(o => o.status === 'placed'))
  await settle()
  // A node that was there saw the manifests.
  const seen = await mesh.services[5]!.recover({ owner: 'p3' })
  t.is(seen.report.source, 'manifest')
  // A replacement joins after the gossip: it knows nothing but the peers.
  const net = mesh.hub.createPeer({ id: 'joiner', labels: { zone: 'z9', host: 'h9' } })
  await net.start()
  const joiner = createSnapshotService({ k: 4, m: 2 }, { net, clock: mesh.clock })
  await joiner.start()
  await settle()
  t.deepEqual(joiner.manifests('p3'), [])
  mesh.hub.kill('p3')
  const rec = await joiner.recover({ owner: 'p3' })
  t.is(rec.report.source, 'list')
  t.true(bytesEqual(rec.bytes, encodeState(stateOf(3, 2))))
  const donors = new Set(rec.report.used.map(x => x.holder))
  t.is(donors.size, 4, 'no single donor: every fragment from a different holder')
  t.deepEqual(
    rec.report.used.map(x => x.holder),
    placeStripe(mesh.view, 3, 4, 2).slice(0, 4)
  )
  await joiner.stop()
  await net.stop()
  await mesh.close()
})

test('manifests are only accepted from their owner (forged manifests are rejected and counted)', async t => {
  const mesh = await memoryMesh(7, { k: 3, m: 2 })
  t.is((await mesh.services[0]!.capture(stateOf(0, 1, 7)).done).status, 'placed')
  await settle()
  const real = mesh.services[1]!.manifests('p0')[0]!
  const { encodeManifest, MANIFEST_TOPIC } = await import('../../snapshot/index.ts')
  const forged = encodeManifest({ ...real, version: 99 })
  t.is(mesh.hub.inject('p1', { topic: MANIFEST_TOPIC, from: 'p5', data: forged }), 'reject')
  t.is(mesh.hub.inject('p1', { topic: MANIFEST_TOPIC, from: 'p0', data: new Uint8Array([1, 2, 3]) }), 'reject')
  t.deepEqual(
    mesh.services[1]!.manifests('p0').map(x => x.version),
    [1]
  )
  await mesh.close()
})
