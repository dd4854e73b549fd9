import { ProtocolError } from '../core/index.ts'
import type { PeerNet } from '../mesh/index.ts'
import { decodeManifest, encodeManifest, MANIFEST_TOPIC, type Manifest } from './manifest.ts'

/** What manifest gossip uses: the topic subscription, direct sends and the connected peers. */
export interface ManifestGossipDeps {
  net: Pick<PeerNet, 'subscribe' | 'send' | 'peers'>
  /** Receives every valid manifest from another node (its sender is its owner). */
  onManifest: (mf: Manifest) => void
}

/**
 * Manifests between nodes on MANIFEST_TOPIC. A manifest goes to every connected peer as a
 * direct message (the mesh is a full mesh) rather than through gossipsub: a gossip message is
 * signed and each receiver verifies it, which at one manifest per rank per step cost more CPU
 * than placing the fragments (docs/PERFORMANCE.md). Receivers check the same thing: the sender
 * is the owner. A peer that misses it (not connected yet) asks holders with LIST when it
 * needs the state.
 */
export interface ManifestGossip {
  /** Subscribes to the topic. */
  start(): void
  /** Unsubscribes. */
  stop(): void
  /** Sends `mf` to every connected peer; a lost send is not an error. */
  announce(mf: Manifest): Promise<void>
}

/** Creates the manifest gossip of one node. */
export function createManifestGossip(deps: ManifestGossipDeps): ManifestGossip {
  const { net } = deps
  let unsubscribe: (() => void) | undefined
  // validate decodes; deliver, called right after it with the same message, reuses that
  // (the schema check and msgpack decode were most of a manifest's cost on the receiver).
  let checked: { data: Uint8Array; mf: Manifest } | undefined
  return {
    start() {
      unsubscribe = net.subscribe(MANIFEST_TOPIC, {
        validate(msg) {
          checked = undefined
          try {
            const mf = decodeManifest(msg.data)
            checked = { data: msg.data, mf }
            return mf.owner === msg.from ? 'accept' : 'reject'
          } catch (err) {
            return err instanceof ProtocolError ? err.action : 'reject'
          }
        },
        deliver(msg) {
          const mf = checked?.data === msg.data ? checked.mf : decodeManifest(msg.data)
          checked = undefined
          deps.onManifest(mf)
        }
      })
    },
    stop() {
      unsubscribe?.()
      unsubscribe = undefined
    },
    async announce(mf) {
      const bytes = encodeManifest(mf)
      await Promise.allSettled(net.peers().map(p => net.send(p.id, MANIFEST_TOPIC, bytes)))
    }
  }
}
