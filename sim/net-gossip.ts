import { ClockEvent } from '../core/index.ts'
import { checkGossipSize, checkName, type GossipHandler, type GossipMessage, type GossipVerdict, type PeerId } from '../mesh/index.ts'
import type { Transfer } from './net-fabric.ts'
import { requireStartedNode, type SimLinks, type SimNode } from './net-links.ts'

const DONE: Promise<void> = Promise.resolve()
const VERDICTS: readonly GossipVerdict[] = ['accept', 'reject', 'ignore']

/**
 * A gossip or direct message in flight: one object per delivery (no closures). It is the
 * fabric's Transfer too: when its last byte has left the path, it schedules itself (and a
 * duplicate, or the signature failure of a corrupted copy) after the tier's latency and jitter.
 */
class GossipDelivery extends ClockEvent implements Transfer {
  readonly gossip: SimGossip
  readonly node: SimNode
  readonly o: SimNode
  readonly topic: string
  readonly payload: Uint8Array
  readonly tier: number
  /** Bit c set: copy c is corrupted; `copies` is 0 for a lost message. */
  readonly corrupt: number
  readonly copies: number
  constructor(gossip: SimGossip, node: SimNode, o: SimNode, topic: string, payload: Uint8Array, tier: number, copies: number, corrupt: number) {
    super()
    this.gossip = gossip
    this.node = node
    this.o = o
    this.topic = topic
    this.payload = payload
    this.tier = tier
    this.copies = copies
    this.corrupt = corrupt
  }

  get bytes(): number {
    return this.payload.length
  }

  landed(at: number): void {
    if (this.copies === 0) return
    const links = this.gossip.links
    const clock = links.sim.clock
    const arrival = links.arrivalAfter(this.node, this.o, this.tier, at, true)
    let scheduled = false
    for (let c = 0; c < this.copies; c++) {
      const when = arrival + c * links.profile(this.tier).latencyMs
      // Gossip is signed on the real transport: a corrupted message fails its signature
      // there and is dropped (and counted against the sender), never handed to code.
      if ((this.corrupt & (1 << c)) !== 0) {
        const { o, topic } = this
        const from = this.node.info.id
        links.deliverAt(o, when, () => {
          links.sim.trace('gossip-corrupt', { to: o.info.id, from, topic })
          o.rejected.set(from, (o.rejected.get(from) ?? 0) + 1)
        })
        continue
      }
      const ev = scheduled ? new GossipDelivery(this.gossip, this.node, this.o, this.topic, this.payload, this.tier, 1, 0) : this
      scheduled = true
      clock.scheduleEvent(ev, Math.max(0, when - links.sim.now()))
    }
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
    if (this.gossip.links.linked(this.node, this.o)) this.gossip.offer(this.o, this.node, this.topic, this.payload)
  }
}

/**
 * Gossip and direct messages over SimLinks: subscriptions, the per-message checks, loss,
 * duplication and corruption by the link's profile, validation at the receiver, and the
 * compact trace record of each delivery.
 */
export class SimGossip {
  readonly links: SimLinks
  // Gossip handlers per topic, by node index: one shared table per topic (a publish to 1000
  // peers checks each for a subscription, and a per-node map would be one cold lookup per
  // peer; an array indexed by node is a load where a map keyed by node was a hash probe).
  private readonly subscribers = new Map<string, Array<GossipHandler | undefined>>()
  // Gossip deliveries are traced as compact records (node indices, topic and verdict codes).
  private readonly topicCodes = new Map<string, number>()
  private readonly topicNames: string[] = []
  private readonly recordGossip: number
  // Topic names already checked (checkName runs a regular expression).
  private readonly checkedTopics = new Set<string>()

  constructor(links: SimLinks) {
    this.links = links
    const byIndex = links.byIndex
    const topicNames = this.topicNames
    this.recordGossip = links.sim.recordKind(
      (to, from, tv, bytes) =>
        `gossip to=${byIndex[to]!.info.id} from=${byIndex[from]!.info.id} topic=${topicNames[tv >>> 2]!} bytes=${bytes} verdict=${VERDICTS[tv & 3]!}`
    )
  }

