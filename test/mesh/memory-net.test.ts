import { createMemoryNetwork, type PeerNet } from '../../mesh/index.ts'
import { peerNetSuite } from './peernet-compliance.ts'

peerNetSuite('memory', () => {
  const hub = createMemoryNetwork()
  let nets: PeerNet[] = []
  return {
    async create(n) {
      nets = Array.from({ length: n }, (_, i) => hub.createPeer({ id: `p${i}`, labels: { zone: `z${i % 2}`, host: `h${i}` } }))
      await Promise.all(nets.map(x => x.start()))
      await new Promise(resolve => setImmediate(resolve))
      return nets
    },
    async kill(net) {
      hub.kill(net.self.id)
    },
    async close() {
      await Promise.all(nets.map(x => x.stop()))
    }
  }
})
