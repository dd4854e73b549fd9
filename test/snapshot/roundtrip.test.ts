import test from 'ava'
import { Rng } from '../../core/index.ts'
import { encodeState, placeStripe, UnrecoverableError } from '../../snapshot/index.ts'
import { seededRng } from '../helpers/seed.ts'
import { bytesEqual, memoryMesh, randomState, subsets } from './helpers.ts'

// k=3, m=2 on 7 nodes: the owner p0 and holders p1..p5 (one spare). Every pattern of up to m
// dead holders recovers byte-identical state; every pattern of m+1 is UnrecoverableError.
test('round trip: every pattern of up to m lost holders recovers byte-identical state (k=3, m=2)', async t => {
  const rng = Rng.fromSeed(11)
  const state = randomState(rng, 5000, { step: 7 })
  const expected = encodeState(state)
  const patterns = subsets(5, 2)
  t.is(patterns.length, 16)
  for (const dead of patterns) {
    const mesh = await memoryMesh(7, { k: 3, m: 2, segmentBytes: 16 * 1024 })
    const owner = mesh.services[0]!
    const ticket = owner.capture(state)
    const out = await ticket.done
    t.is(out.status, 'placed', out.status === 'failed' ? out.error.message : '')
    const holders = placeStripe(mesh.view, 0, 3, 2)
    for (const i of dead) mesh.hub.kill(holders[i]!)
    mesh.hub.kill('p0')
    const gone = new Set([...dead.map(i => holders[i]!), 'p0'])
    const alive = mesh.services[mesh.nets.findIndex(n => !gone.has(n.self.id))]!
    const rec = await alive.recover({ owner: 'p0' })
    t.true(bytesEqual(rec.bytes, expected), `dead ${dead.join(',')}`)
    t.is(rec.state.step, 7)
    t.is(rec.report.used.length, 3)
    // Data fragments are tried first; a lost one is reported, and parity stands in for it.
    t.true(rec.report.missing.every(x => dead.includes(x.index)))
    t.true(rec.report.used.every(x => !dead.includes(x.index)))
    t.deepEqual(
      rec.report.missing.map(x => x.index),
      dead.filter(i => i < 3 || rec.report.missing.some(x => x.index === i))
    )
    await mesh.close()
  }
})

test('m+1 lost holders: UnrecoverableError names rank, version and missing fragments (every pattern)', async t => {
  const rng = Rng.fromSeed(12)
  const state = randomState(rng, 2000, { step: 9 })
  for (const dead of subsets(5, 3).filter(s => s.length === 3)) {
    const mesh = await memoryMesh(7, { k: 3, m: 2, segmentBytes: 8 * 1024 })
    t.is((await mesh.services[0]!.capture(state).done).status, 'placed')
    const holders = placeStripe(mesh.view, 0, 3, 2)
    for (const i of dead) mesh.hub.kill(holders[i]!)
    const alive = mesh.services[6]!
    const err = await t.throwsAsync(alive.recover({ owner: 'p0' }), { instanceOf: UnrecoverableError })
    t.is(err!.rank, 0)
    t.is(err!.version, 9)
    t.deepEqual(err!.missing, dead)
    t.is(err!.name, 'UnrecoverableError')
    await mesh.close()
  }
})

test('round trip: seeded random loss patterns for k=6, m=3 on 12 nodes', async t => {
  const { rng } = seededRng(t, 2024)
  const mesh = await memoryMesh(12, { k: 6, m: 3, segmentBytes: 32 * 1024 })
  // Every rank snapshots; then random sets of up to m holders per stripe are cut off for one recovery each.
  const states = mesh.services.map((_, r) => randomState(rng.split(`state-${r}`), 3000 + r * 17, { rank: r, worldSize: 12, step: 4 }))
  const outs = await Promise.all(mesh.services.map((s, r) => s.capture(states[r]!).done))
  t.true(outs.every(o => o.status === 'placed'))
  for (let trial = 0; trial < 12; trial++) {
    const owner = rng.int(0, 12)
    const holders = placeStripe(mesh.view, owner, 6, 3)
    const lose = rng.int(0, 4)
    const dead = new Set<string>()
    while (dead.size < lose) dead.add(holders[rng.int(0, 9)]!)
    const recoverer = mesh.services.find(s => s !== mesh.services[owner] && !dead.has(mesh.nets[mesh.services.indexOf(s)]!.self.id))!
    const peersAlive = mesh.nets.map(n => n.self.id).filter(id => !dead.has(id))
    mesh.hub.partition([...dead], peersAlive)
    const rec = await recoverer.recover({ owner: `p${owner}` })
    t.true(bytesEqual(rec.bytes, encodeState(states[owner]!)), `trial ${trial} owner ${owner} dead ${[...dead].join(',')}`)
    mesh.hub.heal()
  }
  await mesh.close()
})
