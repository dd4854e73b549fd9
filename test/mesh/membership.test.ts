import test from 'ava'
import { Cluster } from './membership-harness.ts'
import { seededRng } from '../helpers/seed.ts'

const ids = (c: Cluster): string[] => [...c.nodes.keys()]

test('a fresh cluster forms one view with every node', async t => {
  const c = new Cluster(5, 1, { expect: 5 })
  await c.startAll()
  const took = await c.until(() => c.agree(ids(c)), 5000, 'formation')
  t.log(`formed in ${took} virtual ms`)
  const v = c.nodes.get('n00')!.m.view()!
  t.is(v.epoch, 1)
  t.deepEqual(
    v.members.map(m => m.id),
    ids(c)
  )
  t.deepEqual(c.violations, [])
  t.is(c.nodes.get('n03')!.m.status().members[3]!.rank, 3)
})

test('a crashed member is removed within the bound derived from the detector; a restart rejoins', async t => {
  const c = new Cluster(5, 2, { expect: 5 })
  await c.startAll()
  await c.until(() => c.agree(ids(c)), 5000, 'formation')
  await c.run(2000) // let the detectors learn the heartbeat rhythm
  const bound = c.nodes.get('n00')!.m.status().detectionBoundMs + 3 * 100
  c.kill('n03')
  const survivors = ids(c).filter(id => id !== 'n03')
  const took = await c.until(() => c.agree(survivors), bound, 'removal of n03')
  t.log(`removed in ${took} ms (bound ${bound} ms)`)
  t.true(took <= bound)
  t.is(c.nodes.get('n00')!.m.view()!.epoch, 2)
  await c.restart('n03')
  await c.until(() => c.agree(ids(c)), 5000, 'rejoin of n03')
  const v = c.nodes.get('n03')!.m.view()!
  t.is(v.epoch, 3)
  t.is(v.members.at(-1)!.id, 'n03', 'a joiner takes the next rank')
  t.deepEqual(c.violations, [])
})

test('the proposer itself can crash: the next live member takes over', async t => {
  const c = new Cluster(4, 3, { expect: 4 })
  await c.startAll()
  await c.until(() => c.agree(ids(c)), 5000, 'formation')
  await c.run(1000)
  c.kill('n00')
  await c.until(() => c.agree(['n01', 'n02', 'n03']), 3000, 'removal of the proposer')
  t.deepEqual(c.violations, [])
})

test('a minority partition pauses and installs nothing; after healing everyone converges', async t => {
  const c = new Cluster(5, 4, { expect: 5 })
  await c.startAll()
  await c.until(() => c.agree(ids(c)), 5000, 'formation')
  await c.run(1000)
  const minority = ['n00', 'n01']
  const majority = ['n02', 'n03', 'n04']
  c.hub.partition(minority, majority)
  await c.until(() => c.agree(majority), 5000, 'the majority view')
  t.is(c.nodes.get('n00')!.m.view()!.epoch, 1, 'the minority installed nothing')
  t.true(c.nodes.get('n00')!.m.status().paused, 'the minority paused')
  t.false(c.nodes.get('n02')!.m.status().paused)
  c.hub.heal()
  await c.until(() => c.agree(ids(c)), 8000, 'convergence after healing')
  t.false(c.nodes.get('n00')!.m.status().paused)
  t.deepEqual(c.violations, [])
})

test('a graceful leave is applied without waiting for the detector', async t => {
  const c = new Cluster(4, 5, { expect: 4 })
  await c.startAll()
  await c.until(() => c.agree(ids(c)), 5000, 'formation')
  await c.run(1000)
  const leaver = c.nodes.get('n02')!
  await leaver.m.stop()
  await leaver.net.stop()
  const took = await c.until(() => c.agree(['n00', 'n01', 'n03']), 3000, 'removal of the leaver')
  t.true(took < c.nodes.get('n00')!.m.status().detectionBoundMs + 300)
})

test('genesis waits for the expected number of nodes', async t => {
  const c = new Cluster(3, 6, { expect: 4 })
  await c.startAll()
  await c.run(3000)
  t.is(c.nodes.get('n00')!.m.view(), undefined, 'three of four expected nodes form nothing')
  await c.restart('n99')
  await c.until(() => c.agree([...ids(c)]), 5000, 'formation once the fourth arrives')
})

test('random crashes, restarts and partitions never produce two views with one epoch, and heal to one view', async t => {
  const { rng, seed } = seededRng(t, 1234)
  const runs = Number(process.env['ZEROMESH_MEMBERSHIP_RUNS'] ?? 12)
  for (let r = 0; r < runs; r++) {
    const runSeed = seed + r
    const local = rng.split(r)
    const c = new Cluster(7, runSeed, { expect: 7 })
    await c.startAll()
    await c.until(() => c.agree(ids(c)), 5000, `formation (seed ${runSeed})`)
    const dead = new Set<string>()
    for (let step = 0; step < 12; step++) {
      const all = ids(c)
      const action = local.int(0, 4)
      if (action === 0 && dead.size < 3) {
        const id = local.pick(all.filter(x => !dead.has(x)))
        c.kill(id)
        dead.add(id)
      } else if (action === 1 && dead.size > 0) {
        const id = local.pick([...dead])
        await c.restart(id)
        dead.delete(id)
      } else if (action === 2) {
        const cut = local.shuffle([...all]).slice(0, local.int(1, 4))
        c.hub.partition(
          cut,
          all.filter(x => !cut.includes(x))
        )
      } else {
        c.hub.heal()
      }
      await c.run(local.int(50, 1500))
      if (c.violations.length > 0) break
    }
    c.hub.heal()
    for (const id of dead) await c.restart(id)
    t.deepEqual(c.violations, [], `safety, seed ${runSeed}: replay with ZEROMESH_SEED=${runSeed} ZEROMESH_MEMBERSHIP_RUNS=1`)
    await c.until(() => c.agree(ids(c)), 15_000, `liveness after healing (seed ${runSeed})`)
  }
})

test("a node's 'does not train' label travels in its handshake into every member's view (and only then: the others' members have no such key)", async t => {
  const c = new Cluster(3, 2, { expect: 4 })
  c.add('n03', { trains: false })
  await c.startAll()
  await c.until(() => c.agree(ids(c)), 5000, 'formation')
  for (const id of ids(c)) {
    const v = c.nodes.get(id)!.m.view()!
    t.deepEqual(
      v.members.map(m => ('trains' in m ? `${m.id}:${String(m.trains)}` : m.id)),
      ['n00', 'n01', 'n02', 'n03:false'],
      `the view at ${id}`
    )
  }
  t.deepEqual(c.violations, [])
})
