import test from 'ava'
import { Simulation, NodeClock, createSimNetwork, DEFAULT_TOPOLOGY, type Topology } from '../../sim/index.ts'

test('a paused node clock holds its timers and runs them in order on resume; a crash drops them', async t => {
  const sim = new Simulation({ seed: 1 })
  const c = new NodeClock(sim.clock)
  const fired: string[] = []
  c.setTimeout(() => fired.push('a'), 10)
  c.setTimeout(() => fired.push('b'), 20)
  c.pause()
  await sim.run(50)
  t.deepEqual(fired, [])
  c.resume()
  t.deepEqual(fired, ['a', 'b'])
  c.setTimeout(() => fired.push('c'), 10)
  c.crash()
  await sim.run(50)
  t.deepEqual(fired, ['a', 'b'])
})

const flat = (p: Partial<Topology['wan']>): Topology => ({
  host: { ...DEFAULT_TOPOLOGY.host, ...p },
  zone: { ...DEFAULT_TOPOLOGY.zone, ...p },
  wan: { ...DEFAULT_TOPOLOGY.wan, ...p }
})

async function pair(topology: Topology, seed = 1) {
  const sim = new Simulation({ seed, keepTrace: true })
  const net = createSimNetwork(sim, topology)
  const a = net.createPeer({ id: 'a', labels: { zone: 'z1', host: 'h1' } })
  const b = net.createPeer({ id: 'b', labels: { zone: 'z2', host: 'h2' } })
  await a.net.start()
  await b.net.start()
  await sim.run(1000)
  return { sim, net, a: a.net, b: b.net }
}

test('a transfer takes size over bandwidth plus latency on the WAN tier', async t => {
  const { sim, a, b } = await pair(flat({ latencyMs: 20, jitterMs: 0, bandwidthBytesPerS: 100e6 }))
  let done = 0
  b.handle('/sink/1', async s => {
    for await (const c of s) void c
    done = sim.now()
  })
  // Nothing moves unless simulated time does: drive the clock while the transfer runs.
  let start = 0
  const transfer = (async () => {
    const s = await a.open('b', '/sink/1')
    start = sim.now()
    for (let i = 0; i < 10; i++) await s.write(new Uint8Array(1_000_000))
    await s.end()
  })()
  await sim.until(() => done > 0, 10_000, 1)
  await transfer
  const took = done - start
  // 10 MB at 100 MB/s = 100 ms, plus one 20 ms latency.
  t.true(took >= 119 && took <= 125, `took ${took} ms`)
  t.true(sim.traceLines().some(l => l.includes('open from=a to=b')))
})

test('loss, duplication and corruption happen at their rates, deterministically', async t => {
  const run = async (seed: number): Promise<{ got: number; corrupt: number; hash: string }> => {
    const { sim, a, b } = await pair(flat({ loss: 0.2, duplicate: 0.1, corrupt: 0.05, jitterMs: 0 }), seed)
    let got = 0
    b.subscribe('t', {
      deliver: () => {
        got++
      }
    })
    await sim.run(100)
    for (let i = 0; i < 2000; i++) await a.publish('t', Uint8Array.of(i & 0xff))
    await sim.run(1000)
    return { got, corrupt: b.rejectedFrom('a'), hash: sim.traceHash() }
  }
  const r = await run(1)
  // Expected deliveries: 2000 * 0.8 * 1.1 * 0.95 ≈ 1672; corrupt drops ≈ 2000 * 0.8 * 1.1 * 0.05 ≈ 88.
  t.true(r.got > 1550 && r.got < 1800, `delivered ${r.got}`)
  t.true(r.corrupt > 50 && r.corrupt < 130, `corrupt ${r.corrupt}`)
  t.deepEqual(await run(1), r, 'same seed, same outcome')
  t.not((await run(2)).hash, r.hash)
})

test('partitions cut and heal links with events; pauses hold deliveries; slow nodes are slower', async t => {
  const { sim, net, a, b } = await pair(flat({ latencyMs: 10, jitterMs: 0 }))
  const events: string[] = []
  a.on('peer:disconnect', id => events.push(`down ${id}`))
  a.on('peer:connect', p => events.push(`up ${p.id}`))
  net.partition([['a'], ['b']])
  await sim.run(50)
  t.deepEqual(a.peers(), [])
  net.heal()
  await sim.run(50)
  t.deepEqual(events, ['down b', 'up b'])
  t.deepEqual(
    a.peers().map(p => p.id),
    ['b']
  )

  const got: number[] = []
  b.subscribe('t', { deliver: () => got.push(sim.now()) })
  net.pause('b')
  await a.publish('t', Uint8Array.of(1))
  await sim.run(100)
  t.deepEqual(got, [], 'nothing is handled while paused')
  net.resume('b')
  t.is(got.length, 1, 'held deliveries run on resume')

  net.slow('a', 5)
  const t0 = sim.now()
  await a.publish('t', Uint8Array.of(2))
  await sim.run(100)
  t.true(got[1]! - t0 >= 50, `a slow node's message took ${got[1]! - t0} ms`)
  t.throws(() => net.slow('a', 0.5), { name: 'InvalidArgumentError' })
})
