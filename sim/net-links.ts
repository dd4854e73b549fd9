import type { Rng } from '../core/index.ts'
import { NotStartedError, type Listeners, type PeerId, type PeerInfo, type PeerNetEvents, type StreamHandler } from '../mesh/index.ts'
import type { NodeClock, Simulation } from './engine.ts'
import { DEFAULT_NIC, DEFAULT_UPLINK, SimFabric, type Flow, type Transfer } from './net-fabric.ts'
import type { SharedPipe } from './net-pipe.ts'

/** How one tier of links behaves. */
export interface LinkProfile {
  /** One-way latency (ms). */
  latencyMs: number
  /** Uniform extra delay in [0, jitterMs) per message; gossip may be reordered by it. */
  jitterMs: number
  /**
   * Bytes per second one directed pair's traffic gets at most on this tier (its own link: a
   * connection's ceiling). Across hosts the pair also shares the NICs and, across zones, the
   * zone uplinks it crosses (`Topology.nic`, `Topology.uplink`); within a host (loopback) this
   * is the whole path.
   */
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

/** Which kind of link joins two nodes: same host, same zone, or across the WAN. */
export type Tier = 'host' | 'zone' | 'wan'
/** What a shared link carries each way, in bytes per second. */
export interface LinkCapacity {
  /** Out of the host (NIC) or out of the zone (uplink). */
  egressBytesPerS: number
  /** Into the host (NIC) or into the zone (uplink). */
  ingressBytesPerS: number
}

/**
 * A link profile per tier, and the shared links: every host's NIC and every zone's uplink,
 * each way, whose capacity all traffic through them shares (sim/net-fabric.ts). A field left
 * out takes its default (DEFAULT_NIC, DEFAULT_UPLINK); `zones` overrides them per zone label
 * (a zone's uplink, and the NICs of the hosts in it).
 */
export interface Topology extends Record<Tier, LinkProfile> {
  nic?: Partial<LinkCapacity>
  uplink?: Partial<LinkCapacity>
  zones?: Readonly<Record<string, { nic?: Partial<LinkCapacity>; uplink?: Partial<LinkCapacity> }>>
}

/**
 * A datacentre-like default: 0.05 ms / 10 GB/s in a host (loopback), 0.5 ms in a zone, 30 ms
 * across; a pair gets at most 1.25 GB/s in a zone and 125 MB/s across; NICs and zone uplinks
 * carry 10 Gbit/s each way.
 */
export const DEFAULT_TOPOLOGY: Topology = {
  host: { latencyMs: 0.05, jitterMs: 0.01, bandwidthBytesPerS: 10e9, loss: 0, duplicate: 0, corrupt: 0 },
  zone: { latencyMs: 0.5, jitterMs: 0.1, bandwidthBytesPerS: 1.25e9, loss: 0, duplicate: 0, corrupt: 0 },
  wan: { latencyMs: 30, jitterMs: 5, bandwidthBytesPerS: 125e6, loss: 0, duplicate: 0, corrupt: 0 },
  nic: DEFAULT_NIC,
  uplink: DEFAULT_UPLINK
}

/** What the network needs of one end of a stream. */
export interface StreamEnd {
  readonly remote: PeerId
  readonly peer: StreamEnd
  fail(err: Error): void
}

/** One simulated node: its identity, lifecycle flags, handlers and per-link state. */
export interface SimNode {
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
  /** When the pair from this node to each other node may book its next chunk, by the other's index. */
  releaseAt: number[]
  /** When the last byte the pair has booked leaves its path, by the other's index (a signal lands no earlier). */
  landedUntil: number[]
  /** The pairs from this node with transfers waiting, by the other's index. */
  flows: Array<Flow | undefined>
  /** Its host's NIC and its zone's uplink, each way (shared with the other nodes there). */
  nicOut: SharedPipe
  nicIn: SharedPipe
  upOut: SharedPipe
  upIn: SharedPipe
}

const TIERS: readonly Tier[] = ['host', 'zone', 'wan']
/** Link keys for cut and degraded links: lower index * LINK_KEY + higher index. */
export const LINK_KEY = 2 ** 26

/** Throws NotStartedError unless `node` is started. */
export function requireStartedNode(node: SimNode): void {
  if (!node.started) throw new NotStartedError(`peer ${node.info.id} is not started`)
}

/**
 * The nodes and the links between them: which pairs are linked (started, not cut), what a
 * transfer takes (the fabric's shared NICs and uplinks, then the tier's latency), delivery to a
 * node (dropped if it crashed, held while it is paused) and the per-tier counters. All
 * randomness of the network comes from `rng`, split once from the simulation's.
 */
export class SimLinks {
  readonly sim: Simulation
  readonly rng: Rng
  readonly nodes = new Map<PeerId, SimNode>()
  readonly byIndex: SimNode[] = []
  readonly cut = new Set<number>()
  readonly degraded = new Map<number, number>()
  readonly fabric: SimFabric
  private readonly profiles: LinkProfile[]
  private readonly tierMessages = [0, 0, 0]
  private readonly tierBytes = [0, 0, 0]
  private readonly labelIds = new Map<string, number>()
  // Who each node is linked to, recomputed only after a link changes (start, stop, crash,
  // partition, heal): publish and peers() at 1000 nodes must not rescan every node each time.
  private linkEpoch = 0
  private readonly linkCache = new Map<SimNode, { epoch: number; peers: SimNode[] }>()

