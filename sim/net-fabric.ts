import { ClockEvent } from '../core/index.ts'
import type { LinkCapacity, SimLinks, SimNode, Topology } from './net-links.ts'
import { SharedPipe } from './net-pipe.ts'

/**
 * Bytes a flow books on its path at a time. Smaller is fairer (a message waits behind at most
 * about one chunk of each other busy flow at a pipe) and costs more events (one per chunk).
 */
export const FABRIC_CHUNK_BYTES = 64 * 1024

/** A host NIC's default: 10 Gbit/s each way. */
export const DEFAULT_NIC: LinkCapacity = { egressBytesPerS: 1.25e9, ingressBytesPerS: 1.25e9 }
/** A zone uplink's default: 10 Gbit/s each way, shared by every host of the zone. */
export const DEFAULT_UPLINK: LinkCapacity = { egressBytesPerS: 1.25e9, ingressBytesPerS: 1.25e9 }

/** What the network carries: `landed(at)` runs once its last byte has left the last pipe of its path. */
export interface Transfer {
  /** Bytes carried (0: a signal, which lands once everything the pair sent before it has). */
  readonly bytes: number
  /** `at`: simulated ms when the last byte left the path (the latency comes on top). */
  landed(at: number): void
}

/** A directed pair with transfers waiting: one FIFO, booked a chunk at a time. */
export class Flow {
  readonly from: SimNode
  readonly to: SimNode
  readonly tier: number
  readonly queue: Transfer[] = []
  /** Bytes of the head transfer booked so far, and when its latest-ending chunk ends. */
  sent = 0
  end = 0
  constructor(from: SimNode, to: SimNode, tier: number) {
    this.from = from
    this.to = to
    this.tier = tier
  }
}

/** A flow may book its next chunk. */
class FlowRelease extends ClockEvent {
  readonly fabric: SimFabric
  readonly flow: Flow
  constructor(fabric: SimFabric, flow: Flow) {
    super()
    this.fabric = fabric
    this.flow = flow
  }

  override fire(): void {
    this.fabric.pump(this.flow)
  }
}

/**
 * The shared part of SimNet: each host's NIC and each zone's uplink, both ways, as SharedPipes,
 * and the flows that cross them. A flow is a directed pair's traffic, one FIFO (a connection),
 * booked a chunk at a time on its path:
 * - its own link, at the tier profile's `bandwidthBytesPerS` (the most one pair gets; on the
 *   host tier, loopback, this is the whole path);
 * - across hosts: the sender host's NIC egress, then (across zones) the sender zone's uplink
 *   egress and the receiver zone's uplink ingress, then the receiver host's NIC ingress.
 * A chunk goes through as a cut-through switch forwards it: it starts at a pipe no earlier than
 * at the one before and ends no earlier than there, and holds each pipe for its size over that
 * pipe's capacity. A flow books its next chunk one chunk's time at its bottleneck before its
 * last one starts at its last pipe (so a busy flow keeps about one chunk waiting at a pipe, and
 * its bottleneck never idles for want of it): flows that share a pipe take turns chunk by chunk,
 * each gets a fair share of the bottleneck and what one cannot use goes to the others, and a
 * small message waits behind about one chunk per busy flow, never behind another pair's whole
 * transfer. Slow nodes divide their NIC's capacity as well as their links' by their factor.
 */
export class SimFabric {
  private readonly links: SimLinks
  private readonly topology: Topology
  private readonly hosts = new Map<number, { out: SharedPipe; in: SharedPipe }>()
  private readonly zones = new Map<number, { out: SharedPipe; in: SharedPipe }>()

  constructor(links: SimLinks, topology: Topology) {
    this.links = links
    this.topology = topology
  }

  /**
   * The NIC of host `hostId` and the uplink of zone `zoneId` (labelled `zone`), each way: made
   * for the first node on each, with the capacities of the zone's override or the defaults.
   */
  pipesOf(hostId: number, zoneId: number, zone: string): { nicOut: SharedPipe; nicIn: SharedPipe; upOut: SharedPipe; upIn: SharedPipe } {
    let nic = this.hosts.get(hostId)
    if (nic === undefined) this.hosts.set(hostId, (nic = this.pipes(zone, 'nic', DEFAULT_NIC)))
    let up = this.zones.get(zoneId)
    if (up === undefined) this.zones.set(zoneId, (up = this.pipes(zone, 'uplink', DEFAULT_UPLINK)))
    return { nicOut: nic.out, nicIn: nic.in, upOut: up.out, upIn: up.in }
  }

