import { peerIdFromString } from '@libp2p/peer-id'
import type { PrivateKey } from '@libp2p/interface'
import { AbortError, InvalidArgumentError, type Clock, type Logger } from '../../core/index.ts'
import { checkGossipSize, checkName } from '../checks.ts'
import { NotStartedError, PeerGoneError } from '../errors.ts'
import { Listeners } from '../listeners.ts'
import type { ByteStream, Connectivity, GossipHandler, PeerId, PeerInfo, PeerLabels, PeerNet, PeerNetEvents, StreamHandler } from '../peernet.ts'
import { Admission } from './admission.ts'
import { Announcer } from './announce.ts'
import { AUTH_PROTOCOL, deriveRunKeys, labelsSchema } from './auth.ts'
import { BulkRoutes } from './bulk-routes.ts'
import { Puncher } from './punch-signal.ts'
import { ipOf, isRelayed, localIps, Reachability } from './reach.ts'
import { RelayClient } from './relays.ts'
import { MESH_LIMITS } from '../limits.ts'
import { DIRECT_PROTOCOL, DirectMessages } from './direct.ts'
import { GossipRouter } from './gossip.ts'
import { bulkListenHost, checkBootstrap, createMeshNode, internals, type MeshNode } from './node.ts'
import { StreamProtocols } from './protocols.ts'
import { OpenStreams } from './stream-adapter.ts'
import { TopicTable } from './topics.ts'

/**
 * PeerNet over libp2p 3: TCP + TLS or noise + yamux, gossipsub for control messages, direct
 * streams (or the bulk channel) for bulk bytes, bootstrap and mDNS discovery, and run
 * isolation by a secret-keyed challenge-response on top of the encrypted connection (see
 * auth.ts): peers that fail it are disconnected and refused for a while, their streams are
 * refused, and gossip without a valid run tag is rejected. Nodes behind NAT find out from the
 * handshake (reach.ts), hold a Circuit Relay v2 slot on a public member (relays.ts), and punch
 * direct bulk connections (punch-signal.ts).
 */
export interface Libp2pPeerNetInit {
  runId: string
  secret: Uint8Array
  privateKey: PrivateKey
  labels: PeerLabels
  /** Listen multiaddrs; default a random loopback TCP port. */
  listen?: string[]
  /** Addresses to announce instead of the listen ones (NAT, public IP). */
  announce?: string[]
  /** Multiaddrs (with /p2p/<id>) to dial at start and whenever no peer is connected. */
  bootstrap?: string[]
  /** LAN discovery; default off. */
  mdns?: boolean
  /** How long a new connection may take to authenticate; default 10 s. */
  authTimeoutMs?: number
  /** How long a peer that failed authentication is refused; default 60 s. */
  denyMs?: number
  /** How often each node announces its addresses so every pair connects; default 2 s. */
  announceIntervalMs?: number
  /**
   * Connection encrypters in order of preference; default ['tls', 'noise']. Both prove the
   * peer id; TLS 1.3 (OpenSSL) moves bulk bytes faster than noise here (docs/PERFORMANCE.md).
   */
  encrypters?: Array<'tls' | 'noise'>
  /**
   * Carry `open()` streams on the bulk channel (native TLS-PSK connections beside libp2p,
   * see bulk.ts) when the peer offers one; default true. libp2p streams remain the fallback.
   */
  bulk?: boolean
  /**
   * Which protocols may ride the bulk channel (default: all; benches use it to measure a
   * protocol on libp2p streams beside the bulk channel).
   */
  bulkProtocol?: (protocol: string) => boolean
  /**
   * The IP addresses this host owns (default: its interfaces and the announce addresses). A
   * peer that sees us at another address tells us a NAT stands between (reach.ts); tests return
   * an empty set to make a loopback node believe it is behind one.
   */
  localIps?: () => Set<string>
}