  constructor(sim: Simulation, topology: Topology) {
    this.sim = sim
    this.rng = sim.rng.split('simnet')
    this.profiles = TIERS.map(t => topology[t])
    this.fabric = new SimFabric(this, topology)
  }

  /** Interns a host or zone label. */
  labelId(kind: string, label: string): number {
    const key = `${kind}\n${label}`
    let id = this.labelIds.get(key)
    if (id === undefined) this.labelIds.set(key, (id = this.labelIds.size))
    return id
  }

  linkKey(a: SimNode, b: SimNode): number {
    return a.index < b.index ? a.index * LINK_KEY + b.index : b.index * LINK_KEY + a.index
  }

  linked(a: SimNode, b: SimNode): boolean {
    return a !== b && a.started && b.started && (this.cut.size === 0 || !this.cut.has(this.linkKey(a, b)))
  }

  /** Call after any change to which nodes are linked (drops the cached peer lists). */
  linksChanged(): void {
    this.linkEpoch++
  }

  linkedPeers(node: SimNode): SimNode[] {
    const c = this.linkCache.get(node)
    if (c !== undefined && c.epoch === this.linkEpoch) return c.peers
    const peers = this.byIndex.filter(o => this.linked(node, o))
    this.linkCache.set(node, { epoch: this.linkEpoch, peers })
    return peers
  }

  /** 0 host, 1 zone, 2 wan (an index into TIERS and profiles). */
  tierOf(a: SimNode, b: SimNode): number {
    return a.hostId === b.hostId ? 0 : a.zoneId === b.zoneId ? 1 : 2
  }

  profile(tier: number): LinkProfile {
    return this.profiles[tier]!
  }

  /** What slows the pair a-b down: both nodes' slow factors and the link's degradation. */
  factor(a: SimNode, b: SimNode): number {
    return a.slow * b.slow * (this.degraded.size === 0 ? 1 : (this.degraded.get(this.linkKey(a, b)) ?? 1))
  }

  /** Sends `t` from a to b through the fabric (counted per tier); `t.landed` may run before this returns. */
  send(a: SimNode, b: SimNode, tier: number, t: Transfer): void {
    this.tierMessages[tier]!++
    this.tierBytes[tier]! += t.bytes
    this.fabric.send(a, b, tier, t)
  }

  /** When what left the path from a to b at `at` arrives: the tier's latency and (if `jitter`) jitter on top. */
  arrivalAfter(a: SimNode, b: SimNode, tier: number, at: number, jitter: boolean): number {
    const p = this.profiles[tier]!
    const factor = this.factor(a, b)
    return at + p.latencyMs * factor + (jitter ? this.rng.float() * p.jitterMs * factor : 0)
  }

  /**
   * Runs `fn` when a signal from a reaches b (a stream opening or failing): no bytes, it lands
   * once everything a sent b before it has, then takes the latency.
   */
  signal(a: SimNode, b: SimNode, fn: () => void): void {
    const tier = this.tierOf(a, b)
    this.send(a, b, tier, {
      bytes: 0,
      landed: at => {
        this.sim.clock.schedule(fn, Math.max(0, this.arrivalAfter(a, b, tier, at, false) - this.sim.now()))
      }
    })
  }

  /** Runs `fn` at simulated time `at` on node `to`, unless it crashed; held while it is paused. */
  deliverAt(to: SimNode, at: number, fn: () => void): void {
    this.sim.clock.schedule(
      () => {
        if (to.crashed || !to.started) return
        if (to.paused) to.held.push(fn)
        else fn()
      },
      Math.max(0, at - this.sim.now())
    )
  }

  /** `data`, or a copy with one bit flipped with the profile's corruption probability. */
  maybeCorrupt(data: Uint8Array, p: LinkProfile): Uint8Array {
    if (p.corrupt <= 0 || data.length === 0 || !this.rng.bool(p.corrupt)) return data
    const copy = data.slice()
    copy[this.rng.int(0, copy.length)]! ^= 1 << this.rng.int(0, 8)
    return copy
  }

  /** Messages and bytes carried, per tier. */
  stats(): Record<Tier, { messages: number; bytes: number }> {
    return {
      host: { messages: this.tierMessages[0]!, bytes: this.tierBytes[0]! },
      zone: { messages: this.tierMessages[1]!, bytes: this.tierBytes[1]! },
      wan: { messages: this.tierMessages[2]!, bytes: this.tierBytes[2]! }
    }
  }
}
