import { AbortError, ClockEvent, InvalidArgumentError, type Rng } from '../core/index.ts'
import {
  ByteQueue,
  MESH_LIMITS,
  NotStartedError,
  PeerGoneError,
  ProtocolNotSupportedError,
  StreamResetError,
  Listeners,
  checkChunkSize,
  checkGossipSize,
  checkName,
  type ByteStream,
  type GossipHandler,
  type GossipMessage,
  type GossipVerdict,
  type PeerId,
  type PeerInfo,
  type PeerNet,
  type PeerNetEvents,
  type StreamHandler
} from '../mesh/index.ts'
import { NodeClock, type Simulation } from './engine.ts'

/**
 * SimNet: PeerNets over simulated links. Every pair of started, unpartitioned nodes is
 * connected; what crosses a link takes latency + jitter + its size over the link's bandwidth
 * (a directed link sends one thing at a time, so concurrent transfers share it in turn), and
 * may be lost, duplicated or corrupted with the tier's probabilities. Tiers come from labels:
 * same host, same zone, or across the WAN. Faults: crash, restart, pause/resume, partitions,
 * slow nodes and degraded links. All randomness is split from the simulation's Rng, all time
 * is the simulation's clock, and every delivery and fault is traced.
 */
export interface LinkProfile {
  /** One-way latency (ms). */
  latencyMs: number
  /** Uniform extra delay in [0, jitterMs) per message; gossip may be reordered by it. */
  jitterMs: number
  /** Bytes per second a directed link carries. */
  bandwidthBytesPerS: number
  /** Probability that a gossip message is lost. */
  loss: number
  /** Probability that a gossip message is delivered twice. */
  duplicate: number
  /**
   * Probability that a message or stream chunk has one byte flipped. Gossip is signed on the
   * real transport, so a corrupted gossip message is dropped as a signature failure; stream
   * bytes reach the application, whose frames and fragments carry checksums.
   */
  corrupt: number
}

export type Tier = 'host' | 'zone' | 'wan'
export type Topology = Record<Tier, LinkProfile>

/** A datacentre-like default: 0.05 ms / 10 GB/s in a host, 0.5 ms / 1.25 GB/s in a zone, 30 ms / 125 MB/s across. */
export const DEFAULT_TOPOLOGY: Topology = {
  host: { latencyMs: 0.05, jitterMs: 0.01, bandwidthBytesPerS: 10e9, loss: 0, duplicate: 0, corrupt: 0 },
  zone: { latencyMs: 0.5, jitterMs: 0.1, bandwidthBytesPerS: 1.25e9, loss: 0, duplicate: 0, corrupt: 0 },
  wan: { latencyMs: 30, jitterMs: 5, bandwidthBytesPerS: 125e6, loss: 0, duplicate: 0, corrupt: 0 }
}

export interface SimNetwork {
  /**
   * Creates a node (not started). Returns its PeerNet and, through `clock`, the pausable clock
   * of its current incarnation (read it again after a crash: a restart gets a fresh one).
   */
  createPeer(info: PeerInfo): { net: PeerNet; clock: NodeClock }
  /** Crash-stop: the node's links, streams and timers are gone. */
  crash(id: PeerId): void
  /** Freezes a node: nothing it should receive or send moves, its timers wait. */
  pause(id: PeerId): void
  resume(id: PeerId): void
  /** Cuts every link between different groups (ids absent from all groups are untouched). */
  partition(groups: ReadonlyArray<readonly PeerId[]>): void
  heal(): void
  /** Multiplies a node's latency by `factor` and divides its bandwidth by it (1 = normal). */
  slow(id: PeerId, factor: number): void
  /** The same for one link (both directions). */
  degrade(a: PeerId, b: PeerId, factor: number): void
  /** Messages and bytes carried, per tier. */
  stats(): Record<Tier, { messages: number; bytes: number }>
}

