import test from 'ava'
import type { PeerNet } from '../../mesh/index.ts'
import {
  DEFAULT_TOPOLOGY,
  Simulation,
  createSimNetwork,
  parseScenario,
  parseTrainScenario,
  topologyOf,
  type SimNetwork,
  type Topology
} from '../../sim/index.ts'

// SimNet's shared links: each host's NIC and each zone's uplink carry a capacity that every
// flow through them shares, chunk by chunk. Two zones of two hosts each:
// a1 (z0, h1), a2 (z0, h2), b1 (z1, h3), b2 (z1, h4). Per-pair links and NICs are fast unless a
// test says otherwise, latency is 0.5 ms and there is no jitter, so the shared link a test
// narrows is the bottleneck. Everything runs in simulated time: the figures are exact.

const MB = 1_000_000
const WRITE = 250_000
const FAST = 1e12
const tier = { latencyMs: 0.5, jitterMs: 0, bandwidthBytesPerS: FAST, loss: 0, duplicate: 0, corrupt: 0 }

interface Mesh {
  sim: Simulation
  net: SimNetwork
  peers: Record<'a1' | 'a2' | 'b1' | 'b2', PeerNet>
  /** Bytes each node has received on /sink/1, by sender, and when each inbound stream ended. */
  got: Map<string, number>
  done: Map<string, number>
}

async function mesh(over: Partial<Topology>): Promise<Mesh> {
  const sim = new Simulation({ seed: 1 })
  const net = createSimNetwork(sim, {
    host: tier,
    zone: tier,
    wan: tier,
    nic: { egressBytesPerS: FAST, ingressBytesPerS: FAST },
    uplink: { egressBytesPerS: FAST, ingressBytesPerS: FAST },
    ...over
  })
  const labels = { a1: ['z0', 'h1'], a2: ['z0', 'h2'], b1: ['z1', 'h3'], b2: ['z1', 'h4'] } as const
  const got = new Map<string, number>()
  const done = new Map<string, number>()
  const peers = {} as Mesh['peers']
  for (const [id, [zone, host]] of Object.entries(labels)) {
    const p = net.createPeer({ id, labels: { zone, host } }).net
    p.handle('/sink/1', async s => {
      const key = `${s.remote}>${id}`
      for await (const c of s) got.set(key, (got.get(key) ?? 0) + c.length)
      done.set(key, sim.now())
    })
    await p.start()
    peers[id as keyof Mesh['peers']] = p
  }
  await sim.run(10)
  return { sim, net, peers, got, done }
}

/** Streams `bytes` from `from` to `to` in 250 kB writes; the receiver records when it ended. */
async function stream(from: PeerNet, to: string, bytes: number): Promise<void> {
  const s = await from.open(to, '/sink/1')
  for (let sent = 0; sent < bytes; sent += WRITE) await s.write(new Uint8Array(Math.min(WRITE, bytes - sent)))
  await s.end()
}

/** Starts the transfers together; returns each one's duration (ms, to the receiver's end) by `from>to`. */
async function together(
  m: Mesh,
  transfers: Array<[keyof Mesh['peers'], keyof Mesh['peers'], number]>,
  probeAt?: number
): Promise<{ ms: Record<string, number>; probe: Record<string, number> }> {
  const keys = transfers.map(([from, to]) => `${from}>${to}`)
  for (const k of keys) {
    m.got.delete(k)
    m.done.delete(k)
  }
  const t0 = m.sim.now()
  const runs = transfers.map(([from, to, bytes]) => stream(m.peers[from], to, bytes))
  const probe: Record<string, number> = {}
  if (probeAt !== undefined) {
    await m.sim.run(probeAt)
    for (const [from, to] of transfers) probe[`${from}>${to}`] = m.got.get(`${from}>${to}`) ?? 0
  }
  await m.sim.until(() => keys.every(k => m.done.has(k)), 60_000, 1)
  await Promise.all(runs)
  return { ms: Object.fromEntries(keys.map(k => [k, m.done.get(k)! - t0])), probe }
}

const near = (x: number, want: number, slack: number): boolean => Math.abs(x - want) <= slack