  private pipes(zone: string, kind: 'nic' | 'uplink', fallback: LinkCapacity): { out: SharedPipe; in: SharedPipe } {
    const own = this.topology.zones?.[zone]?.[kind]
    const all = this.topology[kind]
    return {
      out: new SharedPipe(own?.egressBytesPerS ?? all?.egressBytesPerS ?? fallback.egressBytesPerS),
      in: new SharedPipe(own?.ingressBytesPerS ?? all?.ingressBytesPerS ?? fallback.ingressBytesPerS)
    }
  }

  /** Queues `t` from a to b (tier `tier`); `t.landed` may run before this returns. */
  send(a: SimNode, b: SimNode, tier: number, t: Transfer): void {
    const f = a.flows[b.index]
    if (f !== undefined) {
      f.queue.push(t)
      return
    }
    // An idle pair sends a message of one chunk at once (most gossip and control traffic).
    if (t.bytes <= FABRIC_CHUNK_BYTES && !((a.releaseAt[b.index] ?? 0) > this.links.sim.now())) {
      t.landed(this.book(a, b, tier, t.bytes))
      return
    }
    const flow = new Flow(a, b, tier)
    flow.queue.push(t)
    a.flows[b.index] = flow
    this.pump(flow)
  }

  /** Books the flow's chunks while it may; then waits for its next release, or ends it when empty. */
  pump(f: Flow): void {
    const a = f.from
    const b = f.to
    const clock = this.links.sim.clock
    while (f.queue.length > 0) {
      const wait = (a.releaseAt[b.index] ?? 0) - clock.monotonic()
      if (wait > 0) {
        clock.scheduleEvent(new FlowRelease(this, f), wait)
        return
      }
      const t = f.queue[0]!
      const n = Math.min(FABRIC_CHUNK_BYTES, t.bytes - f.sent)
      const end = this.book(a, b, f.tier, n)
      f.sent += n
      if (end > f.end) f.end = end
      if (f.sent >= t.bytes) {
        f.queue.shift()
        const at = f.end
        f.sent = 0
        f.end = 0
        t.landed(at)
      }
    }
    a.flows[b.index] = undefined
  }

  // The chunk being booked: where it starts at the last pipe so far, when it ends there, and the
  // most milliseconds per byte of any pipe on its path (its bottleneck).
  private s = 0
  private e = 0
  private slowest = 0

  /**
   * Books one chunk of `bytes` from a to b on its path, now or as soon as the pair's own link is
   * free; returns when its last byte leaves the last pipe, and sets when the pair may book the next.
   */
  private book(a: SimNode, b: SimNode, tier: number, bytes: number): number {
    const links = this.links
    const now = links.sim.now()
    if (bytes === 0) {
      const landed = a.landedUntil[b.index]
      return landed !== undefined && landed > now ? landed : now
    }
    const busy = a.busyUntil[b.index]
    const perByte = (1000 * links.factor(a, b)) / links.profile(tier).bandwidthBytesPerS
    this.s = busy !== undefined && busy > now ? busy : now
    this.e = this.s + bytes * perByte
    this.slowest = perByte
    a.busyUntil[b.index] = this.e
    if (tier > 0) {
      this.through(a.nicOut, (1000 * a.slow) / a.nicOut.bytesPerS, bytes, now)
      if (tier === 2) {
        this.through(a.upOut, 1000 / a.upOut.bytesPerS, bytes, now)
        this.through(b.upIn, 1000 / b.upIn.bytesPerS, bytes, now)
      }
      this.through(b.nicIn, (1000 * b.slow) / b.nicIn.bytesPerS, bytes, now)
    }
    // The pair books its next chunk one full chunk's time at its bottleneck before this one
    // starts at its last pipe: that chunk then reaches the bottleneck as this one leaves it,
    // and the pair keeps about one chunk waiting there (however small this one was).
    a.releaseAt[b.index] = this.s - FABRIC_CHUNK_BYTES * this.slowest
    const e = this.e
    if (!((a.landedUntil[b.index] ?? 0) >= e)) a.landedUntil[b.index] = e
    return e
  }

  /** The chunk goes on through `pipe` (cut-through: starts no earlier than at the pipe before, ends no earlier). */
  private through(pipe: SharedPipe, msPerByte: number, bytes: number, now: number): void {
    const d = bytes * msPerByte
    this.s = pipe.book(Math.max(this.s, this.e - d), d, now)
    if (this.s + d > this.e) this.e = this.s + d
    if (msPerByte > this.slowest) this.slowest = msPerByte
  }
}
