import { InvalidArgumentError } from '../core/index.ts'
import { Listeners, checkName, type PeerInfo, type PeerNet } from '../mesh/index.ts'
import { NodeClock } from './engine.ts'
import { nodeDown, nodeUp } from './net-faults.ts'
import type { SimGossip } from './net-gossip.ts'
import type { SimLinks, SimNode } from './net-links.ts'
import { openSimStream } from './net-stream.ts'

function addNode(links: SimLinks, info: PeerInfo): SimNode {
  if (links.nodes.has(info.id)) throw new InvalidArgumentError(`peer id ${info.id} is taken`)
  const hostId = links.labelId('host', info.labels.host)
  const zoneId = links.labelId('zone', info.labels.zone)
  const pipes = links.fabric.pipesOf(hostId, zoneId, info.labels.zone)
  const node: SimNode = {
    info: { id: info.id, labels: { ...info.labels } },
    index: links.byIndex.length,
    hostId,
    zoneId,
    clock: new NodeClock(links.sim.clock),
    started: false,
    crashed: false,
    paused: false,
    slow: 1,
    listeners: new Listeners(),
    handlers: new Map(),
    rejected: new Map(),
    streams: new Set(),
    held: [],
    busyUntil: [],
    releaseAt: [],
    landedUntil: [],
    flows: [],
    nicOut: pipes.nicOut,
    nicIn: pipes.nicIn,
    upOut: pipes.upOut,
    upIn: pipes.upIn
  }
  links.nodes.set(info.id, node)
  links.byIndex.push(node)
  return node
}

/**
 * Creates a node (not started) on `links`: its PeerNet and, through `clock`, the clock of its
 * current incarnation (a crash replaces it).
 */
export function createSimPeer(links: SimLinks, gossip: SimGossip, info: PeerInfo): { net: PeerNet; clock: NodeClock } {
  const node = addNode(links, info)
  const net: PeerNet = {
    self: node.info,
    async start() {
      if (node.started) return
      nodeUp(links, node)
    },
    async stop() {
      if (!node.started) return
      links.sim.trace('stop', { node: info.id })
      nodeDown(links, node)
    },
    peers() {
      return links.linkedPeers(node).map(o => o.info)
    },
    on(event, listener) {
      return node.listeners.on(event, listener)
    },
    subscribe: (topic, handler) => gossip.subscribe(node, topic, handler),
    publish: (topic, data) => gossip.publish(node, topic, data),
    send: (peer, topic, data) => gossip.send(node, peer, topic, data),
    handle(protocol, handler) {
      checkName('protocol', protocol)
      node.handlers.set(protocol, handler)
    },
    unhandle(protocol) {
      node.handlers.delete(protocol)
    },
    open: (peer, protocol, options = {}) => openSimStream(links, node, peer, protocol, options),
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
}