/** A PeerNet on libp2p, which can also tell the addresses it listens on. */
export interface Libp2pPeerNet extends PeerNet {
  /** The addresses others can dial, each ending in /p2p/<id>. */
  multiaddrs(): string[]
}

const RUN_ID_RE = /^[A-Za-z0-9._-]{1,64}$/

/** Creates (does not start) a libp2p PeerNet. */
export function createLibp2pPeerNet(init: Libp2pPeerNetInit, components: { clock: Clock; log: Logger }): Libp2pPeerNet {
  if (!RUN_ID_RE.test(init.runId)) throw new InvalidArgumentError(`run id must be 1-64 of [A-Za-z0-9._-], got ${JSON.stringify(init.runId)}`)
  return new MeshPeerNet(init, labelsSchema.parse(init.labels), components)
}

/**
 * The composition: Admission (run authentication of every connection), GossipRouter and
 * DirectMessages over one TopicTable, StreamProtocols and BulkRoutes (with the Puncher) for
 * streams, the Announcer, Reachability and the RelayClient, wired to one libp2p node built at
 * start.
 */
class MeshPeerNet implements Libp2pPeerNet {
  private readonly init: Libp2pPeerNetInit
  private readonly labels: PeerLabels
  private readonly log: Logger
  private readonly listeners: Listeners<PeerNetEvents>
  private readonly topics: TopicTable
  private readonly streams = new OpenStreams()
  private readonly gossip: GossipRouter
  private readonly bulk: BulkRoutes
  private readonly admission: Admission
  private readonly protocols: StreamProtocols
  private readonly direct: DirectMessages
  private readonly announcer: Announcer
  private readonly reach: Reachability
  private readonly puncher: Puncher
  private readonly relays: RelayClient
  private node: MeshNode | undefined
  private info!: PeerInfo
  private started = false

  constructor(init: Libp2pPeerNetInit, labels: PeerLabels, { clock, log }: { clock: Clock; log: Logger }) {
    const keys = deriveRunKeys(init.runId, init.secret)
    this.init = init
    // Announced addresses count as ours: a cloud VM's public IP is often not on any interface.
    const announced = (init.announce ?? []).flatMap(a => a.split('/')[2] ?? [])
    this.reach = new Reachability(init.localIps ?? (() => new Set([...localIps(), ...announced])))
    this.labels = labels
    this.log = log
    this.listeners = new Listeners<PeerNetEvents>(err => log.error({ err }, 'peer event listener failed'))
    this.topics = new TopicTable(log)
    this.gossip = new GossipRouter({ runId: init.runId, key: keys.gossip, topics: this.topics })
    this.puncher = new Puncher({
      clock,
      log,
      bindHost: () => this.bulk.listenHost,
      advertisedIp: () => this.reach.advertisedIp(this.bulk.listenHost),
      isAdmitted: peer => this.admission.isAdmitted(peer),
      onSocket: socket => this.bulk.accept(socket),
      onResult: (_, ok) => {
        if (ok) this.reach.punches.ok++
        else this.reach.punches.failed++
      }
    })
    this.bulk = new BulkRoutes({ authKey: keys.auth, log, clock, allow: init.bulkProtocol, punch: (peer, signal) => this.puncher.request(peer, signal) })
    this.admission = new Admission({
      clock,
      log,
      authTimeoutMs: init.authTimeoutMs ?? 10_000,
      denyMs: init.denyMs ?? 60_000,
      handshake: conn => ({
        authKey: keys.auth,
        runId: init.runId,
        self: this.info.id,
        labels,
        bulkPort: this.bulk.port,
        ...(this.bulk.port === undefined ? {} : { bulkHost: this.bulk.listenHost }),
        seen: ipOf(conn)
      }),
      otherConnections: conn => (this.node?.getConnections(conn.remotePeer) ?? []).some(c => c.id !== conn.id && c.status === 'open'),
      hangUp: async peer => {
        await this.node?.hangUp(peer)
      },
      onHandshake: (conn, result, dialer, listener) => {
        this.bulk.learn(conn, result, dialer, listener)
        if (result.seen !== undefined && !isRelayed(conn))
          this.reach.observe(conn.remotePeer.toString(), result.seen, dialer === this.info.id ? 'dialer' : 'listener')
      },
      onAdmit: peer => this.listeners.emit('peer:connect', peer)
    })
    this.protocols = new StreamProtocols({ isAdmitted: peer => this.admission.isAdmitted(peer), streams: this.streams, log })
    this.direct = new DirectMessages({ topics: this.topics, open: peer => this.open(peer, DIRECT_PROTOCOL), log })
    this.protocols.set(DIRECT_PROTOCOL, this.direct.receive)
    this.announcer = new Announcer({
      clock,
      log,
      intervalMs: init.announceIntervalMs ?? 2_000,
      bootstrap: init.bootstrap ?? [],
      addrs: () => this.multiaddrs(),
      publish: (topic, data) => this.publishRaw(topic, data),
      subscribe: (topic, handler) => this.gossip.subscribe(topic, handler),
      dial: (addrs, options) => this.node!.dial(addrs, options),
      hasPeers: () => this.admission.size > 0,
      peerCount: () => this.admission.size,
      known: peer => this.admission.isAdmitted(peer) || peer === this.info.id || this.admission.isDenied(peer)
    })
    this.relays = new RelayClient({
      clock,
      log,
      intervalMs: init.announceIntervalMs ?? 2_000,
      isPrivate: () => this.reach.reach === 'nat',
      admitted: () => [...this.admission.admitted()].map(([id]) => id)
    })
  }

