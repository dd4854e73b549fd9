import { AbortError, InvalidArgumentError } from '../core/index.ts'
import { ByteQueue } from './byte-queue.ts'
import { checkChunkSize, checkGossipSize, checkName } from './checks.ts'
import { NotStartedError, PeerGoneError, ProtocolNotSupportedError, StreamResetError } from './errors.ts'
import { MESH_LIMITS } from './limits.ts'
import { Listeners } from './listeners.ts'
import type { ByteStream, GossipHandler, GossipMessage, GossipVerdict, PeerId, PeerInfo, PeerNet, PeerNetEvents, StreamHandler } from './peernet.ts'

/**
 * An in-process network of PeerNets for tests: every started peer is connected to every other
 * unless killed or partitioned. Delivery is asynchronous (microtasks) and ordered per pair.
 * It has no notion of time; the simulator's SimNet adds latency and bandwidth.
 */
export interface MemoryNetwork {
  /** Creates a peer (not started). Ids must be unique. */
  createPeer(info: PeerInfo): PeerNet
  /** Crash-stops a peer: its links drop and its streams fail on the other side. */
  kill(id: PeerId): void
  /** Cuts every link between the two groups (both directions). */
  partition(a: readonly PeerId[], b: readonly PeerId[]): void
  /** Restores all cut links. */
  heal(): void
  /**
   * Hands `msg` to `to`'s handler for its topic as if a relay had delivered it (any `from`):
   * how tests replay captured messages or forge ones. Returns the validator's verdict, or
   * undefined if `to` has no handler.
   */
  inject(to: PeerId, msg: GossipMessage): GossipVerdict | undefined
}

interface Node {
  info: PeerInfo
  started: boolean
  listeners: Listeners<PeerNetEvents>
  handlers: Map<string, StreamHandler>
  topics: Map<string, GossipHandler>
  rejected: Map<PeerId, number>
  streams: Set<MemoryStream>
}

class MemoryStream implements ByteStream {
  readonly remote: PeerId
  readonly protocol: string
  readonly local: PeerId
  inbound = new ByteQueue()
  peer!: MemoryStream
  private writeClosed = false
  private aborted = false
  private readonly onClose: (s: MemoryStream) => void

  constructor(local: PeerId, remote: PeerId, protocol: string, onClose: (s: MemoryStream) => void) {
    this.local = local
    this.remote = remote
    this.protocol = protocol
    this.onClose = onClose
  }

  async write(chunk: Uint8Array, options: { signal?: AbortSignal } = {}): Promise<void> {
    checkChunkSize(chunk)
    if (options.signal?.aborted === true) throw new AbortError('write aborted')
    if (this.aborted) throw new StreamResetError('stream was aborted')
    if (this.writeClosed) throw new InvalidArgumentError('write after end()')
    const out = this.peer.inbound
    if (out.closed) throw this.peer.failure() ?? new StreamResetError('the remote closed its side')
    out.push(chunk)
    await out.waitForRoom(MESH_LIMITS.maxStreamWriteBufferBytes, options.signal)
  }

  async end(): Promise<void> {
    if (this.writeClosed || this.aborted) return
    this.writeClosed = true
    this.peer.inbound.end()
    this.maybeDone()
  }

  abort(reason?: Error): void {
    if (this.aborted) return
    this.aborted = true
    this.inbound.fail(reason ?? new AbortError('stream aborted locally'))
    this.peer.inbound.fail(new StreamResetError(`stream reset by ${this.local}`))
    this.peer.aborted = true
    this.onClose(this)
    this.onClose(this.peer)
  }

  /** Both sides lose the stream because a peer went away. */
  gone(who: PeerId): void {
    this.aborted = true
    this.inbound.fail(new PeerGoneError(`peer ${who} went away mid-stream`, { peer: who, protocol: this.protocol }))
  }

  failure(): Error | undefined {
    return this.aborted ? new StreamResetError('stream was reset') : undefined
  }

  private maybeDone(): void {
    if (this.writeClosed && this.peer.writeClosed) {
      this.onClose(this)
      this.onClose(this.peer)
    }
  }

  [Symbol.asyncIterator](): AsyncIterator<Uint8Array> {
    return this.inbound[Symbol.asyncIterator]()
  }
}

/** The peers of one MemoryNetwork and which links between them are cut. */
class MemoryLinks {
  readonly nodes = new Map<PeerId, Node>()
  readonly cut = new Set<string>()

  key(a: PeerId, b: PeerId): string {
    return a < b ? `${a}\n${b}` : `${b}\n${a}`
  }

  linked(a: Node, b: Node): boolean {
    return a !== b && a.started && b.started && !this.cut.has(this.key(a.info.id, b.info.id))
  }

  /** Fails the streams between a and b on both sides, then tells both that the link is gone. */
  dropLink(a: Node, b: Node): void {
    for (const s of [...a.streams]) {
      if (s.remote === b.info.id) {
        s.gone(b.info.id)
        s.peer.gone(a.info.id)
        a.streams.delete(s)
        b.streams.delete(s.peer)
      }
    }
    queueMicrotask(() => {
      a.listeners.emit('peer:disconnect', b.info.id)
      b.listeners.emit('peer:disconnect', a.info.id)
    })
  }

  down(n: Node): void {
    if (!n.started) return
    const was = [...this.nodes.values()].filter(o => this.linked(n, o))
    n.started = false
    for (const o of was) this.dropLink(n, o)
  }

  /** Validates and delivers one message at node `o`; 'reject' counts against the publisher. */
  offer(o: Node, msg: GossipMessage): GossipVerdict | undefined {
    const h = o.topics.get(msg.topic)
    if (h === undefined) return undefined
    const verdict = h.validate?.(msg) ?? 'accept'
    if (verdict === 'reject') o.rejected.set(msg.from, (o.rejected.get(msg.from) ?? 0) + 1)
    if (verdict === 'accept') h.deliver(msg)
    return verdict
  }