test('one flow across zones gets the whole 10 MB/s uplink', async t => {
  const m = await mesh({ uplink: { egressBytesPerS: 10 * MB, ingressBytesPerS: FAST } })
  const { ms } = await together(m, [['a1', 'b1', 10 * MB]])
  t.true(near(ms['a1>b1']!, 1000, 15), `10 MB took ${ms['a1>b1']} ms`)
})

test('two flows from two hosts of a zone through its 10 MB/s uplink each get half of it, at every moment', async t => {
  const m = await mesh({ uplink: { egressBytesPerS: 10 * MB, ingressBytesPerS: FAST } })
  const { ms, probe } = await together(
    m,
    [
      ['a1', 'b1', 10 * MB],
      ['a2', 'b2', 10 * MB]
    ],
    1000
  )
  t.log(`took ${JSON.stringify(ms)}; after 1 s: ${JSON.stringify(probe)}`)
  t.true(near(ms['a1>b1']!, 2000, 20) && near(ms['a2>b2']!, 2000, 20), `took ${JSON.stringify(ms)}`)
  // Halfway, each has half of its 10 MB: fair shares, not one after the other.
  t.true(near(probe['a1>b1']!, 5 * MB, 0.5 * MB) && near(probe['a2>b2']!, 5 * MB, 0.5 * MB), `after 1 s: ${JSON.stringify(probe)}`)
  // Bytes per tier are still counted: the 20 MB of stream data crossed zones.
  t.is(m.net.stats().wan.bytes, 20 * MB)
  t.is(m.net.stats().zone.bytes, 0)
})

test("a zone's own uplink capacity overrides the default", async t => {
  const m = await mesh({ uplink: { egressBytesPerS: 10 * MB, ingressBytesPerS: FAST }, zones: { z1: { uplink: { ingressBytesPerS: 5 * MB } } } })
  const { ms } = await together(m, [['a1', 'b1', 10 * MB]])
  t.true(near(ms['a1>b1']!, 2000, 25), `10 MB into a 5 MB/s uplink took ${ms['a1>b1']} ms`)
})

test('a host NIC is shared by its flows to different peers; a slow node divides its NIC too', async t => {
  const m = await mesh({ nic: { egressBytesPerS: 10 * MB, ingressBytesPerS: FAST } })
  const one = await together(m, [['a1', 'a2', 10 * MB]])
  t.true(near(one.ms['a1>a2']!, 1000, 15), `alone: ${one.ms['a1>a2']} ms`)
  const two = await together(m, [
    ['a1', 'a2', 10 * MB],
    ['a1', 'b1', 10 * MB]
  ])
  t.true(near(two.ms['a1>a2']!, 2000, 20) && near(two.ms['a1>b1']!, 2000, 20), `sharing a1's NIC: ${JSON.stringify(two.ms)}`)
  m.net.slow('a1', 2)
  const slow = await together(m, [['a1', 'b2', 10 * MB]])
  t.true(near(slow.ms['a1>b2']!, 2000, 20), `a1 slowed 2x: ${slow.ms['a1>b2']} ms`)
})

test('what one flow cannot use of a shared NIC goes to the other (max-min fair)', async t => {
  // a1's NIC carries 10 MB/s; its flow across zones is held to 2 MB/s by the uplink, so the
  // flow inside the zone gets the other 8 MB/s, not an equal 5.
  const m = await mesh({ nic: { egressBytesPerS: 10 * MB, ingressBytesPerS: FAST }, uplink: { egressBytesPerS: 2 * MB, ingressBytesPerS: FAST } })
  const { ms } = await together(m, [
    ['a1', 'a2', 8 * MB],
    ['a1', 'b1', 2 * MB]
  ])
  t.log(`took ${JSON.stringify(ms)}`)
  t.true(near(ms['a1>a2']!, 1000, 40) && near(ms['a1>b1']!, 1000, 40), `took ${JSON.stringify(ms)}`)
})