/** What the network needs of one end of a stream. */
interface StreamEnd {
  readonly remote: PeerId
  readonly peer: StreamEnd
  fail(err: Error): void
}

const DONE: Promise<void> = Promise.resolve()

function aborted(signal?: AbortSignal): boolean {
  return signal?.aborted === true
}

interface SimNode {
  info: PeerInfo
  /** Creation order: indexes per-link arrays and names the node in compact trace records. */
  index: number
  /** Interned host and zone labels (tiers compare integers). */
  hostId: number
  zoneId: number
  clock: NodeClock
  started: boolean
  crashed: boolean
  paused: boolean
  slow: number
  listeners: Listeners<PeerNetEvents>
  handlers: Map<string, StreamHandler>
  rejected: Map<PeerId, number>
  streams: Set<StreamEnd>
  /** Deliveries held while paused. */
  held: Array<() => void>
  /** When the directed link from this node to each other node is free again (simulated ms), by the other's index. */
  busyUntil: number[]
}

const TIERS: readonly Tier[] = ['host', 'zone', 'wan']
const VERDICTS: readonly GossipVerdict[] = ['accept', 'reject', 'ignore']
// Link keys for cut and degraded links: lower index * LINK_KEY + higher index.
const LINK_KEY = 2 ** 26

/** Creates a simulated network on `sim`. */
export function createSimNetwork(sim: Simulation, topology: Topology = DEFAULT_TOPOLOGY): SimNetwork {
  const nodes = new Map<PeerId, SimNode>()
  const byIndex: SimNode[] = []
  // Gossip handlers per topic, by node index: one shared table per topic (a publish to 1000
  // peers checks each for a subscription, and a per-node map would be one cold lookup per
  // peer; an array indexed by node is a load where a map keyed by node was a hash probe).
  const subscribers = new Map<string, Array<GossipHandler | undefined>>()
  const labelIds = new Map<string, number>()
  const labelId = (kind: string, label: string): number => {
    const key = `${kind}\n${label}`
    let id = labelIds.get(key)
    if (id === undefined) labelIds.set(key, (id = labelIds.size))
    return id
  }
  const cut = new Set<number>()
  const degraded = new Map<number, number>()
  const rng: Rng = sim.rng.split('simnet')
  const profiles: LinkProfile[] = TIERS.map(t => topology[t])
  const tierMessages = [0, 0, 0]
  const tierBytes = [0, 0, 0]
  const linkKey = (a: SimNode, b: SimNode): number => (a.index < b.index ? a.index * LINK_KEY + b.index : b.index * LINK_KEY + a.index)
  const linked = (a: SimNode, b: SimNode): boolean => a !== b && a.started && b.started && (cut.size === 0 || !cut.has(linkKey(a, b)))

  /** 0 host, 1 zone, 2 wan (an index into TIERS and profiles). */
  const tierOf = (a: SimNode, b: SimNode): number => (a.hostId === b.hostId ? 0 : a.zoneId === b.zoneId ? 1 : 2)

  // Gossip deliveries are traced as compact records (node indices, topic and verdict codes).
  const topicCodes = new Map<string, number>()
  const topicNames: string[] = []
  const topicCode = (topic: string): number => {
    let c = topicCodes.get(topic)
    if (c === undefined) {
      c = topicNames.length
      topicCodes.set(topic, c)
      topicNames.push(topic)
    }
    return c
  }
  const GOSSIP = sim.recordKind(
    (to, from, tv, bytes) =>
      `gossip to=${byIndex[to]!.info.id} from=${byIndex[from]!.info.id} topic=${topicNames[tv >>> 2]!} bytes=${bytes} verdict=${VERDICTS[tv & 3]!}`
  )
  // Topic names already checked (checkName runs a regular expression).
  const checkedTopics = new Set<string>()
  const checkTopic = (topic: string): void => {
    if (checkedTopics.has(topic)) return
    checkName('topic', topic)
    checkedTopics.add(topic)
  }

  const requireStartedNode = (node: SimNode): void => {
    if (!node.started) throw new NotStartedError(`peer ${node.info.id} is not started`)
  }
  /**
   * A refused or paused publish/send settles here (undefined: go on and transmit). Shared by
   * all nodes, like the other per-message helpers: a closure per node is one more cold object
   * per message at 1000 nodes.
   */
  const precheck = (node: SimNode, topic: string, data: Uint8Array): Promise<void> | undefined => {
    try {
      requireStartedNode(node)
      checkTopic(topic)
      checkGossipSize(data)
    } catch (err) {
      return Promise.reject(err)
    }
    return node.paused ? DONE : undefined
  }

  /**
   * When bytes sent now from a to b over tier `tier` arrive: serialized behind earlier sends
   * on the directed link, then latency and (if `jitter`) jitter.
   */
  const arrivalAt = (a: SimNode, b: SimNode, tier: number, bytes: number, jitter: boolean): number => {
    const p = profiles[tier]!
    const factor = a.slow * b.slow * (degraded.size === 0 ? 1 : (degraded.get(linkKey(a, b)) ?? 1))
    const now = sim.now()
    const busy = a.busyUntil[b.index]
    const start = busy !== undefined && busy > now ? busy : now
    const done = start + (bytes / p.bandwidthBytesPerS) * 1000 * factor
    a.busyUntil[b.index] = done
    tierMessages[tier]!++
    tierBytes[tier]! += bytes
    return done + p.latencyMs * factor + (jitter ? rng.float() * p.jitterMs * factor : 0)
  }

  const arrival = (a: SimNode, b: SimNode, bytes: number, jitter: boolean): { at: number; p: LinkProfile } => {
    const tier = tierOf(a, b)
    return { at: arrivalAt(a, b, tier, bytes, jitter), p: profiles[tier]! }
  }

  /** Runs `fn` at simulated time `at` on node `to`, unless it crashed; held while it is paused. */
  const deliverAt = (to: SimNode, at: number, fn: () => void): void => {
    sim.clock.schedule(
      () => {
        if (to.crashed || !to.started) return
        if (to.paused) to.held.push(fn)
        else fn()
      },
      Math.max(0, at - sim.now())
    )
  }

  /** A gossip or direct message in flight: one object per delivery (no closures). */
  class GossipDelivery extends ClockEvent {
    readonly node: SimNode
    readonly o: SimNode
    readonly topic: string
    readonly payload: Uint8Array
    constructor(node: SimNode, o: SimNode, topic: string, payload: Uint8Array) {
      super()
      this.node = node
      this.o = o
      this.topic = topic
      this.payload = payload
    }

    override fire(): void {
      const o = this.o
      if (o.crashed || !o.started) return
      if (o.paused)
        o.held.push(() => {
          this.deliver()
        })
      else this.deliver()
    }

    deliver(): void {
      if (linked(this.node, this.o)) offer(this.o, this.node, this.topic, this.payload)
    }
  }

  const maybeCorrupt = (data: Uint8Array, p: LinkProfile): Uint8Array => {
    if (p.corrupt <= 0 || data.length === 0 || !rng.bool(p.corrupt)) return data
    const copy = data.slice()
    copy[rng.int(0, copy.length)]! ^= 1 << rng.int(0, 8)
    return copy
  }

  const offer = (to: SimNode, fromNode: SimNode, topic: string, data: Uint8Array): void => {
    const h = subscribers.get(topic)?.[to.index]
    if (h === undefined) return
    const from = fromNode.info.id
    const msg: GossipMessage = { topic, from, data }
    const verdict = h.validate?.(msg) ?? 'accept'
    const v = verdict === 'accept' ? 0 : verdict === 'reject' ? 1 : 2
    sim.record(GOSSIP, to.index, fromNode.index, topicCode(topic) * 4 + v, data.length)
    if (v === 1) to.rejected.set(from, (to.rejected.get(from) ?? 0) + 1)
    if (v === 0) h.deliver(msg)
  }

  /** Gossip or a direct message from `node` to `o`: loss, duplication, corruption, delivery. */
  const transmit = (node: SimNode, o: SimNode, topic: string, payload: Uint8Array): void => {
    const tier = tierOf(node, o)
    const p = profiles[tier]!
    const at = arrivalAt(node, o, tier, payload.length, true)
    if (p.loss > 0 && rng.bool(p.loss)) {
      sim.trace('lost', { from: node.info.id, to: o.info.id, topic })
      return
    }
    const copies = p.duplicate > 0 && rng.bool(p.duplicate) ? 2 : 1
    for (let c = 0; c < copies; c++) {
      // Gossip is signed on the real transport: a corrupted message fails its signature
      // there and is dropped (and counted against the sender), never handed to code.
      if (p.corrupt > 0 && rng.bool(p.corrupt)) {
        const from = node.info.id
        deliverAt(o, at + c * p.latencyMs, () => {
          sim.trace('gossip-corrupt', { to: o.info.id, from, topic })
          o.rejected.set(from, (o.rejected.get(from) ?? 0) + 1)
        })
        continue
      }
      sim.clock.scheduleEvent(new GossipDelivery(node, o, topic, payload), Math.max(0, at + c * p.latencyMs - sim.now()))
    }
  }

  // Who each node is linked to, recomputed only after a link changes (start, stop, crash,
  // partition, heal): publish and peers() at 1000 nodes must not rescan every node each time.
  let linkEpoch = 0
  const linkCache = new Map<SimNode, { epoch: number; peers: SimNode[] }>()
  const linkedPeers = (node: SimNode): SimNode[] => {
    const c = linkCache.get(node)
    if (c !== undefined && c.epoch === linkEpoch) return c.peers
    const peers = byIndex.filter(o => linked(node, o))
    linkCache.set(node, { epoch: linkEpoch, peers })
    return peers
  }

  /**
   * `to` learns that its link to `peer` came up (if it still is) or went down: one object per
   * announcement, no closures (1000 nodes starting announce half a million links both ways).
   */
  class LinkEvent extends ClockEvent {
    readonly to: SimNode
    readonly peer: SimNode
    readonly up: boolean
    constructor(to: SimNode, peer: SimNode, up: boolean) {
      super()
      this.to = to
      this.peer = peer
      this.up = up
    }

    override fire(): void {
      const to = this.to
      if (to.crashed || !to.started) return
      if (to.paused)
        to.held.push(() => {
          this.announce()
        })
      else this.announce()
    }

    announce(): void {
      if (!this.up) this.to.listeners.emit('peer:disconnect', this.peer.info.id)
      else if (linked(this.peer, this.to)) this.to.listeners.emit('peer:connect', this.peer.info)
    }
  }

  const announceLink = (a: SimNode, b: SimNode, up: boolean): void => {
    const at = arrivalAt(a, b, tierOf(a, b), 0, false)
    sim.clock.scheduleEvent(new LinkEvent(b, a, up), Math.max(0, at - sim.now()))
    const back = arrivalAt(b, a, tierOf(b, a), 0, false)
    sim.clock.scheduleEvent(new LinkEvent(a, b, up), Math.max(0, back - sim.now()))
  }

  /** Both ends of every stream between a and b fail; each side learns after a latency. */
  const breakStreams = (a: SimNode, b: SimNode): void => {
    for (const s of [...a.streams]) {
      if (s.remote !== b.info.id) continue
      const gone = (who: PeerId): PeerGoneError => new PeerGoneError(`peer ${who} went away mid-stream`, { peer: who })
      const { at } = arrival(b, a, 0, false)
      sim.clock.setTimeout(() => s.fail(gone(b.info.id)), Math.max(0, at - sim.now()))
      const back = arrival(a, b, 0, false)
      sim.clock.setTimeout(() => s.peer.fail(gone(a.info.id)), Math.max(0, back.at - sim.now()))
      a.streams.delete(s)
      b.streams.delete(s.peer)
    }
  }

  const down = (n: SimNode): void => {
    const was = [...nodes.values()].filter(o => linked(n, o))
    n.started = false
    linkEpoch++
    for (const o of was) {
      breakStreams(n, o)
      announceLink(n, o, false)
    }
  }

  class SimStream implements ByteStream {
    readonly remote: PeerId
    readonly protocol: string
    readonly inbound = new ByteQueue()
    peer!: SimStream
    private readonly from: SimNode
    private readonly to: () => SimNode
    private inFlight = 0
    private lastArrival = 0
    private readonly roomWaiters: Array<() => void> = []
    private closedWrite = false
    private failed: Error | undefined

    constructor(from: SimNode, to: () => SimNode, remote: PeerId, protocol: string) {
      this.from = from
      this.to = to
      this.remote = remote
      this.protocol = protocol
    }

    fail(err: Error): void {
      this.failed ??= err
      this.inbound.fail(err)
      for (const w of this.roomWaiters.splice(0)) w()
    }

    /** Sends bytes (or the end marker) in order: a stream is FIFO, so no jitter. */
    private send(chunk: Uint8Array | 'end' | 'reset'): void {
      const to = this.to()
      const bytes = typeof chunk === 'string' ? 0 : chunk.length
      const a = arrival(this.from, to, bytes, false)
      const at = Math.max(a.at, this.lastArrival)
      this.lastArrival = at
      this.inFlight += bytes
      const data = typeof chunk === 'string' ? chunk : maybeCorrupt(chunk, a.p)
      deliverAt(to, at, () => {
        this.inFlight -= bytes
        for (const w of this.roomWaiters.splice(0)) w()
        if (data === 'end') this.peer.inbound.end()
        else if (data === 'reset') this.peer.fail(new StreamResetError(`stream reset by ${this.from.info.id}`))
        else this.peer.inbound.push(data)
      })
    }

    async write(chunk: Uint8Array, options: { signal?: AbortSignal } = {}): Promise<void> {
      checkChunkSize(chunk)
      if (options.signal?.aborted === true) throw new AbortError('write aborted')
      if (this.failed !== undefined) throw this.failed
      if (this.closedWrite) throw new InvalidArgumentError('write after end()')
      this.send(chunk)
      const cap = MESH_LIMITS.maxStreamWriteBufferBytes
      while (this.inFlight + this.peer.inbound.bytes > cap) {
        if (this.failed !== undefined) throw this.failed
        if (aborted(options.signal)) throw new AbortError('write aborted')
        // Room appears when bytes land (inFlight falls) or, once what is in flight fits, when
        // the reader reads. Each wait resolves only on such a change, never at once.
        const waits: Array<Promise<unknown>> = [new Promise<void>(resolve => this.roomWaiters.push(resolve))]
        if (this.inFlight < cap) waits.push(this.peer.inbound.waitForRoom(cap - this.inFlight, options.signal).catch(() => {}))
        if (options.signal !== undefined) waits.push(new Promise<void>(resolve => options.signal!.addEventListener('abort', () => resolve(), { once: true })))
        await Promise.race(waits)
      }
      if (this.failed !== undefined) throw this.failed
      if (aborted(options.signal)) throw new AbortError('write aborted')
    }

    async end(): Promise<void> {
      if (this.closedWrite || this.failed !== undefined) return
      this.closedWrite = true
      this.send('end')
    }

    abort(reason?: Error): void {
      if (this.failed !== undefined) return
      this.send('reset')
      this.fail(reason ?? new AbortError('stream aborted locally'))
      this.from.streams.delete(this)
    }

    [Symbol.asyncIterator](): AsyncIterator<Uint8Array> {
      return this.inbound[Symbol.asyncIterator]()
    }
  }

  return {
    createPeer(info) {
      if (nodes.has(info.id)) throw new InvalidArgumentError(`peer id ${info.id} is taken`)
      const node: SimNode = {
        info: { id: info.id, labels: { ...info.labels } },
        index: byIndex.length,
        hostId: labelId('host', info.labels.host),
        zoneId: labelId('zone', info.labels.zone),
        clock: new NodeClock(sim.clock),
        started: false,
        crashed: false,
        paused: false,
        slow: 1,
        listeners: new Listeners(),
        handlers: new Map(),
        rejected: new Map(),
        streams: new Set(),
        held: [],
        busyUntil: []
      }
      nodes.set(info.id, node)
      byIndex.push(node)
      const net: PeerNet = {
        self: node.info,
        async start() {
          if (node.started) return
          // A restart is a fresh process on the same identity (its clock was replaced at the crash).
          node.crashed = false
          node.started = true
          linkEpoch++
          sim.trace('start', { node: info.id })
          for (const o of nodes.values()) if (linked(node, o)) announceLink(node, o, true)
        },
        async stop() {
          if (!node.started) return
          sim.trace('stop', { node: info.id })
          down(node)
        },
        peers() {
          return linkedPeers(node).map(o => o.info)
        },
        on(event, listener) {
          return node.listeners.on(event, listener)
        },
        subscribe(topic, handler) {
          checkName('topic', topic)
          let subs = subscribers.get(topic)
          if (subs === undefined) subscribers.set(topic, (subs = []))
          subs[node.index] = handler
          const mine = subs
          return () => {
            if (mine[node.index] === handler) mine[node.index] = undefined
          }
        },
        // publish and send do their work synchronously and return a settled promise without
        // making a new one (each promise costs the simulator a microtask drain).
        publish(topic, data) {
          const early = precheck(node, topic, data)
          if (early !== undefined) return early
          // One copy for all receivers (they must not mutate what they are handed), so a
          // receiver-side decode cache keyed by the bytes serves every node.
          const payload = data.slice()
          const subs = subscribers.get(topic)
          if (subs === undefined) return DONE
          for (const o of linkedPeers(node)) if (subs[o.index] !== undefined) transmit(node, o, topic, payload)
          return DONE
        },
        send(peer, topic, data) {
          const early = precheck(node, topic, data)
          if (early !== undefined) return early
          const o = nodes.get(peer)
          if (o === undefined || !linked(node, o) || subscribers.get(topic)?.[o.index] === undefined) return DONE
          transmit(node, o, topic, data.slice())
          return DONE
        },
        handle(protocol, handler) {
          checkName('protocol', protocol)
          node.handlers.set(protocol, handler)
        },
        unhandle(protocol) {
          node.handlers.delete(protocol)
        },
        async open(peer, protocol, options = {}) {
          requireStartedNode(node)
          checkName('protocol', protocol)
          if (options.signal?.aborted === true) throw new AbortError('open aborted')
          const remote = nodes.get(peer)
          if (remote === undefined || !linked(node, remote)) throw new PeerGoneError(`peer ${peer} is not connected`, { peer })
          // The request travels to the peer and the answer comes back: one round trip.
          const there = arrival(node, remote, 0, false).at
          const back = there - sim.now() + arrival(remote, node, 0, false).at - sim.now()
          await new Promise<void>((resolve, reject) => {
            const id = sim.clock.setTimeout(resolve, back)
            options.signal?.addEventListener(
              'abort',
              () => {
                sim.clock.clearTimeout(id)
                reject(new AbortError('open aborted'))
              },
              { once: true }
            )
          })
          if (!linked(node, remote)) throw new PeerGoneError(`peer ${peer} went away while opening`, { peer })
          const handler = remote.handlers.get(protocol)
          if (handler === undefined) throw new ProtocolNotSupportedError(`peer ${peer} does not handle ${protocol}`, { peer, protocol })
          const mine = new SimStream(node, () => remote, peer, protocol)
          const theirs = new SimStream(remote, () => node, info.id, protocol)
          mine.peer = theirs
          theirs.peer = mine
          node.streams.add(mine)
          remote.streams.add(theirs)
          sim.trace('open', { from: info.id, to: peer, protocol })
          Promise.resolve()
            .then(() => handler(theirs))
            .catch((err: unknown) => theirs.abort(err instanceof Error ? err : new Error(String(err))))
          return mine
        },
        rejectedFrom(peer) {
          return node.rejected.get(peer) ?? 0
        }
      }
      return {
        net,
        get clock() {
          return node.clock
        }
      }
    },
    crash(id) {
      const n = nodes.get(id)
      if (n === undefined || n.crashed) return
      sim.trace('crash', { node: id })
      down(n)
      n.crashed = true
      n.paused = false
      n.held.length = 0
      n.clock.crash()
      // The next incarnation gets a fresh clock; the crashed one's timers never fire.
      n.clock = new NodeClock(sim.clock)
      for (const subs of subscribers.values()) subs[n.index] = undefined
      n.handlers.clear()
    },
    pause(id) {
      const n = nodes.get(id)
      if (n === undefined || n.paused) return
      sim.trace('pause', { node: id })
      n.paused = true
      n.clock.pause()
    },
    resume(id) {
      const n = nodes.get(id)
      if (n === undefined || !n.paused) return
      sim.trace('resume', { node: id })
      n.paused = false
      n.clock.resume()
      for (const fn of n.held.splice(0)) fn()
    },
    partition(groups) {
      const group = new Map<PeerId, number>()
      groups.forEach((g, i) => {
        for (const id of g) group.set(id, i)
      })
      sim.trace('partition', { groups: groups.map(g => g.join(',')).join('|') })
      for (const a of nodes.values()) {
        for (const b of nodes.values()) {
          if (a.info.id >= b.info.id) continue
          const ga = group.get(a.info.id)
          const gb = group.get(b.info.id)
          if (ga === undefined || gb === undefined || ga === gb) continue
          const was = linked(a, b)
          cut.add(linkKey(a, b))
          linkEpoch++
          if (was) {
            breakStreams(a, b)
            announceLink(a, b, false)
          }
        }
      }
    },
    heal() {
      sim.trace('heal')
      const pairs = [...cut]
      cut.clear()
      linkEpoch++
      for (const k of pairs) {
        const a = byIndex[Math.floor(k / LINK_KEY)]!
        const b = byIndex[k % LINK_KEY]!
        if (linked(a, b)) announceLink(a, b, true)
      }
    },
    slow(id, factor) {
      const n = nodes.get(id)
      if (n === undefined || !(factor >= 1)) throw new InvalidArgumentError(`slow needs a known node and a factor >= 1, got ${id}, ${factor}`)
      sim.trace('slow', { node: id, factor })
      n.slow = factor
    },
    degrade(a, b, factor) {
      if (!(factor >= 1)) throw new InvalidArgumentError(`degrade needs a factor >= 1, got ${factor}`)
      const x = nodes.get(a)
      const y = nodes.get(b)
      if (x === undefined || y === undefined) throw new InvalidArgumentError(`degrade needs two known nodes, got ${a}, ${b}`)
      sim.trace('degrade', { a, b, factor })
      degraded.set(linkKey(x, y), factor)
    },
    stats() {
      return {
        host: { messages: tierMessages[0]!, bytes: tierBytes[0]! },
        zone: { messages: tierMessages[1]!, bytes: tierBytes[1]! },
        wan: { messages: tierMessages[2]!, bytes: tierBytes[2]! }
      }
    }
  }
}