  /** Sets `node`'s handler for `topic`; the returned function removes it (if still the same). */
  subscribe(node: SimNode, topic: string, handler: GossipHandler): () => void {
    checkName('topic', topic)
    let subs = this.subscribers.get(topic)
    if (subs === undefined) this.subscribers.set(topic, (subs = []))
    subs[node.index] = handler
    const mine = subs
    return () => {
      if (mine[node.index] === handler) mine[node.index] = undefined
    }
  }

  /** Drops every subscription of `node` (it crashed). */
  unsubscribeAll(node: SimNode): void {
    for (const subs of this.subscribers.values()) subs[node.index] = undefined
  }

  // publish and send do their work synchronously and return a settled promise without
  // making a new one (each promise costs the simulator a microtask drain).

  /** Publishes to every linked subscriber of `topic`. */
  publish(node: SimNode, topic: string, data: Uint8Array): Promise<void> {
    const early = this.precheck(node, topic, data)
    if (early !== undefined) return early
    // One copy for all receivers (they must not mutate what they are handed), so a
    // receiver-side decode cache keyed by the bytes serves every node.
    const payload = data.slice()
    const subs = this.subscribers.get(topic)
    if (subs === undefined) return DONE
    for (const o of this.links.linkedPeers(node)) if (subs[o.index] !== undefined) this.transmit(node, o, topic, payload)
    return DONE
  }

  /** Sends to one peer, if it is linked and subscribed to `topic`. */
  send(node: SimNode, peer: PeerId, topic: string, data: Uint8Array): Promise<void> {
    const early = this.precheck(node, topic, data)
    if (early !== undefined) return early
    const o = this.links.nodes.get(peer)
    if (o === undefined || !this.links.linked(node, o) || this.subscribers.get(topic)?.[o.index] === undefined) return DONE
    this.transmit(node, o, topic, data.slice())
    return DONE
  }

  /** Validates and delivers one message at `to`; 'reject' counts against the sender. */
  offer(to: SimNode, fromNode: SimNode, topic: string, data: Uint8Array): void {
    const h = this.subscribers.get(topic)?.[to.index]
    if (h === undefined) return
    const from = fromNode.info.id
    const msg: GossipMessage = { topic, from, data }
    const verdict = h.validate?.(msg) ?? 'accept'
    const v = verdict === 'accept' ? 0 : verdict === 'reject' ? 1 : 2
    this.links.sim.record(this.recordGossip, to.index, fromNode.index, this.topicCode(topic) * 4 + v, data.length)
    if (v === 1) to.rejected.set(from, (to.rejected.get(from) ?? 0) + 1)
    if (v === 0) h.deliver(msg)
  }

  private topicCode(topic: string): number {
    let c = this.topicCodes.get(topic)
    if (c === undefined) {
      c = this.topicNames.length
      this.topicCodes.set(topic, c)
      this.topicNames.push(topic)
    }
    return c
  }

  private checkTopic(topic: string): void {
    if (this.checkedTopics.has(topic)) return
    checkName('topic', topic)
    this.checkedTopics.add(topic)
  }

  /**
   * A refused or paused publish/send settles here (undefined: go on and transmit). Shared by
   * all nodes, like the other per-message helpers: a closure per node is one more cold object
   * per message at 1000 nodes.
   */
  private precheck(node: SimNode, topic: string, data: Uint8Array): Promise<void> | undefined {
    try {
      requireStartedNode(node)
      this.checkTopic(topic)
      checkGossipSize(data)
    } catch (err) {
      return Promise.reject(err)
    }
    return node.paused ? DONE : undefined
  }

  /**
   * Gossip or a direct message from `node` to `o`: loss, duplication and corruption are drawn
   * now; the message crosses the fabric (a lost one too: it was sent) and lands later.
   */
  private transmit(node: SimNode, o: SimNode, topic: string, payload: Uint8Array): void {
    const links = this.links
    const tier = links.tierOf(node, o)
    const p = links.profile(tier)
    let copies = 1
    let corrupt = 0
    if (p.loss > 0 && links.rng.bool(p.loss)) {
      links.sim.trace('lost', { from: node.info.id, to: o.info.id, topic })
      copies = 0
    } else {
      if (p.duplicate > 0 && links.rng.bool(p.duplicate)) copies = 2
      if (p.corrupt > 0) for (let c = 0; c < copies; c++) if (links.rng.bool(p.corrupt)) corrupt |= 1 << c
    }
    links.send(node, o, tier, new GossipDelivery(this, node, o, topic, payload, tier, copies, corrupt))
  }
}