test('a small message is not stuck behind a big transfer through the same uplink and NIC', async t => {
  const m = await mesh({ nic: { egressBytesPerS: 10 * MB, ingressBytesPerS: FAST }, uplink: { egressBytesPerS: 10 * MB, ingressBytesPerS: FAST } })
  const arrived = new Map<string, number>()
  for (const id of ['b1', 'b2'] as const) m.peers[id].subscribe('ping', { deliver: msg => arrived.set(`${msg.from}>${id}`, m.sim.now()) })
  const t0 = m.sim.now()
  const big = stream(m.peers.a1, 'b1', 10 * MB)
  await m.sim.run(300)
  const sent = m.sim.now()
  // From another host through the same uplink, and from a1 itself to another peer (same NIC, same uplink).
  await m.peers.a2.send('b2', 'ping', new Uint8Array(1000))
  await m.peers.a1.send('b2', 'ping', new Uint8Array(1000))
  await m.sim.until(() => m.done.has('a1>b1'), 60_000, 1)
  await big
  const bigMs = m.done.get('a1>b1')! - t0
  t.true(bigMs > 1000, `the big transfer took ${bigMs} ms`)
  // One 64 KiB chunk at 10 MB/s is 6.6 ms: each waits behind about one chunk of the big flow.
  for (const k of ['a2>b2', 'a1>b2']) {
    const took = arrived.get(k)! - sent
    t.log(`${k}: 1 kB in ${took.toFixed(2)} ms beside a 10 MB transfer of ${bigMs.toFixed(0)} ms`)
    t.true(took < 20, `${k} took ${took} ms while ${Math.round(bigMs - (sent - t0))} ms of the big transfer were left`)
  }
})

test("the tier's bandwidth still caps one pair, and degrading that link still slows it", async t => {
  const m = await mesh({ wan: { ...tier, bandwidthBytesPerS: 10 * MB } })
  const capped = await together(m, [['a1', 'b1', 10 * MB]])
  t.true(near(capped.ms['a1>b1']!, 1000, 15), `a pair capped at 10 MB/s: ${capped.ms['a1>b1']} ms`)
  m.net.degrade('a1', 'b1', 2)
  const degraded = await together(m, [['a1', 'b1', 10 * MB]])
  t.true(near(degraded.ms['a1>b1']!, 2000, 20), `degraded 2x: ${degraded.ms['a1>b1']} ms`)
  // Another pair has its own cap: it is not held back by the degraded one.
  const both = await together(m, [
    ['a1', 'b1', 10 * MB],
    ['a2', 'b2', 10 * MB]
  ])
  t.true(near(both.ms['a2>b2']!, 1000, 15) && near(both.ms['a1>b1']!, 2000, 20), `side by side: ${JSON.stringify(both.ms)}`)
})

test('scenario topologies take NIC and uplink capacities with per-zone overrides over the defaults', t => {
  const s = parseScenario({
    name: 'x',
    nodes: 4,
    zones: 2,
    durationMs: 1000,
    topology: { wan: { latencyMs: 20 }, nic: { egressBytesPerS: 1e8 }, uplink: { ingressBytesPerS: 5e7 }, zones: { z1: { uplink: { egressBytesPerS: 1e7 } } } }
  })
  const topo = topologyOf(s.topology)
  t.deepEqual(topo.nic, { egressBytesPerS: 1e8, ingressBytesPerS: DEFAULT_TOPOLOGY.nic!.ingressBytesPerS })
  t.deepEqual(topo.uplink, { egressBytesPerS: DEFAULT_TOPOLOGY.uplink!.egressBytesPerS, ingressBytesPerS: 5e7 })
  t.deepEqual(topo.zones, { z1: { uplink: { egressBytesPerS: 1e7 } } })
  t.is(topo.wan.latencyMs, 20)
  t.is(topo.wan.bandwidthBytesPerS, DEFAULT_TOPOLOGY.wan.bandwidthBytesPerS)
  // Training scenarios take the same topology, checked against their own zones.
  const train = { name: 't', workload: 'train', nodes: 4, worldSize: 4, steps: 2 }
  t.deepEqual(parseTrainScenario({ ...train, topology: { uplink: { egressBytesPerS: 1e8 } } }).topology, { uplink: { egressBytesPerS: 1e8 } })
  t.throws(() => parseTrainScenario({ ...train, topology: { zones: { z2: {} } } }, 't.json'), {
    name: 'ScenarioError',
    message: /^t\.json: topology\.zones\.z2: no such zone \(zones: 2/
  })
})
