import { ClockEvent, InvalidArgumentError } from '../core/index.ts'
import { PeerGoneError, type PeerId } from '../mesh/index.ts'
import { NodeClock } from './engine.ts'
import type { SimGossip } from './net-gossip.ts'
import type { Transfer } from './net-fabric.ts'
import { LINK_KEY, type SimLinks, type SimNode } from './net-links.ts'

/**
 * `to` learns that its link to `peer` came up (if it still is) or went down: one object per
 * announcement, no closures (1000 nodes starting announce half a million links both ways). It
 * travels as a signal from `peer` to `to`: no bytes, behind what the pair sent before it.
 */
class LinkEvent extends ClockEvent implements Transfer {
  readonly bytes = 0
  readonly links: SimLinks
  readonly to: SimNode
  readonly peer: SimNode
  readonly up: boolean
  constructor(links: SimLinks, to: SimNode, peer: SimNode, up: boolean) {
    super()
    this.links = links
    this.to = to
    this.peer = peer
    this.up = up
  }

  landed(at: number): void {
    const links = this.links
    const arrival = links.arrivalAfter(this.peer, this.to, links.tierOf(this.peer, this.to), at, false)
    links.sim.clock.scheduleEvent(this, Math.max(0, arrival - links.sim.now()))
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
    else if (this.links.linked(this.peer, this.to)) this.to.listeners.emit('peer:connect', this.peer.info)
  }
}

/** Each end of the link a-b learns, after a latency, that it came up or went down. */
function announceLink(links: SimLinks, a: SimNode, b: SimNode, up: boolean): void {
  links.send(a, b, links.tierOf(a, b), new LinkEvent(links, b, a, up))
  links.send(b, a, links.tierOf(b, a), new LinkEvent(links, a, b, up))
}

/**
 * Both ends of every stream between a and b fail; each side learns by a signal from the other,
 * after what the other had sent it (a crashed process's sent bytes still arrive, then the reset).
 */
function breakStreams(links: SimLinks, a: SimNode, b: SimNode): void {
  for (const s of [...a.streams]) {
    if (s.remote !== b.info.id) continue
    const gone = (who: PeerId): PeerGoneError => new PeerGoneError(`peer ${who} went away mid-stream`, { peer: who })
    links.signal(b, a, () => s.fail(gone(b.info.id)))
    links.signal(a, b, () => s.peer.fail(gone(a.info.id)))
    a.streams.delete(s)
    b.streams.delete(s.peer)
  }
}

/** Starts `node`: its links to every started, uncut node come up. */
export function nodeUp(links: SimLinks, node: SimNode): void {
  // A restart is a fresh process on the same identity (its clock was replaced at the crash).
  node.crashed = false
  node.started = true
  links.linksChanged()
  links.sim.trace('start', { node: node.info.id })
  for (const o of links.nodes.values()) if (links.linked(node, o)) announceLink(links, node, o, true)
}

/** Stops `n`: its links go down and its streams break. */
export function nodeDown(links: SimLinks, n: SimNode): void {
  const was = [...links.nodes.values()].filter(o => links.linked(n, o))
  n.started = false
  links.linksChanged()
  for (const o of was) {
    breakStreams(links, n, o)
    announceLink(links, n, o, false)
  }
}

/** The fault controls of a SimNetwork. */
export interface FaultControls {
  crash(id: PeerId): void
  pause(id: PeerId): void
  resume(id: PeerId): void
  partition(groups: ReadonlyArray<readonly PeerId[]>): void
  heal(): void
  slow(id: PeerId, factor: number): void
  degrade(a: PeerId, b: PeerId, factor: number): void
}

function crash(links: SimLinks, gossip: SimGossip, id: PeerId): void {
  const n = links.nodes.get(id)
  if (n === undefined || n.crashed) return
  links.sim.trace('crash', { node: id })
  nodeDown(links, n)
  n.crashed = true
  n.paused = false
  n.held.length = 0
  n.clock.crash()
  // The next incarnation gets a fresh clock; the crashed one's timers never fire.
  n.clock = new NodeClock(links.sim.clock)
  gossip.unsubscribeAll(n)
  n.handlers.clear()
}

function partition(links: SimLinks, groups: ReadonlyArray<readonly PeerId[]>): void {
  const group = new Map<PeerId, number>()
  groups.forEach((g, i) => {
    for (const id of g) group.set(id, i)
  })
  links.sim.trace('partition', { groups: groups.map(g => g.join(',')).join('|') })
  for (const a of links.nodes.values()) {
    for (const b of links.nodes.values()) {
      if (a.info.id >= b.info.id) continue
      const ga = group.get(a.info.id)
      const gb = group.get(b.info.id)
      if (ga === undefined || gb === undefined || ga === gb) continue
      const was = links.linked(a, b)
      links.cut.add(links.linkKey(a, b))
      links.linksChanged()
      if (was) {
        breakStreams(links, a, b)
        announceLink(links, a, b, false)
      }
    }
  }
}

function heal(links: SimLinks): void {
  links.sim.trace('heal')
  const pairs = [...links.cut]
  links.cut.clear()
  links.linksChanged()
  for (const k of pairs) {
    const a = links.byIndex[Math.floor(k / LINK_KEY)]!
    const b = links.byIndex[k % LINK_KEY]!
    if (links.linked(a, b)) announceLink(links, a, b, true)
  }
}

/** Crash, pause/resume, partitions and slowdowns on `links` (a crash also drops the node's subscriptions). */
export function createFaultControls(links: SimLinks, gossip: SimGossip): FaultControls {
  const sim = links.sim
  return {
    crash: id => crash(links, gossip, id),
    pause(id) {
      const n = links.nodes.get(id)
      if (n === undefined || n.paused) return
      sim.trace('pause', { node: id })
      n.paused = true
      n.clock.pause()
    },
    resume(id) {
      const n = links.nodes.get(id)
      if (n === undefined || !n.paused) return
      sim.trace('resume', { node: id })
      n.paused = false
      n.clock.resume()
      for (const fn of n.held.splice(0)) fn()
    },
    partition: groups => partition(links, groups),
    heal: () => heal(links),
    slow(id, factor) {
      const n = links.nodes.get(id)
      if (n === undefined || !(factor >= 1)) throw new InvalidArgumentError(`slow needs a known node and a factor >= 1, got ${id}, ${factor}`)
      sim.trace('slow', { node: id, factor })
      n.slow = factor
    },
    degrade(a, b, factor) {
      if (!(factor >= 1)) throw new InvalidArgumentError(`degrade needs a factor >= 1, got ${factor}`)
      const x = links.nodes.get(a)
      const y = links.nodes.get(b)
      if (x === undefined || y === undefined) throw new InvalidArgumentError(`degrade needs two known nodes, got ${a}, ${b}`)
      sim.trace('degrade', { a, b, factor })
      links.degraded.set(links.linkKey(x, y), factor)
    }
  }
}
