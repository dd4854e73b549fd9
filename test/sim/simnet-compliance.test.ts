import { Simulation, createSimNetwork, DEFAULT_TOPOLOGY } from '../../sim/index.ts'
import type { PeerNet } from '../../mesh/index.ts'
import { peerNetSuite } from '../mesh/peernet-compliance.ts'

// The PeerNet compliance suite, on SimNet, with simulated time flowing as fast as it can.
peerNetSuite('simnet', () => {
  const sim = new Simulation({ seed: 1 })
  const simnet = createSimNetwork(sim, DEFAULT_TOPOLOGY)
  let stop = (): void => {}
  let nets: PeerNet[] = []
  return {
    async create(n) {
      stop = sim.autoAdvance()
      nets = Array.from({ length: n }, (_, i) => simnet.createPeer({ id: `p${i}`, labels: { zone: `z${i % 2}`, host: `h${i}` } }).net)
      await Promise.all(nets.map(x => x.start()))
      while (!nets.every(x => x.peers().length === n - 1)) await new Promise(resolve => setTimeout(resolve, 1))
      return nets
    },
    async kill(net) {
      simnet.crash(net.self.id)
    },
    async close() {
      await Promise.all(nets.map(x => x.stop()))
      stop()
    }
  }
})