  /** Hands a copy of `data` to `o` in a microtask, if the link is still up then. */
  deliverLater(node: Node, o: Node, topic: string, data: Uint8Array): void {
    const copy = data.slice()
    queueMicrotask(() => {
      if (this.linked(node, o)) this.offer(o, { topic, from: node.info.id, data: copy })
    })
  }
}

function requireStarted(node: Node): void {
  if (!node.started) throw new NotStartedError(`peer ${node.info.id} is not started`)
}

function checkMessage(node: Node, topic: string, data: Uint8Array): void {
  requireStarted(node)
  checkName('topic', topic)
  checkGossipSize(data)
}

/** PeerNet.open on MemoryLinks: a stream pair, the far end handed to the peer's handler in a microtask. */
async function openMemoryStream(links: MemoryLinks, node: Node, peer: PeerId, protocol: string, options: { signal?: AbortSignal }): Promise<ByteStream> {
  requireStarted(node)
  checkName('protocol', protocol)
  if (options.signal?.aborted === true) throw new AbortError('open aborted')
  const remote = links.nodes.get(peer)
  if (remote === undefined || !links.linked(node, remote)) throw new PeerGoneError(`peer ${peer} is not connected`, { peer })
  const handler = remote.handlers.get(protocol)
  if (handler === undefined) throw new ProtocolNotSupportedError(`peer ${peer} does not handle ${protocol}`, { peer, protocol })
  const close = (s: MemoryStream): void => {
    links.nodes.get(s.local)?.streams.delete(s)
  }
  const mine = new MemoryStream(node.info.id, peer, protocol, close)
  const theirs = new MemoryStream(peer, node.info.id, protocol, close)
  mine.peer = theirs
  theirs.peer = mine
  node.streams.add(mine)
  remote.streams.add(theirs)
  queueMicrotask(() => {
    Promise.resolve()
      .then(() => handler(theirs))
      .catch((err: unknown) => theirs.abort(err instanceof Error ? err : new Error(String(err))))
  })
  return mine
}

/** Creates a peer (not started) on `links`. */
function createMemoryPeer(links: MemoryLinks, info: PeerInfo): PeerNet {
  if (links.nodes.has(info.id)) throw new InvalidArgumentError(`peer id ${info.id} is taken`)
  const node: Node = {
    info: { id: info.id, labels: { ...info.labels } },
    started: false,
    listeners: new Listeners(),
    handlers: new Map(),
    topics: new Map(),
    rejected: new Map(),
    streams: new Set()
  }
  links.nodes.set(info.id, node)
  return {
    self: node.info,
    async start() {
      if (node.started) return
      node.started = true
      const others = [...links.nodes.values()].filter(o => links.linked(node, o))
      queueMicrotask(() => {
        for (const o of others) {
          if (!links.linked(node, o)) continue
          node.listeners.emit('peer:connect', o.info)
          o.listeners.emit('peer:connect', node.info)
        }
      })
    },
    async stop() {
      links.down(node)
    },
    peers() {
      return [...links.nodes.values()].filter(o => links.linked(node, o)).map(o => o.info)
    },
    on(event, listener) {
      return node.listeners.on(event, listener)
    },
    subscribe(topic, handler) {
      checkName('topic', topic)
      node.topics.set(topic, handler)
      return () => {
        if (node.topics.get(topic) === handler) node.topics.delete(topic)
      }
    },
    async publish(topic, data) {
      checkMessage(node, topic, data)
      for (const o of links.nodes.values()) if (links.linked(node, o)) links.deliverLater(node, o, topic, data)
    },
    async send(peer, topic, data) {
      checkMessage(node, topic, data)
      const o = links.nodes.get(peer)
      if (o === undefined || !links.linked(node, o)) return
      links.deliverLater(node, o, topic, data)
    },
    handle(protocol, handler) {
      checkName('protocol', protocol)
      node.handlers.set(protocol, handler)
    },
    unhandle(protocol) {
      node.handlers.delete(protocol)
    },
    open: (peer, protocol, options = {}) => openMemoryStream(links, node, peer, protocol, options),
    rejectedFrom(peer) {
      return node.rejected.get(peer) ?? 0
    }
  }
}

/** Creates an empty in-memory network. */
export function createMemoryNetwork(): MemoryNetwork {
  const links = new MemoryLinks()
  const { nodes, cut } = links
  return {
    createPeer: info => createMemoryPeer(links, info),
    kill(id) {
      const n = nodes.get(id)
      if (n !== undefined) links.down(n)
    },
    partition(a, b) {
      for (const x of a) {
        for (const y of b) {
          const nx = nodes.get(x)
          const ny = nodes.get(y)
          if (nx === undefined || ny === undefined || cut.has(links.key(x, y))) continue
          const was = links.linked(nx, ny)
          cut.add(links.key(x, y))
          if (was) links.dropLink(nx, ny)
        }
      }
    },
    inject(to, msg) {
      const o = nodes.get(to)
      return o === undefined || !o.started ? undefined : links.offer(o, msg)
    },
    heal() {
      const pairs = [...cut].map(k => k.split('\n') as [PeerId, PeerId])
      cut.clear()
      queueMicrotask(() => {
        for (const [x, y] of pairs) {
          const nx = nodes.get(x)
          const ny = nodes.get(y)
          if (nx === undefined || ny === undefined || !links.linked(nx, ny)) continue
          nx.listeners.emit('peer:connect', ny.info)
          ny.listeners.emit('peer:connect', nx.info)
        }
      })
    }
  }
}
