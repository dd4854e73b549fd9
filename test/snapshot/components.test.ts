import test from 'ava'
import { AbortError, RealClock, Rng } from '../../core/index.ts'
import { createErasureCoder, type ErasureCoder } from '../../codec/index.ts'
import { createMemoryNetwork, type PeerNet, type View } from '../../mesh/index.ts'
import { createFragmentStore, encodeState, type FragmentStore, type Manifest } from '../../snapshot/index.ts'
import { createHolder, type Holder } from '../../snapshot/holder.ts'
import { createInlineCoder } from '../../snapshot/coder.ts'
import { createPlacer } from '../../snapshot/placer.ts'
import { createRecoveryClient } from '../../snapshot/recovery.ts'
import { createTransfers } from '../../snapshot/transfer.ts'
import { bytesEqual, randomState, topology } from './helpers.ts'

// The holder, placer and recovery client wired by hand, without the service: each gets only
// its own dependencies (the net's handler registration, a store, a transfer bound, ...).

interface Node {
  net: PeerNet
  store: FragmentStore
  holder: Holder
}

async function world(n: number): Promise<{ view: View; nodes: Node[]; close: () => Promise<void> }> {
  const hub = createMemoryNetwork()
  const clock = new RealClock()
  const members = topology(n)
  const view: View = { epoch: 1, members }
  const nodes = members.map(mem => {
    const net = hub.createPeer({ id: mem.id, labels: { zone: mem.zone, host: mem.host } })
    const store = createFragmentStore({ self: mem.id })
    store.setView(view)
    const transfers = createTransfers({ idleMs: 2000 }, { clock, net })
    return { net, store, holder: createHolder({ net, store, watchdog: transfers.watchdog }) }
  })
  await Promise.all(nodes.map(x => x.net.start()))
  for (const x of nodes) x.holder.start()
  return {
    view,
    nodes,
    async close() {
      for (const x of nodes) x.holder.stop()
      await Promise.all(nodes.map(x => x.net.stop()))
    }
  }
}

const coders = (): ((k: number, m: number) => ErasureCoder) => {
  const made = new Map<string, ErasureCoder>()
  return (k, m) => made.get(`${k}/${m}`) ?? made.set(`${k}/${m}`, createErasureCoder({ k, m })).get(`${k}/${m}`)!
}

function placerOn(node: Node, view: View, published: Manifest[], signal = new AbortController().signal): ReturnType<typeof createPlacer> {
  return createPlacer(
    { k: 2, m: 1, segmentBytes: 4096, putRetries: 0, putRetryMs: 0, scope: 'spread' },
    {
      self: node.net.self.id,
      view: () => view,
      transfers: createTransfers({ idleMs: 2000 }, { clock: new RealClock(), net: node.net }),
      clock: new RealClock(),
      coder: createInlineCoder({ coderFor: coders(), breathe: async () => {} }),
      publish: async mf => {
        published.push(mf)
      },
      signal
    }
  )
}

function recoveryOn(node: Node, manifests: Manifest[], signal = new AbortController().signal): ReturnType<typeof createRecoveryClient> {
  return createRecoveryClient({
    self: node.net.self.id,
    store: node.store,
    transfers: createTransfers({ idleMs: 2000 }, { clock: new RealClock(), net: node.net }),
    manifest: (owner, version) => manifests.find(x => x.owner === owner && (version === undefined || x.version === version)),
    peers: () => node.net.peers().map(p => p.id),
    coder: createInlineCoder({ coderFor: coders(), breathe: async () => {} }),
    signal
  })
}

test("placer pushes each fragment to its holder's store; the manifest names them", async t => {
  const w = await world(5)
  t.teardown(w.close)
  const bytes = encodeState(randomState(Rng.fromSeed(1), 3000, { rank: 0, worldSize: 5, step: 7 }))
  const published: Manifest[] = []
  const placed = await placerOn(w.nodes[0]!, w.view, published).place(bytes)
  t.is(published.length, 1)
  t.is(published[0], placed.manifest)
  t.is(placed.duplicates, 0)
  placed.manifest.holders.forEach((h, i) => {
    const holder = w.nodes.find(x => x.net.self.id === h)!
    t.truthy(holder.store.get('p0', 7, 1, i), `fragment ${i} is on ${h}`)
  })
  const again = await placerOn(w.nodes[0]!, w.view, published).place(bytes)
  t.is(again.duplicates, 3, 'every holder already had its fragment')
})

test('recovery client: without a manifest it asks holders (LIST); with one it survives a holder that stopped serving', async t => {
  const w = await world(5)
  t.teardown(w.close)
  const bytes = encodeState(randomState(Rng.fromSeed(2), 3000, { rank: 0, worldSize: 5, step: 4 }))
  const published: Manifest[] = []
  await placerOn(w.nodes[0]!, w.view, published).place(bytes)
  const mf = published[0]!
  const reader = w.nodes.find(x => !mf.holders.includes(x.net.self.id) && x.net.self.id !== 'p0')!

  const listed = await recoveryOn(reader, []).recover({ owner: 'p0' })
  t.is(listed.report.source, 'list')
  t.true(bytesEqual(listed.bytes, bytes))

  // The holder of data fragment 0 stops serving: the parity fragment is fetched instead.
  w.nodes.find(x => x.net.self.id === mf.holders[0])!.holder.stop()
  const rec = await recoveryOn(reader, [mf]).recover({ owner: 'p0', version: 4 })
  t.is(rec.report.source, 'manifest')
  t.true(bytesEqual(rec.bytes, bytes))
  t.deepEqual(
    rec.report.used.map(u => u.index),
    [1, 2]
  )
  t.deepEqual(
    rec.report.missing.map(x => x.index),
    [0]
  )
})

test('recovery client: an aborted call rejects with AbortError, and so does every call after its lifetime ends', async t => {
  const w = await world(5)
  t.teardown(w.close)
  const published: Manifest[] = []
  await placerOn(w.nodes[0]!, w.view, published).place(encodeState(randomState(Rng.fromSeed(3), 500, { rank: 0, worldSize: 5, step: 1 })))
  const lifetime = new AbortController()
  const client = recoveryOn(w.nodes[4]!, published, lifetime.signal)
  await t.throwsAsync(client.recover({ owner: 'p0' }, { signal: AbortSignal.abort() }), { instanceOf: AbortError })
  t.is((await client.recover({ owner: 'p0' })).report.version, 1, 'positive control: the same call succeeds unaborted')
  lifetime.abort()
  await t.throwsAsync(client.recover({ owner: 'p0' }), { instanceOf: AbortError })
})
