import { TopicValidatorResult, type GossipSub, type Message } from '@libp2p/gossipsub'
import type { PeerId as Libp2pPeerId } from '@libp2p/interface'
import { MESH_LIMITS } from '../limits.ts'
import type { GossipHandler, PeerId } from '../peernet.ts'
import { GOSSIP_SEAL_BYTES, gossipTopicName, openGossip, sealGossip } from './auth.ts'
import type { TopicTable } from './topics.ts'

/**
 * Gossip on gossipsub, readable by the run's members only. A topic `t` is the gossipsub topic
 * gossipTopicName(key, t) (a keyed hash: neither the run id nor the topic is on the wire), and
 * every message is sealed with the run's gossip key (sealGossip: AES-256-GCM bound to the
 * publisher and the topic) and signed by gossipsub. A peer that connected without the secret
 * sees hashes and ciphertext for the seconds before the run handshake drops it. The topic
 * validator rejects unsigned messages, bad sizes and messages that do not open before the
 * handler's own validator runs.
 */
export class GossipRouter {
  private readonly key: Uint8Array
  private readonly topics: TopicTable
  private pubsub: GossipSub | undefined
  /** gossipsub topic name → our topic. */
  private readonly names = new Map<string, string>()
  /** What the validator opened, for the delivery that follows it (keyed by the message's bytes). */
  private readonly opened = new WeakMap<Uint8Array, Uint8Array>()

  /** `key` is the run's gossip key (deriveRunKeys). */
  constructor(init: { runId: string; key: Uint8Array; topics: TopicTable }) {
    this.key = init.key
    this.topics = init.topics
  }

  private full(topic: string): string {
    const name = gossipTopicName(this.key, topic)
    this.names.set(name, topic)
    return name
  }

  /** Starts using `pubsub`: messages flow to the table's handlers from here on. */
  attach(pubsub: GossipSub): void {
    this.pubsub = pubsub
    pubsub.addEventListener('message', evt => this.onMessage(evt.detail))
  }

  /** Subscribes (at once if attached, else just records the handler); returns the unsubscribe. */
  subscribe(topic: string, handler: GossipHandler): () => void {
    this.topics.set(topic, handler)
    const full = this.full(topic)
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
    await this.pubsub!.publish(this.full(topic), sealGossip(this.key, self, topic, data))
  }

  private validator(topic: string) {
    return (_relay: Libp2pPeerId, msg: Message): TopicValidatorResult => {
      if (msg.type !== 'signed') return TopicValidatorResult.Reject
      const from = msg.from.toString()
      if (msg.data.length < GOSSIP_SEAL_BYTES || msg.data.length > MESH_LIMITS.maxGossipBytes + GOSSIP_SEAL_BYTES) return this.reject(from)
      const data = openGossip(this.key, from, topic, msg.data)
      if (data === undefined) return this.reject(from)
      this.opened.set(msg.data, data)
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
    const topic = this.names.get(msg.topic)
    if (topic === undefined) return
    const handler = this.topics.get(topic)
    if (handler === undefined) return
    const from = msg.from.toString()
    const data = this.opened.get(msg.data) ?? openGossip(this.key, from, topic, msg.data)
    if (data === undefined) return
    this.topics.deliver(handler, { topic, from, data }, 'gossip')
  }
}
