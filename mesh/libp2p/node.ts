import { createLibp2p, type Libp2p } from 'libp2p'
import { tcp } from '@libp2p/tcp'
import { noise } from '@chainsafe/libp2p-noise'
import { tls } from '@libp2p/tls'
import { yamux } from '@chainsafe/libp2p-yamux'
import { identify } from '@libp2p/identify'
import { ping } from '@libp2p/ping'
import { bootstrap } from '@libp2p/bootstrap'
import { mdns } from '@libp2p/mdns'
import { gossipsub, type GossipSub } from '@libp2p/gossipsub'
import type { PrivateKey } from '@libp2p/interface'
import { multiaddr } from '@multiformats/multiaddr'
import { InvalidArgumentError } from '../../core/index.ts'
import { MESH_LIMITS } from '../limits.ts'
import { describe } from './errors.ts'
import { READ_HIGH } from './stream-adapter.ts'

/** A libp2p node with gossipsub as `pubsub`. */
export type MeshNode = Libp2p<{ pubsub: GossipSub }>

/** Where a node listens unless told: a random loopback TCP port. */
const DEFAULT_LISTEN = ['/ip4/127.0.0.1/tcp/0']

/** The transport, discovery and gating choices of a node. */
export interface NodeOptions {
  privateKey: PrivateKey
  listen?: string[]
  announce?: string[]
  bootstrap: string[]
  mdns?: boolean
  encrypters?: Array<'tls' | 'noise'>
  /** Peers to refuse at every stage of a connection (failed authentication recently). */
  isDenied: (peer: string) => boolean
}

/** Throws InvalidArgumentError unless every bootstrap address parses and names its peer. */
export function checkBootstrap(list: string[]): void {
  for (const a of list) {
    try {
      const ma = multiaddr(a)
      if (ma.getComponents().every(c => c.name !== 'p2p')) throw new Error('it has no /p2p/<peer id> part')
    } catch (err) {
      throw new InvalidArgumentError(`bad bootstrap multiaddr '${a}': ${describe(err)}`)
    }
  }
}

/** The IP the bulk channel listens on: the first listen address's, default loopback. */
export function bulkListenHost(listen: string[] | undefined): string {
  const host = (listen ?? DEFAULT_LISTEN)[0]?.split('/')[2]
  return host === undefined || host === '' ? '127.0.0.1' : host
}

/**
 * Creates (does not start) the libp2p node: TCP; TLS and/or noise; yamux with a 4 MiB window
 * and room for four read highs of unread bytes; bootstrap and mDNS discovery; gossipsub that
 * floods publishes and accepts messages up to maxGossipBytes plus envelope room.
 */
export async function createMeshNode(opts: NodeOptions): Promise<MeshNode> {
  const denied = (peer: { toString(): string }): boolean => opts.isDenied(peer.toString())
  return await createLibp2p({
    privateKey: opts.privateKey,
    addresses: { listen: opts.listen ?? DEFAULT_LISTEN, announce: opts.announce ?? [] },
    transports: [tcp()],
    connectionEncrypters: (opts.encrypters ?? ['tls', 'noise']).map(e => (e === 'tls' ? tls() : noise())),
    streamMuxers: [yamux({ streamOptions: { maxStreamWindowSize: 4 * 1024 * 1024, maxReadBufferLength: 4 * READ_HIGH, inactivityTimeout: 600_000 } })],
    peerDiscovery: [...(opts.bootstrap.length > 0 ? [bootstrap({ list: opts.bootstrap, timeout: 0 })] : []), ...(opts.mdns === true ? [mdns()] : [])],
    connectionGater: {
      denyDialPeer: denied,
      denyInboundEncryptedConnection: denied,
      denyOutboundEncryptedConnection: denied,
      denyDialMultiaddr: () => false
    },
    services: {
      identify: identify(),
      ping: ping(),
      pubsub: gossipsub({
        allowPublishToZeroTopicPeers: true,
        floodPublish: true,
        heartbeatInterval: 500,
        maxInboundDataLength: MESH_LIMITS.maxGossipBytes + 4096
      })
    },
    start: false
  })
}