  get self(): PeerInfo {
    return this.info
  }

  async start(): Promise<void> {
    if (this.started) return
    checkBootstrap(this.init.bootstrap ?? [])
    const n = await this.build()
    // The bulk channel listens before libp2p does, so every handshake can offer its port.
    if (this.init.bulk !== false) {
      await this.bulk.start({
        host: bulkListenHost(this.init.listen),
        self: this.info.id,
        handler: p => this.protocols.get(p),
        log: this.log.child({ component: 'mesh:bulk' })
      })
    }
    try {
      await n.start()
    } catch (err) {
      await this.bulk.close()
      throw err
    }
    this.started = true
    this.gossip.subscribeAll()
    this.announcer.start()
    this.relays.start(n)
  }

  async stop(): Promise<void> {
    if (!this.started) return
    this.started = false
    this.announcer.stop()
    this.relays.stop()
    this.streams.abortAll(new NotStartedError('the PeerNet stopped'))
    const n = this.node
    this.admission.clear()
    this.direct.clear()
    await this.bulk.close()
    await n?.stop()
  }

  /**
   * Our listen addresses (public ones too: libp2p's getMultiaddrs() hides a public address until
   * AutoNAT verified it, but a bootstrap node must be able to print where it listens), addresses
   * confirmed since, and relayed addresses of the relays we hold a slot on.
   */
  multiaddrs(): string[] {
    const n = this.node
    if (n === undefined) return []
    const self = `/p2p/${this.info.id}`
    const out = new Set<string>()
    for (const a of internals(n).addressManager.getAddressesWithMetadata()) {
      if (!a.verified && a.type !== 'transport') continue
      const s = a.multiaddr.toString()
      out.add(s.endsWith(self) ? s : `${s}${self}`)
    }
    return [...out]
  }

  peers(): PeerInfo[] {
    const n = this.node
    if (n === undefined) return []
    return [...this.admission.admitted()].filter(([id]) => n.getConnections(peerIdFromString(id)).length > 0).map(([id, l]) => ({ id, labels: l }))
  }

  on<E extends keyof PeerNetEvents>(event: E, listener: (detail: PeerNetEvents[E]) => void): () => void {
    return this.listeners.on(event, listener)
  }

  subscribe(topic: string, handler: GossipHandler): () => void {
    checkName('topic', topic)
    if (topic.startsWith('__')) throw new InvalidArgumentError('topics starting with __ are reserved')
    return this.gossip.subscribe(topic, handler)
  }

