import { randomBytes } from 'node:crypto'
import { createLibp2p, type Libp2p } from 'libp2p'
import { tcp } from '@libp2p/tcp'
import { noise } from '@chainsafe/libp2p-noise'
import { tls } from '@libp2p/tls'
import { yamux } from '@chainsafe/libp2p-yamux'
import { identify } from '@libp2p/identify'
import { ping } from '@libp2p/ping'
import { bootstrap } from '@libp2p/bootstrap'
import { mdns } from '@libp2p/mdns'
import { gossipsub, TopicValidatorResult, type GossipSub, type Message } from '@libp2p/gossipsub'
import { peerIdFromString } from '@libp2p/peer-id'
import { multiaddr } from '@multiformats/multiaddr'
import type { Connection, PeerId as Libp2pPeerId, PrivateKey, Stream } from '@libp2p/interface'
import { z } from 'zod'
import { AbortError, InvalidArgumentError, settleOnAbort, type Clock, type Logger } from '../../core/index.ts'
import { createEnvelopeCodec, zBytes } from '../../codec/index.ts'
import { AUTH_NONCE_BYTES, authProof, deriveRunKeys, gossipTag, proofsEqual, type RunKeys } from './auth.ts'
import { bulkKey, bulkSessionId, startBulkChannel, type BulkChannel } from '../bulk.ts'
import { ByteQueue } from '../byte-queue.ts'
import { checkChunkSize, checkGossipSize, checkName, remember } from '../checks.ts'
import { AuthenticationError, NotStartedError, PeerGoneError, ProtocolNotSupportedError, StreamResetError } from '../errors.ts'
import { MESH_LIMITS } from '../limits.ts'
import { Listeners } from '../listeners.ts'
import { MessageReader, writeMessage } from '../lp.ts'
import type { ByteStream, GossipHandler, PeerId, PeerInfo, PeerLabels, PeerNet, PeerNetEvents, StreamHandler } from '../peernet.ts'

/**
 * PeerNet over libp2p 3: TCP + noise + yamux, gossipsub for control messages, direct streams
 * for bulk bytes, bootstrap and mDNS discovery, and run isolation by a secret-keyed
 * challenge-response on top of noise (see auth.ts): peers that fail it are disconnected and
 * refused for a while, their streams are refused, and gossip without a valid run tag is rejected.
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
}

export interface Libp2pPeerNet extends PeerNet {
  /** The addresses others can dial, each ending in /p2p/<id>. */
  multiaddrs(): string[]
}

const RUN_ID_RE = /^[A-Za-z0-9._-]{1,64}$/
const AUTH_PROTOCOL = '/zeromesh/auth/1.0.0'
const AUTH_MAX_MESSAGE = 1024
const ANNOUNCE_TOPIC = '__addrs'
/** Unread bytes at which a stream stops granting the sender window, and resumes below half. */
const READ_HIGH = MESH_LIMITS.maxStreamReadBufferBytes
const TAG_BYTES = 32
// Direct messages (PeerNet.send) travel on one long-lived stream per peer and direction, each
// message a length-prefixed topic then a length-prefixed body. Reserved names start with '__'.
const DIRECT_PROTOCOL = '__direct'

const labelsSchema = z.strictObject({ zone: z.string().min(1).max(64), host: z.string().min(1).max(253) })
const authCodec = createEnvelopeCodec({
  hello: z.strictObject({ nonce: zBytes(AUTH_NONCE_BYTES), labels: labelsSchema, bulkPort: z.int().min(1).max(65535).optional() }),
  proof: z.strictObject({ nonce: zBytes(AUTH_NONCE_BYTES).optional(), labels: labelsSchema.optional(), proof: zBytes(64), bulkPort: z.int().min(1).max(65535).optional() }),
  ok: z.strictObject({})
}, { maxBytes: AUTH_MAX_MESSAGE })
const announceCodec = createEnvelopeCodec({
  addrs: z.strictObject({ addrs: z.array(z.string().max(256)).max(16) })
})

