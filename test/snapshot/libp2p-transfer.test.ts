import test from 'ava'
import { RealClock, Rng } from '../../core/index.ts'
import { createSnapshotService, encodeState, type SnapshotService } from '../../snapshot/index.ts'
import { allConnected, startLibp2pNets } from '../helpers/libp2p.ts'
import { bytesEqual, randomState } from './helpers.ts'

// Snapshot puts, fetches and lists over real libp2p nodes, with the bulk channel (native TLS)
// and without it. Regression: on the bulk channel every put stalled after the holder's first
// reply, because the reply was parsed from a Node Buffer's pool (see the PeerNet compliance
// case "received chunks are plain Uint8Arrays").
for (const bulk of [true, false]) {
  test.serial(`libp2p (${bulk ? 'bulk channel' : 'libp2p streams'}): place, then recover by GET and by LIST after the owner stops`, async t => {
    const started = await startLibp2pNets(6, { bulk, runId: 'snapshot-test' })
    const services: SnapshotService[] = []
    try {
      const nets = started.nets
      await allConnected(nets)
      const clock = new RealClock()
      const view = { epoch: 1, members: nets.slice(0, 5).map(n => ({ id: n.self.id, zone: n.self.labels.zone, host: n.self.labels.host })) }
      for (const net of nets.slice(0, 5)) {
        const s = createSnapshotService({ k: 2, m: 1, idleTimeoutMs: 5000, autoRestripe: false }, { net, clock })
        await s.start()
        s.setView(view)
        services.push(s)
      }
      const state = randomState(Rng.fromSeed(5), 40_000, { worldSize: 5, step: 3 })
      for (let step = 1; step <= 3; step++) {
        const out = await services[0]!.capture({ ...state, step }).done
        t.is(out.status, 'placed', out.status === 'failed' ? out.error.message : out.status)
      }
      // The owner goes away; a member that saw the manifest fetches by GET.
      await services[0]!.stop()
      await nets[0]!.stop()
      const rec = await services[1]!.recover({ owner: nets[0]!.self.id, version: 3 })
      t.is(rec.state.step, 3)
      t.true(bytesEqual(rec.bytes, encodeState(state)))
      // A node that joined after the manifest was gossiped asks the holders what they hold.
      const late = createSnapshotService({ k: 2, m: 1, idleTimeoutMs: 5000, autoRestripe: false }, { net: nets[5]!, clock })
      services.push(late)
      await late.start()
      late.setView({
        epoch: 1,
        members: [...view.members.slice(1), { id: nets[5]!.self.id, zone: nets[5]!.self.labels.zone, host: nets[5]!.self.labels.host }]
      })
      const rec2 = await late.recover({ owner: nets[0]!.self.id, version: 3, peers: nets.slice(1, 5).map(n => n.self.id) })
      t.true(bytesEqual(rec2.bytes, encodeState(state)))
    } finally {
      await Promise.all(services.map(s => s.stop().catch(() => {})))
      await started.close()
    }
  })
}