  async publish(topic: string, data: Uint8Array): Promise<void> {
    this.requireStarted()
    checkName('topic', topic)
    checkGossipSize(data)
    await this.publishRaw(topic, data)
  }

  async send(peer: PeerId, topic: string, data: Uint8Array): Promise<void> {
    this.requireStarted()
    checkName('topic', topic)
    checkGossipSize(data)
    if (peer === this.info.id || !this.admission.isAdmitted(peer)) return
    await this.direct.send(peer, topic, data)
  }

  handle(protocol: string, handler: StreamHandler): void {
    checkName('protocol', protocol)
    if (protocol.startsWith('__')) throw new InvalidArgumentError('protocols starting with __ are reserved')
    this.protocols.set(protocol, handler)
  }

  unhandle(protocol: string): void {
    this.protocols.delete(protocol)
  }

  async open(peer: PeerId, protocol: string, options: { signal?: AbortSignal } = {}): Promise<ByteStream> {
    const n = this.requireStarted()
    checkName('protocol', protocol)
    if (options.signal?.aborted === true) throw new AbortError('open aborted')
    if (!this.admission.isAdmitted(peer)) throw new PeerGoneError(`peer ${peer} is not connected`, { peer })
    return (await this.bulk.open(peer, protocol, options.signal)) ?? (await this.protocols.open(n, peer, protocol, options.signal))
  }

  connectivity(): Connectivity {
    const n = this.node
    const peers = this.peers().map(p => {
      const conns = n?.getConnections(peerIdFromString(p.id)) ?? []
      return { id: p.id, link: conns.some(c => !isRelayed(c)) ? ('direct' as const) : ('relayed' as const), bulk: this.bulk.path(p.id) }
    })
    return {
      ...this.reach.describe(),
      relays: this.relays.relays(),
      relayServing: n?.services.relay.reservations.size ?? 0,
      peers
    }
  }

  rejectedFrom(peer: PeerId): number {
    return this.topics.rejectedFrom(peer)
  }

  /** Creates the node and hooks every part to it; starts nothing. */
  private async build(): Promise<MeshNode> {
    const init = this.init
    const n = (this.node = await createMeshNode({
      privateKey: init.privateKey,
      listen: init.listen,
      announce: init.announce,
      bootstrap: init.bootstrap ?? [],
      mdns: init.mdns,
      encrypters: init.encrypters,
      isDenied: peer => this.admission.isDenied(peer),
      relayGate: {
        // Only a node peers reach at its own address serves reservations, and only to members.
        reservation: async peer => this.reach.reach === 'public' && (await this.admission.settled(peer, MESH_LIMITS.relay.admissionWaitMs)),
        isAdmitted: peer => this.admission.isAdmitted(peer)
      }
    }))
    this.info = { id: n.peerId.toString(), labels: this.labels }
    this.gossip.attach(n.services.pubsub)
    await n.handle(AUTH_PROTOCOL, this.admission.handleAuthStream, { runOnLimitedConnection: true })
    await this.protocols.attach(n)
    await this.puncher.attach(n)
    n.addEventListener('connection:open', evt => this.admission.onConnectionOpen(evt.detail))
    n.addEventListener('peer:disconnect', evt => this.onDisconnect(evt.detail.toString()))
    return n
  }

  private onDisconnect(id: PeerId): void {
    this.bulk.dropPeer(id)
    this.direct.drop(id)
    if (!this.admission.forget(id)) return
    this.streams.peerGone(id)
    this.listeners.emit('peer:disconnect', id)
  }

  private requireStarted(): MeshNode {
    if (!this.started || this.node === undefined) throw new NotStartedError('the libp2p PeerNet is not started')
    return this.node
  }

  private async publishRaw(topic: string, data: Uint8Array): Promise<void> {
    this.requireStarted()
    await this.gossip.publish(this.info.id, topic, data)
  }
}
