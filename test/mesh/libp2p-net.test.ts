import { allConnected, startLibp2pNets, type Libp2pNets } from '../helpers/libp2p.ts'
import { peerNetSuite } from './peernet-compliance.ts'

// Streams ride the bulk channel (native TLS-PSK) by default, libp2p streams when it is off:
// both must behave the same.
for (const bulk of [true, false]) {
  peerNetSuite(
    bulk ? 'libp2p (bulk channel)' : 'libp2p (libp2p streams)',
    () => {
      let started: Libp2pNets | undefined
      return {
        async create(n) {
          started = await startLibp2pNets(n, { bulk })
          await allConnected(started.nets)
          return started.nets
        },
        async kill(net) {
          await net.stop()
        },
        async close() {
          await started?.close()
        }
      }
    },
    15_000
  )
}