/** Creates (does not start) a libp2p PeerNet. */
export function createLibp2pPeerNet (init: Libp2pPeerNetInit, components: { clock: Clock, log: Logger }): Libp2pPeerNet {
  if (!RUN_ID_RE.test(init.runId)) throw new InvalidArgumentError(`run id must be 1-64 of [A-Za-z0-9._-], got ${JSON.stringify(init.runId)}`)
  const labels = labelsSchema.parse(init.labels)
  const keys: RunKeys = deriveRunKeys(init.runId, init.secret)
  const { clock, log } = components
  const authTimeoutMs = init.authTimeoutMs ?? 10_000
  const denyMs = init.denyMs ?? 60_000
  const announceMs = init.announceIntervalMs ?? 2_000
  const listeners = new Listeners<PeerNetEvents>(err => log.error({ err }, 'peer event listener failed'))
  const authed = new Map<PeerId, PeerLabels>()
  const denied = new Map<PeerId, number>()
  const topics = new Map<string, GossipHandler>()
  const handlers = new Map<string, StreamHandler>()
  const rejected = new Map<PeerId, number>()
  const streams = new Set<Libp2pByteStream>()
  const directOut = new Map<PeerId, { stream: Promise<ByteStream>, busy: boolean }>()
  const fullTopic = (t: string): string => `/zeromesh/${init.runId}/${t}`
  const fullProtocol = (p: string): string => `/zeromesh${p.startsWith('/') ? '' : '/'}${p}`
  let node: Libp2p<{ pubsub: GossipSub }> | undefined
  let bulk: BulkChannel | undefined
  /** Where and under which handshake session to reach each peer's bulk channel. */
  const bulkPeers = new Map<PeerId, { host: string, port: number, session: string }>()
  const bulkPortField = (): { bulkPort?: number } => (bulk === undefined ? {} : { bulkPort: bulk.port })

  /** Remembers a peer's bulk endpoint and the key of this handshake. */
  const learnBulk = (conn: Connection, port: number | undefined, dialer: PeerId, listener: PeerId, nonceD: Uint8Array, nonceL: Uint8Array): void => {
    const host = ipOf(conn)
    if (bulk === undefined || port === undefined || host === undefined) return
    const peer = conn.remotePeer.toString()
    const session = bulkSessionId(nonceD, nonceL)
    bulk.addSession(peer, session, bulkKey(keys.auth, dialer, listener, nonceD, nonceL))
    if (!bulkPeers.has(peer)) bulkPeers.set(peer, { host, port, session })
  }
  let self!: PeerInfo
  let announceTimer: number | undefined
  let started = false

  const isDenied = (peer: string): boolean => {
    const until = denied.get(peer)
    if (until === undefined) return false
    if (clock.monotonic() < until) return true
    denied.delete(peer)
    return false
  }

  const refuse = (peer: Libp2pPeerId, why: string): void => {
    const id = peer.toString()
    if (authed.has(id)) return
    log.debug({ peer: id, why }, 'peer failed run authentication; disconnecting')
    remember(denied, id, clock.monotonic() + denyMs)
    void node?.hangUp(peer).catch(() => {})
  }

  const admit = (peer: Libp2pPeerId, peerLabels: PeerLabels): void => {
    const id = peer.toString()
    if (authed.has(id)) return
    authed.set(id, peerLabels)
    log.debug({ peer: id, labels: peerLabels }, 'peer authenticated')
    listeners.emit('peer:connect', { id, labels: peerLabels })
  }

  /** An AbortSignal that fires after `ms` of the injected clock. */
  const deadline = (ms: number): AbortSignal => {
    const ac = new AbortController()
    clock.setTimeout(() => ac.abort(new AuthenticationError('authentication timed out')), ms)
    return ac.signal
  }

  /** Dialer side of the handshake, on a connection we opened. */
  const authenticateOutbound = async (conn: Connection): Promise<void> => {
    const signal = deadline(authTimeoutMs)
    const raw = await conn.newStream(AUTH_PROTOCOL, { signal })
    const s = new Libp2pByteStream(raw, conn.remotePeer.toString(), AUTH_PROTOCOL)
    const reader = new MessageReader(s, AUTH_MAX_MESSAGE)
    try {
      // Nonces come from the OS CSPRNG on purpose: a seeded Rng would make them predictable.
      const nonceD = new Uint8Array(randomBytes(AUTH_NONCE_BYTES))
      await writeMessage(s, authCodec.encode('hello', { nonce: nonceD, labels, ...bulkPortField() }), { signal })
      const reply = authCodec.decode(await required(reader.next(), signal))
      if (reply.type !== 'proof' || reply.payload.nonce?.length !== AUTH_NONCE_BYTES || reply.payload.labels === undefined) throw new AuthenticationError('malformed proof')
      const nonceL = reply.payload.nonce
      const expect = authProof(keys.auth, 'listener', init.runId, conn.remotePeer.toString(), self.id, nonceD, nonceL)
      if (!proofsEqual(expect, reply.payload.proof)) throw new AuthenticationError('the listener does not know the run secret')
      await writeMessage(s, authCodec.encode('proof', { proof: authProof(keys.auth, 'dialer', init.runId, self.id, conn.remotePeer.toString(), nonceD, nonceL) }), { signal })
      const ok = authCodec.decode(await required(reader.next(), signal))
      if (ok.type !== 'ok') throw new AuthenticationError('the listener did not accept our proof')
      await s.end()
      learnBulk(conn, reply.payload.bulkPort, self.id, conn.remotePeer.toString(), nonceD, nonceL)
      admit(conn.remotePeer, reply.payload.labels)
    } catch (err) {
      s.abort()
      throw err
    }
  }

  /** Listener side of the handshake. */
  const authenticateInbound = async (raw: Stream, conn: Connection): Promise<void> => {
    const signal = deadline(authTimeoutMs)
    const s = new Libp2pByteStream(raw, conn.remotePeer.toString(), AUTH_PROTOCOL)
    const reader = new MessageReader(s, AUTH_MAX_MESSAGE)
    let stage = 'waiting for its hello'
    try {
      const hello = authCodec.decode(await required(reader.next(), signal))
      if (hello.type !== 'hello' || hello.payload.nonce.length !== AUTH_NONCE_BYTES) throw new AuthenticationError('malformed hello')
      const nonceD = hello.payload.nonce
      const nonceL = new Uint8Array(randomBytes(AUTH_NONCE_BYTES))
      const proof = authProof(keys.auth, 'listener', init.runId, self.id, conn.remotePeer.toString(), nonceD, nonceL)
      await writeMessage(s, authCodec.encode('proof', { nonce: nonceL, labels, proof, ...bulkPortField() }), { signal })
      // A dialer without the secret finds our proof invalid and hangs up here.
      stage = 'after our proof: it does not share the run secret, or it hung up'
      const reply = authCodec.decode(await required(reader.next(), signal))
      if (reply.type !== 'proof') throw new AuthenticationError('malformed proof')
      const expect = authProof(keys.auth, 'dialer', init.runId, conn.remotePeer.toString(), self.id, nonceD, nonceL)
      if (!proofsEqual(expect, reply.payload.proof)) throw new AuthenticationError('the dialer does not know the run secret')
      await writeMessage(s, authCodec.encode('ok', {}), { signal })
      await s.end()
      learnBulk(conn, hello.payload.bulkPort, conn.remotePeer.toString(), self.id, nonceD, nonceL)
      admit(conn.remotePeer, hello.payload.labels)
    } catch (err) {
      s.abort()
      refuse(conn.remotePeer, err instanceof AuthenticationError ? err.message : `handshake failed ${stage} (${describe(err)})`)
    }
  }

  const onConnectionOpen = (conn: Connection): void => {
    const peer = conn.remotePeer.toString()
    if (isDenied(peer)) {
      void conn.close().catch(() => {})
      return
    }
    if (authed.has(peer)) return
    if (conn.direction === 'outbound') {
      authenticateOutbound(conn).catch(err => refuse(conn.remotePeer, describe(err)))
    } else {
      // The dialer must prove itself in time; the handshake handler admits it.
      clock.setTimeout(() => {
        if (!authed.has(peer) && conn.status === 'open') refuse(conn.remotePeer, `no authentication within ${authTimeoutMs} ms`)
      }, authTimeoutMs)
    }
  }

  const validator = (topic: string) => (_relay: Libp2pPeerId, msg: Message): TopicValidatorResult => {
    if (msg.type !== 'signed') return TopicValidatorResult.Reject
    const from = msg.from.toString()
    const count = (): TopicValidatorResult => {
      remember(rejected, from, (rejected.get(from) ?? 0) + 1)
      return TopicValidatorResult.Reject
    }
    if (msg.data.length < TAG_BYTES || msg.data.length > MESH_LIMITS.maxGossipBytes + TAG_BYTES) return count()
    const data = msg.data.subarray(TAG_BYTES)
    if (!proofsEqual(msg.data.subarray(0, TAG_BYTES), gossipTag(keys.gossip, from, topic, data))) return count()
    const handler = topics.get(topic)
    if (handler === undefined) return TopicValidatorResult.Ignore
    let verdict
    try {
      verdict = handler.validate?.({ topic, from, data }) ?? 'accept'
    } catch (err) {
      log.debug({ err: describe(err), topic, from }, 'gossip validator threw; rejecting')
      verdict = 'reject' as const
    }
    if (verdict === 'reject') return count()
    return verdict === 'accept' ? TopicValidatorResult.Accept : TopicValidatorResult.Ignore
  }

  const onMessage = (msg: Message): void => {
    if (msg.type !== 'signed') return
    const prefix = `/zeromesh/${init.runId}/`
    if (!msg.topic.startsWith(prefix)) return
    const topic = msg.topic.slice(prefix.length)
    const handler = topics.get(topic)
    if (handler === undefined) return
    try {
      handler.deliver({ topic, from: msg.from.toString(), data: msg.data.subarray(TAG_BYTES) })
    } catch (err) {
      log.error({ err: describe(err), topic }, 'gossip handler threw')
    }
  }

  /** Inbound direct messages: validated and delivered like gossip from the stream's peer. */
  const onDirect = async (stream: ByteStream): Promise<void> => {
    const reader = new MessageReader(stream, MESH_LIMITS.maxGossipBytes)
    for (;;) {
      const topicBytes = await reader.next()
      if (topicBytes === undefined) return
      const data = await reader.next()
      if (data === undefined) return
      const topic = new TextDecoder().decode(topicBytes)
      const handler = topic.startsWith('__') ? undefined : topics.get(topic)
      if (handler === undefined) continue
      const msg = { topic, from: stream.remote, data }
      let verdict
      try {
        verdict = handler.validate?.(msg) ?? 'accept'
      } catch (err) {
        log.debug({ err: describe(err), topic, from: stream.remote }, 'direct message validator threw; rejecting')
        verdict = 'reject' as const
      }
      if (verdict === 'reject') remember(rejected, stream.remote, (rejected.get(stream.remote) ?? 0) + 1)
      if (verdict !== 'accept') continue
      try {
        handler.deliver(msg)
      } catch (err) {
        log.error({ err: describe(err), topic }, 'direct message handler threw')
      }
    }
  }
  handlers.set(DIRECT_PROTOCOL, onDirect)

  const requireStarted = (): Libp2p<{ pubsub: GossipSub }> => {
    if (!started || node === undefined) throw new NotStartedError('the libp2p PeerNet is not started')
    return node
  }

  const subscribeRaw = (topic: string, handler: GossipHandler): (() => void) => {
    topics.set(topic, handler)
    if (node !== undefined) {
      node.services.pubsub.topicValidators.set(fullTopic(topic), validator(topic))
      node.services.pubsub.subscribe(fullTopic(topic))
    }
    return () => {
      if (topics.get(topic) !== handler) return
      topics.delete(topic)
      node?.services.pubsub.unsubscribe(fullTopic(topic))
      node?.services.pubsub.topicValidators.delete(fullTopic(topic))
    }
  }

  const publishRaw = async (topic: string, data: Uint8Array): Promise<void> => {
    const n = requireStarted()
    const tag = gossipTag(keys.gossip, self.id, topic, data)
    const out = new Uint8Array(TAG_BYTES + data.length)
    out.set(tag)
    out.set(data, TAG_BYTES)
    await n.services.pubsub.publish(fullTopic(topic), out)
  }

  const announce = (): void => {
    if (!started || node === undefined) return
    const addrs = node.getMultiaddrs().map(a => a.toString()).slice(0, 16)
    publishRaw(ANNOUNCE_TOPIC, announceCodec.encode('addrs', { addrs })).catch(err => log.debug({ err: describe(err) }, 'address announce failed'))
    if (authed.size === 0) dialBootstrap()
    announceTimer = clock.setTimeout(announce, announceMs)
  }

  const dialBootstrap = (): void => {
    for (const a of init.bootstrap ?? []) {
      node?.dial(multiaddr(a)).catch(err => log.debug({ addr: a, err: describe(err) }, 'bootstrap dial failed'))
    }
  }

  const net: Libp2pPeerNet = {
    get self () { return self },
    async start () {
      if (started) return
      const list = init.bootstrap ?? []
      for (const a of list) {
        try {
          const ma = multiaddr(a)
          if (ma.getComponents().every(c => c.name !== 'p2p')) throw new Error('it has no /p2p/<peer id> part')
        } catch (err) {
          throw new InvalidArgumentError(`bad bootstrap multiaddr '${a}': ${describe(err)}`)
        }
      }
      node = await createLibp2p({
        privateKey: init.privateKey,
        addresses: { listen: init.listen ?? ['/ip4/127.0.0.1/tcp/0'], announce: init.announce ?? [] },
        transports: [tcp()],
        connectionEncrypters: (init.encrypters ?? ['tls', 'noise']).map(e => (e === 'tls' ? tls() : noise())),
        streamMuxers: [yamux({ streamOptions: { maxStreamWindowSize: 4 * 1024 * 1024, maxReadBufferLength: 4 * READ_HIGH, inactivityTimeout: 600_000 } })],
        peerDiscovery: [
          ...(list.length > 0 ? [bootstrap({ list, timeout: 0 })] : []),
          ...(init.mdns === true ? [mdns()] : [])
        ],
        connectionGater: {
          denyDialPeer: (peer) => isDenied(peer.toString()),
          denyInboundEncryptedConnection: (peer) => isDenied(peer.toString()),
          denyOutboundEncryptedConnection: (peer) => isDenied(peer.toString()),
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
      self = { id: node.peerId.toString(), labels }
      await node.handle(AUTH_PROTOCOL, (stream, conn) => { void authenticateInbound(stream, conn) })
      for (const [protocol, handler] of handlers) await registerHandler(protocol, handler)
      node.addEventListener('connection:open', evt => onConnectionOpen(evt.detail))
      node.addEventListener('peer:disconnect', evt => {
        const id = evt.detail.toString()
        bulk?.dropPeer(id)
        bulkPeers.delete(id)
        directOut.delete(id)
        if (!authed.delete(id)) return
        for (const s of streams) if (s.remote === id) s.gone()
        listeners.emit('peer:disconnect', id)
      })
      node.services.pubsub.addEventListener('message', evt => onMessage(evt.detail))
      // The bulk channel listens before libp2p does, so every handshake can offer its port.
      if (init.bulk !== false) {
        const listenHost = (init.listen ?? ['/ip4/127.0.0.1/tcp/0'])[0]?.split('/')[2]
        bulk = await startBulkChannel({
          host: listenHost === undefined || listenHost === '' ? '127.0.0.1' : listenHost,
          self: self.id,
          handler: protocol => handlers.get(protocol),
          log: log.child({ component: 'mesh:bulk' })
        })
      }
      try {
        await node.start()
      } catch (err) {
        await bulk?.close()
        bulk = undefined
        throw err
      }
      started = true
      for (const [topic, handler] of topics) subscribeRaw(topic, handler)
      subscribeRaw(ANNOUNCE_TOPIC, {
        validate: m => { try { announceCodec.decode(m.data); return 'accept' } catch { return 'reject' } },
        deliver: m => {
          if (authed.has(m.from) || m.from === self.id || isDenied(m.from)) return
          const env = announceCodec.decode(m.data)
          if (env.type !== 'addrs') return
          const addrs = env.payload.addrs.flatMap(a => { try { return [multiaddr(a)] } catch { return [] } })
          if (addrs.length > 0) node?.dial(addrs).catch(err => log.debug({ peer: m.from, err: describe(err) }, 'dial to announced peer failed'))
        }
      })
      dialBootstrap()
      announceTimer = clock.setTimeout(announce, Math.min(announceMs, 500))
    },
    async stop () {
      if (!started) return
      started = false
      if (announceTimer !== undefined) clock.clearTimeout(announceTimer)
      for (const s of streams) s.abort(new NotStartedError('the PeerNet stopped'))
      const n = node
      authed.clear()
      directOut.clear()
      bulkPeers.clear()
      await bulk?.close()
      bulk = undefined
      await n?.stop()
    },
    multiaddrs () {
      return node?.getMultiaddrs().map(a => a.toString()) ?? []
    },
    peers () {
      if (node === undefined) return []
      return [...authed].filter(([id]) => node!.getConnections(peerIdFromString(id)).length > 0).map(([id, l]) => ({ id, labels: l }))
    },
    on (event, listener) { return listeners.on(event, listener) },
    subscribe (topic, handler) {
      checkName('topic', topic)
      if (topic.startsWith('__')) throw new InvalidArgumentError('topics starting with __ are reserved')
      return subscribeRaw(topic, handler)
    },
    async publish (topic, data) {
      requireStarted()
      checkName('topic', topic)
      checkGossipSize(data)
      await publishRaw(topic, data)
    },
    async send (peer, topic, data) {
      requireStarted()
      checkName('topic', topic)
      checkGossipSize(data)
      if (peer === self.id || !authed.has(peer)) return
      let out = directOut.get(peer)
      if (out === undefined) {
        const stream = net.open(peer, DIRECT_PROTOCOL)
        out = { stream, busy: false }
        directOut.set(peer, out)
        stream.catch(() => { if (directOut.get(peer)?.stream === stream) directOut.delete(peer) })
      }
      // Datagram semantics: a message that would queue behind a blocked one is dropped.
      if (out.busy) return
      const entry = out
      entry.busy = true
      try {
        const s = await entry.stream
        await writeMessage(s, new TextEncoder().encode(topic))
        await writeMessage(s, data)
      } catch (err) {
        log.debug({ peer, topic, err: describe(err) }, 'direct message lost')
        if (directOut.get(peer) === entry) directOut.delete(peer)
        void entry.stream.then(s => s.abort(), () => {})
      } finally {
        entry.busy = false
      }
    },
    handle (protocol, handler) {
      checkName('protocol', protocol)
      if (protocol.startsWith('__')) throw new InvalidArgumentError('protocols starting with __ are reserved')
      handlers.set(protocol, handler)
      if (node !== undefined) void registerHandler(protocol, handler)
    },
    unhandle (protocol) {
      handlers.delete(protocol)
      void node?.unhandle(fullProtocol(protocol)).catch(() => {})
    },
    async open (peer, protocol, options = {}) {
      const n = requireStarted()
      checkName('protocol', protocol)
      if (options.signal?.aborted === true) throw new AbortError('open aborted')
      if (!authed.has(peer)) throw new PeerGoneError(`peer ${peer} is not connected`, { peer })
      const via = init.bulkProtocol === undefined || init.bulkProtocol(protocol) ? bulkPeers.get(peer) : undefined
      if (bulk !== undefined && via !== undefined) {
        try {
          return await settleOnAbort(options.signal, bulk.open(peer, via.host, via.port, via.session, protocol, options.signal), st => st.abort(new AbortError('open abandoned')))
        } catch (err) {
          const name = (err as Error).name
          if (name === 'ProtocolNotSupportedError' || name === 'AbortError') throw err
          log.debug({ peer, protocol, err: describe(err) }, 'bulk channel unavailable; using a libp2p stream')
        }
      }
      let raw: Stream
      try {
        raw = await settleOnAbort(options.signal, n.dialProtocol(peerIdFromString(peer), fullProtocol(protocol), { signal: options.signal }), s => s.abort(new AbortError('open abandoned')))
      } catch (err) {
        throw mapOpenError(err, peer, protocol, options.signal)
      }
      return track(new Libp2pByteStream(raw, peer, protocol))
    },
    rejectedFrom (peer) { return rejected.get(peer) ?? 0 }
  }

  const track = (s: Libp2pByteStream): Libp2pByteStream => {
    streams.add(s)
    s.onFinish = () => streams.delete(s)
    return s
  }

  async function registerHandler (protocol: string, handler: StreamHandler): Promise<void> {
    await node!.unhandle(fullProtocol(protocol)).catch(() => {})
    await node!.handle(fullProtocol(protocol), (raw, conn) => {
      const peer = conn.remotePeer.toString()
      if (!authed.has(peer)) {
        log.debug({ peer, protocol }, 'stream from an unauthenticated peer refused')
        raw.abort(new AuthenticationError('not authenticated to this run'))
        return
      }
      const s = track(new Libp2pByteStream(raw, peer, protocol))
      Promise.resolve().then(() => handler(s)).catch(err => {
        log.debug({ peer, protocol, err: describe(err) }, 'stream handler failed')
        s.abort(err instanceof Error ? err : new Error(String(err)))
      })
    }, { maxInboundStreams: 256, maxOutboundStreams: 256 })
  }

  return net
}

/** The IP address of a connection's remote end, if it has one. */
function ipOf (conn: Connection): string | undefined {
  return conn.remoteAddr.getComponents().find(c => c.name === 'ip4' || c.name === 'ip6')?.value
}

function describe (err: unknown): string {
  return err instanceof Error ? `${err.name}: ${err.message}` : String(err)
}

async function required (p: Promise<Uint8Array | undefined>, signal: AbortSignal): Promise<Uint8Array> {
  const msg = await Promise.race([p, new Promise<never>((_, reject) => {
    if (signal.aborted) reject(new AuthenticationError('authentication timed out'))
    signal.addEventListener('abort', () => reject(new AuthenticationError('authentication timed out')), { once: true })
  })])
  if (msg === undefined) throw new AuthenticationError('the peer closed the handshake')
  return msg
}

function mapOpenError (err: unknown, peer: string, protocol: string, signal?: AbortSignal): Error {
  const e = err as Error
  if (signal?.aborted === true || e.name === 'AbortError') return new AbortError('open aborted', { peer, protocol })
  if (e.name === 'UnsupportedProtocolError') return new ProtocolNotSupportedError(`peer ${peer} does not handle ${protocol}`, { peer, protocol })
  return new PeerGoneError(`cannot open ${protocol} to ${peer}: ${e.message}`, { peer, protocol })
}

/** Waits for one of a stream's events, or the signal. */
function nextEvent (stream: Stream, names: Array<'drain' | 'close'>, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    const done = (): void => {
      for (const n of names) stream.removeEventListener(n, done)
      signal?.removeEventListener('abort', onAbort)
      resolve()
    }
    const onAbort = (): void => {
      for (const n of names) stream.removeEventListener(n, done)
      reject(new AbortError('write aborted'))
    }
    if (signal?.aborted === true) { onAbort(); return }
    for (const n of names) stream.addEventListener(n, done, { once: true })
    signal?.addEventListener('abort', onAbort, { once: true })
  })
}

/**
 * Adapts a libp2p Stream to ByteStream. Reading: 'message' events feed a ByteQueue; above
 * READ_HIGH unread bytes the stream is paused (yamux stops granting window, so the sender
 * stalls) and resumed below half. Writing: send(), then wait for 'drain' while more than the
 * write cap is queued inside the stream.
 */
class Libp2pByteStream implements ByteStream {
  readonly remote: PeerId
  readonly protocol: string
  onFinish: () => void = () => {}
  private readonly raw: Stream
  private readonly inbound = new ByteQueue()
  private paused = false
  private remoteEnded = false
  private failure: Error | undefined
  /** Aborted on the first failure: a pending end() settles with it (libp2p's close may not). */
  private readonly failed = new AbortController()

  constructor (raw: Stream, remote: PeerId, protocol: string) {
    this.raw = raw
    this.remote = remote
    this.protocol = protocol
    raw.addEventListener('message', evt => {
      const d = evt.data
      // A copy: the transport may hand out views into buffers it reuses, and readers keep chunks.
      this.inbound.push(d.slice())
      if (!this.paused && this.inbound.bytes > READ_HIGH && raw.readStatus === 'readable') {
        this.paused = true
        raw.pause()
      }
    })
    raw.addEventListener('remoteCloseWrite', () => {
      this.remoteEnded = true
      this.inbound.end()
    })
    raw.addEventListener('close', evt => {
      const err = (evt as Event & { error?: Error }).error
      if (err !== undefined) this.fail(err.name === 'StreamResetError' || err.name === 'StreamAbortedError' ? new StreamResetError(`stream reset by ${remote}: ${err.message}`) : new PeerGoneError(`peer ${remote} went away mid-stream: ${err.message}`, { peer: remote }))
      else if (!this.remoteEnded) this.fail(new PeerGoneError(`peer ${remote} closed the stream before ending it`, { peer: remote }))
      else this.inbound.end()
      this.onFinish()
    })
  }

  /** The connection to the peer died. */
  gone (): void {
    this.fail(new PeerGoneError(`peer ${this.remote} went away mid-stream`, { peer: this.remote }))
  }

  private fail (err: Error): void {
    this.failure ??= err
    this.inbound.fail(err)
    this.failed.abort(err)
  }

  async write (chunk: Uint8Array, options: { signal?: AbortSignal } = {}): Promise<void> {
    checkChunkSize(chunk)
    if (options.signal?.aborted === true) throw new AbortError('write aborted')
    if (this.failure !== undefined) throw this.failure
    if (this.raw.writeStatus !== 'writable') throw this.failure ?? new StreamResetError(`stream is ${this.raw.writeStatus}`)
    try {
      this.raw.send(chunk)
    } catch (err) {
      throw this.failure ?? new StreamResetError(describe(err))
    }
    while (this.raw.writeBufferLength > MESH_LIMITS.maxStreamWriteBufferBytes) {
      await nextEvent(this.raw, ['drain', 'close'], options.signal)
      if (this.failure !== undefined) throw this.failure
      if (this.raw.status !== 'open') throw new StreamResetError(`stream is ${this.raw.status}`)
    }
  }

  async end (options: { signal?: AbortSignal } = {}): Promise<void> {
    if (this.failure !== undefined) return
    const until = options.signal === undefined ? this.failed.signal : AbortSignal.any([options.signal, this.failed.signal])
    try {
      await settleOnAbort(until, this.raw.close(options), () => {})
    } catch (err) {
      throw this.failure ?? new StreamResetError(describe(err))
    }
  }

  abort (reason?: Error): void {
    this.fail(reason ?? new AbortError('stream aborted locally'))
    this.raw.abort(reason ?? new Error('aborted'))
  }

  async * [Symbol.asyncIterator] (): AsyncIterator<Uint8Array> {
    for (;;) {
      const c = await this.inbound.next()
      if (c === undefined) return
      if (this.paused && this.inbound.bytes < READ_HIGH / 2 && this.raw.readStatus === 'paused') {
        this.paused = false
        this.raw.resume()
      }
      yield c
    }
  }
}
