import test from 'ava'
import { ManualClock, silentLogger } from '../../core/index.ts'
import { ANNOUNCE_TOPIC, Announcer, encodeAnnouncement } from '../../mesh/libp2p/announce.ts'
import { MESH_LIMITS } from '../../mesh/limits.ts'
import type { GossipHandler } from '../../mesh/peernet.ts'

// Address announcements (mesh/libp2p/announce.ts): every period while the mesh around a node
// changes, backing off to MESH_LIMITS.maxAnnounceIntervalMs while it does not, and back to the
// period when its addresses, its admitted peers or a stranger's announcement say a peer may
// lack its addresses. Every announcement crosses every link of the mesh, slow ones too.

function harness(): {
  clock: ManualClock
  times: number[]
  state: { addrs: string[]; peers: number }
  hear: (from: string, addrs: string[]) => void
  announcer: Announcer
} {
  const clock = new ManualClock()
  const times: number[] = []
  const state = { addrs: ['/ip4/10.0.0.1/tcp/4001/p2p/self'], peers: 3 }
  let handler: GossipHandler | undefined
  const announcer = new Announcer({
    clock,
    log: silentLogger(),
    intervalMs: 2000,
    bootstrap: [],
    addrs: () => state.addrs,
    publish: async topic => {
      if (topic === ANNOUNCE_TOPIC) times.push(clock.monotonic())
    },
    subscribe: (_topic, h) => {
      handler = h
      return () => {}
    },
    dial: async () => undefined,
    hasPeers: () => state.peers > 0,
    peerCount: () => state.peers,
    known: peer => peer.startsWith('known')
  })
  const hear = (from: string, addrs: string[]): void => {
    const data = encodeAnnouncement(addrs)
    if (handler!.validate?.({ from, topic: ANNOUNCE_TOPIC, data }) === 'reject') throw new Error('rejected')
    handler!.deliver({ from, topic: ANNOUNCE_TOPIC, data })
  }
  return { clock, times, state, hear, announcer }
}

test('a node whose mesh does not change announces less and less often, down to one announcement per maxAnnounceIntervalMs', t => {
  const { clock, times, announcer } = harness()
  announcer.start()
  clock.advance(120_000)
  announcer.stop()
  const gaps = times.slice(1).map((x, i) => x - times[i]!)
  t.log(`announcements at ${times.map(x => x / 1000).join(', ')} s`)
  t.deepEqual(gaps.slice(0, 4), [2000, 4000, 8000, 16000])
  t.true(gaps.every(g => g <= MESH_LIMITS.maxAnnounceIntervalMs))
  t.is(gaps.at(-1), MESH_LIMITS.maxAnnounceIntervalMs)
  // Every 2 s before: 60 announcements in these two minutes.
  t.true(times.length <= 8, `${times.length} announcements`)
})

test('new addresses, a change in admitted peers or a stranger’s announcement bring the next announcement within one period', t => {
  const { clock, times, state, hear, announcer } = harness()
  announcer.start()
  clock.advance(100_000)
  const after = (fn: () => void): number => {
    const n = times.length
    fn()
    clock.advance(2000)
    t.true(times.length > n, 'announced within one period')
    return times.length
  }
  // Settled again after each change before the next one.
  after(() => state.addrs.push('/ip4/10.0.0.1/tcp/4001/p2p-circuit/p2p/self'))
  clock.advance(100_000)
  after(() => {
    state.peers = 4
  })
  clock.advance(100_000)
  after(() => hear('stranger', ['/ip4/10.0.0.2/tcp/4001/p2p/stranger']))
  clock.advance(100_000)
  // An admitted peer's announcement changes nothing: the wait stays long.
  const n = times.length
  hear('known-1', ['/ip4/10.0.0.3/tcp/4001/p2p/known-1'])
  clock.advance(2000)
  t.is(times.length, n)
  announcer.stop()
})
