import test from 'ava'
import { ManualClock } from '../../core/index.ts'
import { createMemoryNetwork, type MembershipStatus, type PeerNet } from '../../mesh/index.ts'
import { DASHBOARD_LIMITS, DashboardRecorder, PROGRESS_TOPIC } from '../../node/dashboard/model.ts'
import { startProgressGossip, WATCH_TOPIC } from '../../node/dashboard/gossip.ts'
import type { TrainStatus } from '../../node/index.ts'

// The dashboard's gossip (node/dashboard/gossip.ts): a training node gossips its progress only
// while some node of the run serves a page; a serving node's beacons switch the others on, and
// they fall silent again watchTimeoutMs after the last beacon.

const training = (step: number): TrainStatus =>
  ({
    role: 'rank',
    rank: 0,
    step,
    steps: 100,
    phase: 'training',
    bytes: { host: 0, zone: 0, wan: 0 },
    recoveries: [],
    growths: [],
    worldSize: 2
  }) as unknown as TrainStatus

async function settle(clock: ManualClock, ms: number): Promise<void> {
  // Timers fire in order; the memory network delivers in microtasks between them.
  for (let t = 0; t < ms; t += 100) {
    clock.advance(100)
    for (let i = 0; i < 5; i++) await Promise.resolve()
  }
}

test('nobody gossips progress while no node serves a page; a page switches every node on, and they stop watchTimeoutMs after the last beacon', async t => {
  const clock = new ManualClock()
  const hub = createMemoryNetwork()
  const nets: PeerNet[] = ['a', 'b', 'c'].map((id, i) => hub.createPeer({ id, labels: { zone: `z${i}`, host: `h${i}` } }))
  for (const n of nets) await n.start()
  const heard = { progress: 0, watch: 0 }
  // A bystander's count of what crosses the mesh.
  const spy = hub.createPeer({ id: 'spy', labels: { zone: 'z9', host: 'h9' } })
  await spy.start()
  spy.subscribe(PROGRESS_TOPIC, { deliver: () => void heard.progress++ })
  spy.subscribe(WATCH_TOPIC, { deliver: () => void heard.watch++ })
  const membership = (): MembershipStatus => ({
    self: 'a',
    epoch: 1,
    members: [],
    paused: false,
    member: true,
    joining: [],
    leader: 'a',
    detectionBoundMs: 1000
  })
  const recorder = (id: string): DashboardRecorder =>
    new DashboardRecorder({ clock, run: 'r', self: { id, zone: 'z', host: 'h' }, config: {}, membership, worldSize: () => 2, training: () => training(7) })
  const rec = { a: recorder('a'), b: recorder('b'), c: recorder('c') }
  const a = startProgressGossip({ net: nets[0]!, clock, recorder: rec.a, serving: false })
  const b = startProgressGossip({ net: nets[1]!, clock, recorder: rec.b, serving: false })
  await settle(clock, 20 * DASHBOARD_LIMITS.tickMs)
  t.is(heard.progress, 0, 'no page anywhere: no progress gossip')
  t.false(a.publishing())
  // c serves a page: its beacon switches a and b on within a tick, and c sees their rows.
  const c = startProgressGossip({ net: nets[2]!, clock, recorder: rec.c, serving: true })
  await settle(clock, 2 * DASHBOARD_LIMITS.tickMs)
  t.true(a.publishing() && b.publishing())
  t.true(heard.watch >= 1)
  const state = rec.c.state()
  t.truthy(state.nodes['a'], "a row for a on c's page")
  t.truthy(state.nodes['b'], "a row for b on c's page")
  // The page goes away: after watchTimeoutMs without a beacon, a and b fall silent.
  c.stop()
  await settle(clock, DASHBOARD_LIMITS.watchTimeoutMs + 2 * DASHBOARD_LIMITS.tickMs)
  t.false(a.publishing())
  const before = heard.progress
  await settle(clock, 10 * DASHBOARD_LIMITS.tickMs)
  t.is(heard.progress, before, 'silent again')
  // A beacon that is not empty is refused (validate), and changes nothing.
  await nets[2]!.publish(WATCH_TOPIC, new Uint8Array([1])).catch(() => {})
  await settle(clock, DASHBOARD_LIMITS.tickMs)
  t.false(a.publishing())
  a.stop()
  b.stop()
})
