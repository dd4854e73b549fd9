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
import { circuitRelayServer, circuitRelayTransport, type CircuitRelayService } from '@libp2p/circuit-relay-v2'
import { dcutr } from '@libp2p/dcutr'
import type { PeerId as Libp2pPeerId, PrivateKey, Stream } from '@libp2p/interface'
import { peerIdFromString } from '@libp2p/peer-id'
import { multiaddr, type Multiaddr } from '@multiformats/multiaddr'
import { InvalidArgumentError } from '../../core/index.ts'
import { MESH_LIMITS } from '../limits.ts'
import { describe } from './errors.ts'
import { READ_HIGH } from './stream-adapter.ts'

/** A libp2p node with gossipsub as `pubsub` and a Circuit Relay v2 server as `relay`. */
export type MeshNode = Libp2p<{ pubsub: GossipSub; relay: CircuitRelayService }>

/** Where a node listens unless told: a random loopback TCP port. */
const DEFAULT_LISTEN = ['/ip4/127.0.0.1/tcp/0']

/**
 * The two libp2p components zeromesh reaches past the public node API for: the address
 * manager (every listen address, verified or not) and the transport manager (listening on a
 * relay chosen at run time, relays.ts). `Libp2p.components` is a public field of js-libp2p's node
 * class; its interface type does not declare it.
 */
export interface NodeInternals {
  addressManager: { getAddressesWithMetadata(): Array<{ multiaddr: Multiaddr; verified: boolean; type: string }> }
  transportManager: { listen(addrs: Multiaddr[]): Promise<void> }
}

/** The components of `node` named in {@link NodeInternals}. */
export function internals(node: MeshNode): NodeInternals {
  return (node as unknown as { components: NodeInternals }).components
}

/**
 * Opens a stream to `peer` on a connection it already has (a direct one first, else a relayed
 * one), dialling only when there is none. libp2p's dialProtocol never reuses a limited (relayed)
 * connection: it dials anew, which for a peer behind NAT fails or opens a second circuit.
 */
export async function openStream(node: MeshNode, peer: string, protocol: string, options: { signal?: AbortSignal } = {}): Promise<Stream> {
  const id = peerIdFromString(peer)
  const open = node.getConnections(id).filter(c => c.status === 'open')
  const conn = open.find(c => c.limits === undefined) ?? open[0]
  const opts = { ...options, runOnLimitedConnection: true }
  return conn === undefined ? await node.dialProtocol(id, protocol, opts) : await conn.newStream(protocol, opts)
}

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
  /**
   * Who may use this node as a relay and be relayed: a reservation is served when it resolves
   * true (the relay waits for the run handshake; net.ts), a relayed connection when both
   * ends are admitted, an inbound relayed connection when the relay is admitted.
   */
  relayGate: {
    reservation: (peer: string) => Promise<boolean>
    isAdmitted: (peer: string) => boolean
  }
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
 * floods publishes and accepts messages up to maxGossipBytes plus envelope room (also over
 * relayed connections); Circuit Relay v2 (the transport, to dial and listen through relays,
 * and a server with MESH_LIMITS.relay, gated to the run by `relayGate`); DCUtR. No AutoNAT:
 * reach.ts says why.
 */
export async function createMeshNode(opts: NodeOptions): Promise<MeshNode> {
  const denied = (peer: { toString(): string }): boolean => opts.isDenied(peer.toString())
  const R = MESH_LIMITS.relay
  return await createLibp2p({
    privateKey: opts.privateKey,
    addresses: { listen: opts.listen ?? DEFAULT_LISTEN, announce: opts.announce ?? [] },
    transports: [tcp(), circuitRelayTransport({ reservationCompletionTimeout: MESH_LIMITS.relay.hopTimeoutMs })],
    connectionEncrypters: (opts.encrypters ?? ['tls', 'noise']).map(e => (e === 'tls' ? tls() : noise())),
    streamMuxers: [yamux({ streamOptions: { maxStreamWindowSize: 4 * 1024 * 1024, maxReadBufferLength: 4 * READ_HIGH, inactivityTimeout: 600_000 } })],
    peerDiscovery: [...(opts.bootstrap.length > 0 ? [bootstrap({ list: opts.bootstrap, timeout: 0 })] : []), ...(opts.mdns === true ? [mdns()] : [])],
    connectionManager: {
      maxIncomingPendingConnections: MESH_LIMITS.libp2pInbound.maxPending,
      inboundUpgradeTimeout: MESH_LIMITS.libp2pInbound.upgradeTimeoutMs,
      inboundConnectionThreshold: MESH_LIMITS.libp2pInbound.perHostPerSecond
    },
    connectionGater: {
      denyDialPeer: denied,
      denyInboundEncryptedConnection: denied,
      denyOutboundEncryptedConnection: denied,
      denyDialMultiaddr: () => false,
      denyInboundRelayReservation: async (peer: Libp2pPeerId) => !(await opts.relayGate.reservation(peer.toString())),
      denyOutboundRelayedConnection: (src: Libp2pPeerId, dst: Libp2pPeerId) =>
        !opts.relayGate.isAdmitted(src.toString()) || !opts.relayGate.isAdmitted(dst.toString()),
      denyInboundRelayedConnection: (relay: Libp2pPeerId) => !opts.relayGate.isAdmitted(relay.toString())
    },
    services: {
      identify: identify(),
      ping: ping(),
      pubsub: gossipsub({
        allowPublishToZeroTopicPeers: true,
        floodPublish: true,
        heartbeatInterval: 500,
        maxInboundDataLength: MESH_LIMITS.maxGossipBytes + 4096,
        runOnLimitedConnection: true
      }),
      relay: circuitRelayServer({
        hopTimeout: R.hopTimeoutMs,
        reservations: {
          maxReservations: R.maxReservations,
          reservationTtl: R.reservationTtlMs,
          applyDefaultLimit: true,
          defaultDataLimit: R.dataLimitBytes,
          defaultDurationLimit: R.durationLimitMs
        }
      }),
      dcutr: dcutr()
    },
    start: false
  })
}
