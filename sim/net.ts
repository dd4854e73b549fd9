import type { PeerId, PeerInfo, PeerNet } from '../mesh/index.ts'
import type { NodeClock, Simulation } from './engine.ts'
import { createFaultControls } from './net-faults.ts'
import { SimGossip } from './net-gossip.ts'
import { DEFAULT_TOPOLOGY, SimLinks, type Tier, type Topology } from './net-links.ts'
import { createSimPeer } from './net-peer.ts'

export { DEFAULT_NIC, DEFAULT_UPLINK, FABRIC_CHUNK_BYTES } from './net-fabric.ts'
export { DEFAULT_TOPOLOGY, type LinkCapacity, type LinkProfile, type Tier, type Topology } from './net-links.ts'

/**
 * SimNet: PeerNets over simulated links. Every pair of started, unpartitioned nodes is
 * connected. What a node sends to another is one FIFO per directed pair; it crosses the pair's
 * own link (the tier's per-pair bandwidth) and, between hosts, the NICs and zone uplinks on its
 * way, whose capacity every flow through them shares chunk by chunk (sim/net-fabric.ts); then
 * it takes the tier's latency + jitter, and may be lost, duplicated or corrupted with the tier's
 * probabilities. Tiers come from labels: same host, same zone, or across the WAN. Faults: crash, restart, pause/resume, partitions,
 * slow nodes and degraded links. All randomness is split from the simulation's Rng, all time
 * is the simulation's clock, and every delivery and fault is traced.
 */
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
  /** Multiplies a node's latency by `factor` and divides its links' and its NIC's bandwidth by it (1 = normal). */
  slow(id: PeerId, factor: number): void
  /** The same for one link (both directions). */
  degrade(a: PeerId, b: PeerId, factor: number): void
  /** Messages and bytes carried, per tier. */
  stats(): Record<Tier, { messages: number; bytes: number }>
}

/**
 * Creates a simulated network on `sim`. Its parts: SimLinks (nodes, links, latency, per-tier
 * counters) with its SimFabric (the shared NICs and uplinks and the flows over them), SimGossip (gossip and direct messages), openSimStream
 * (streams), createFaultControls (crash, pause, partition, slow, degrade) and createSimPeer
 * (one node's PeerNet).
 */
export function createSimNetwork(sim: Simulation, topology: Topology = DEFAULT_TOPOLOGY): SimNetwork {
  const links = new SimLinks(sim, topology)
  const gossip = new SimGossip(links)
  return {
    createPeer: info => createSimPeer(links, gossip, info),
    ...createFaultControls(links, gossip),
    stats: () => links.stats()
  }
}
