import type { Rng } from '../core/index.ts'
import { NotStartedError, type Listeners, type PeerId, type PeerInfo, type PeerNetEvents, type StreamHandler } from '../mesh/index.ts'
import type { NodeClock, Simulation } from './engine.ts'

/** How one tier of links behaves. */
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

/** Which kind of link joins two nodes: same host, same zone, or across the WAN. */
export type Tier = 'host' | 'zone' | 'wan'
/** A link profile per tier. */
export type Topology = Record<Tier, LinkProfile>

/** A datacentre-like default: 0.05 ms / 10 GB/s in a host, 0.5 ms / 1.25 GB/s in a zone, 30 ms / 125 MB/s across. */
export const DEFAULT_TOPOLOGY: Topology = {
  host: { latencyMs: 0.05, jitterMs: 0.01, bandwidthBytesPerS: 10e9, loss: 0, duplicate: 0, corrupt: 0 },
  zone: { latencyMs: 0.5, jitterMs: 0.1, bandwidthBytesPerS: 1.25e9, loss: 0, duplicate: 0, corrupt: 0 },
  wan: { latencyMs: 30, jitterMs: 5, bandwidthBytesPerS: 125e6, loss: 0, duplicate: 0, corrupt: 0 }
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
}

const TIERS: readonly Tier[] = ['host', 'zone', 'wan']
/** Link keys for cut and degraded links: lower index * LINK_KEY + higher index. */
export const LINK_KEY = 2 ** 26

/** Throws NotStartedError unless `node` is started. */
export function requireStartedNode(node: SimNode): void {
  if (!node.started) throw new NotStartedError(`peer ${node.info.id} is not started`)
}

/**
 * The nodes and the links between them: which pairs are linked (started, not cut), the
 * bandwidth and latency model (each directed link sends one thing at a time), delivery to a
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

  /**
   * When bytes sent now from a to b over tier `tier` arrive: serialized behind earlier sends
   * on the directed link, then latency and (if `jitter`) jitter.
   */
  arrivalAt(a: SimNode, b: SimNode, tier: number, bytes: number, jitter: boolean): number {
    const p = this.profiles[tier]!
    const factor = a.slow * b.slow * (this.degraded.size === 0 ? 1 : (this.degraded.get(this.linkKey(a, b)) ?? 1))
    const now = this.sim.now()
    const busy = a.busyUntil[b.index]
    const start = busy !== undefined && busy > now ? busy : now
    const done = start + (bytes / p.bandwidthBytesPerS) * 1000 * factor
    a.busyUntil[b.index] = done
    this.tierMessages[tier]!++
    this.tierBytes[tier]! += bytes
    return done + p.latencyMs * factor + (jitter ? this.rng.float() * p.jitterMs * factor : 0)
  }

  arrival(a: SimNode, b: SimNode, bytes: number, jitter: boolean): { at: number; p: LinkProfile } {
    const tier = this.tierOf(a, b)
    return { at: this.arrivalAt(a, b, tier, bytes, jitter), p: this.profiles[tier]! }
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
