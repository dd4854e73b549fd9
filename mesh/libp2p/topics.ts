import type { Logger } from '../../core/index.ts'
import { remember } from '../checks.ts'
import type { GossipHandler, GossipMessage, GossipVerdict, PeerId } from '../peernet.ts'
import { describe } from './errors.ts'

/** How a message arrived, for logs: through gossipsub, or on a direct stream. */
export type Carrier = 'gossip' | 'direct message'

/**
 * The topic handlers of one PeerNet and its count of rejected messages per sender. Gossip and
 * direct messages run the same validate-then-deliver path here, so a topic's handler sees
 * both alike and a 'reject' from either counts against the sender.
 */
export class TopicTable {
  private readonly handlers = new Map<string, GossipHandler>()
  private readonly rejected = new Map<PeerId, number>()
  private readonly log: Logger

  constructor(log: Logger) {
    this.log = log
  }

  get(topic: string): GossipHandler | undefined {
    return this.handlers.get(topic)
  }
  set(topic: string, handler: GossipHandler): void {
    this.handlers.set(topic, handler)
  }
  delete(topic: string): void {
    this.handlers.delete(topic)
  }
  entries(): IterableIterator<[string, GossipHandler]> {
    return this.handlers.entries()
  }

  /** Counts one rejected message from `from` (bounded: maxTrackedPeers senders). */
  reject(from: PeerId): void {
    remember(this.rejected, from, (this.rejected.get(from) ?? 0) + 1)
  }

  rejectedFrom(peer: PeerId): number {
    return this.rejected.get(peer) ?? 0
  }

  /** The handler's verdict on `msg` (a validator that throws rejects); a 'reject' is counted. */
  validate(handler: GossipHandler, msg: GossipMessage, via: Carrier): GossipVerdict {
    let verdict: GossipVerdict
    try {
      verdict = handler.validate?.(msg) ?? 'accept'
    } catch (err) {
      this.log.debug({ err: describe(err), topic: msg.topic, from: msg.from }, `${via} validator threw; rejecting`)
      verdict = 'reject'
    }
    if (verdict === 'reject') this.reject(msg.from)
    return verdict
  }

  /** Hands an accepted message to its handler; a handler that throws is logged, not fatal. */
  deliver(handler: GossipHandler, msg: GossipMessage, via: Carrier): void {
    try {
      handler.deliver(msg)
    } catch (err) {
      this.log.error({ err: describe(err), topic: msg.topic }, `${via} handler threw`)
    }
  }
}
