import { TopicValidatorResult, type GossipSub, type Message } from '@libp2p/gossipsub'
import type { PeerId as Libp2pPeerId } from '@libp2p/interface'
import { MESH_LIMITS } from '../limits.ts'
import type { GossipHandler, PeerId } from '../peernet.ts'
import { gossipTag, proofsEqual } from './auth.ts'
import type { TopicTable } from './topics.ts'

/** Bytes of the run tag in front of every gossip message (gossipTag). */
const TAG_BYTES = 32

/**
 * Gossip on gossipsub. A topic `t` of run `r` is the gossipsub topic `/zeromesh/r/t`; every
 * message is [32-byte gossipTag][data], signed by gossipsub. The topic validator rejects
 * unsigned messages, bad sizes and bad tags before the handler's own validator runs.
 */
export class GossipRouter {
  private readonly prefix: string
  private readonly key: Uint8Array
  private readonly topics: TopicTable
  private pubsub: GossipSub | undefined

  /** `key` is the run's gossip key (deriveRunKeys). */
  constructor(init: { runId: string; key: Uint8Array; topics: TopicTable }) {
    this.prefix = `/zeromesh/${init.runId}/`
    this.key = init.key
    this.topics = init.topics
  }

  /** Starts using `pubsub`: messages flow to the table's handlers from here on. */
  attach(pubsub: GossipSub): void {
    this.pubsub = pubsub
    pubsub.addEventListener('message', evt => this.onMessage(evt.detail))
  }

  /** Subscribes (at once if attached, else just records the handler); returns the unsubscribe. */
  subscribe(topic: string, handler: GossipHandler): () => void {
    this.topics.set(topic, handler)
    const full = this.prefix + topic
    if (this.pubsub !== undefined) {
      this.pubsub.topicValidators.set(full, this.validator(topic))
      this.pubsub.subscribe(full)
    }
    return () => {
      if (this.topics.get(topic) !== handler) return
      this.topics.delete(topic)
      this.pubsub?.unsubscribe(full)
      this.pubsub?.topicValidators.delete(full)
    }
  }

  /** Subscribes every topic recorded so far (after the node started). */
  subscribeAll(): void {
    for (const [topic, handler] of [...this.topics.entries()]) this.subscribe(topic, handler)
  }

  /** Publishes `data` tagged as from `self`; the caller checks the node is started. */
  async publish(self: PeerId, topic: string, data: Uint8Array): Promise<void> {
    const tag = gossipTag(this.key, self, topic, data)
    const out = new Uint8Array(TAG_BYTES + data.length)
    out.set(tag)
    out.set(data, TAG_BYTES)
    await this.pubsub!.publish(this.prefix + topic, out)
  }

  private validator(topic: string) {
    return (_relay: Libp2pPeerId, msg: Message): TopicValidatorResult => {
      if (msg.type !== 'signed') return TopicValidatorResult.Reject
      const from = msg.from.toString()
      if (msg.data.length < TAG_BYTES || msg.data.length > MESH_LIMITS.maxGossipBytes + TAG_BYTES) return this.reject(from)
      const data = msg.data.subarray(TAG_BYTES)
      if (!proofsEqual(msg.data.subarray(0, TAG_BYTES), gossipTag(this.key, from, topic, data))) return this.reject(from)
      const handler = this.topics.get(topic)
      if (handler === undefined) return TopicValidatorResult.Ignore
      const verdict = this.topics.validate(handler, { topic, from, data }, 'gossip')
      if (verdict === 'reject') return TopicValidatorResult.Reject
      return verdict === 'accept' ? TopicValidatorResult.Accept : TopicValidatorResult.Ignore
    }
  }

  private reject(from: PeerId): TopicValidatorResult {
    this.topics.reject(from)
    return TopicValidatorResult.Reject
  }

  private onMessage(msg: Message): void {
    if (msg.type !== 'signed') return
    if (!msg.topic.startsWith(this.prefix)) return
    const topic = msg.topic.slice(this.prefix.length)
    const handler = this.topics.get(topic)
    if (handler === undefined) return
    this.topics.deliver(handler, { topic, from: msg.from.toString(), data: msg.data.subarray(TAG_BYTES) }, 'gossip')
  }
}
