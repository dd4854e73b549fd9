import type { Logger } from '../../core/index.ts'
import { MESH_LIMITS } from '../limits.ts'
import { MessageReader, writeMessage } from '../lp.ts'
import type { ByteStream, PeerId } from '../peernet.ts'
import { describe } from './errors.ts'
import type { TopicTable } from './topics.ts'

/**
 * The stream protocol of direct messages (PeerNet.send). Names starting with '__' are
 * reserved, so no user handler can take it.
 */
export const DIRECT_PROTOCOL = '__direct'

/**
 * Direct messages: one long-lived stream per peer and direction, each message a
 * length-prefixed topic then a length-prefixed body (lp.ts), each at most maxGossipBytes.
 * The receiver validates and delivers them like gossip from the stream's peer.
 */
export class DirectMessages {
  private readonly topics: TopicTable
  private readonly open: (peer: PeerId) => Promise<ByteStream>
  private readonly log: Logger
  private readonly out = new Map<PeerId, { stream: Promise<ByteStream>; busy: boolean }>()

  /** `open` opens a DIRECT_PROTOCOL stream to a peer. */
  constructor(init: { topics: TopicTable; open: (peer: PeerId) => Promise<ByteStream>; log: Logger }) {
    this.topics = init.topics
    this.open = init.open
    this.log = init.log
  }

  /** The DIRECT_PROTOCOL stream handler: reads messages until the stream ends. */
  readonly receive = async (stream: ByteStream): Promise<void> => {
    const reader = new MessageReader(stream, MESH_LIMITS.maxGossipBytes)
    for (;;) {
      const topicBytes = await reader.next()
      if (topicBytes === undefined) return
      const data = await reader.next()
      if (data === undefined) return
      const topic = new TextDecoder().decode(topicBytes)
      const handler = topic.startsWith('__') ? undefined : this.topics.get(topic)
      if (handler === undefined) continue
      const msg = { topic, from: stream.remote, data }
      if (this.topics.validate(handler, msg, 'direct message') !== 'accept') continue
      this.topics.deliver(handler, msg, 'direct message')
    }
  }

  /**
   * Sends one message to an authenticated peer. Datagram semantics: a message that would
   * queue behind a blocked one is dropped, and a failed stream loses its message (logged at
   * debug) and is replaced on the next send.
   */
  async send(peer: PeerId, topic: string, data: Uint8Array): Promise<void> {
    let out = this.out.get(peer)
    if (out === undefined) {
      const stream = this.open(peer)
      out = { stream, busy: false }
      this.out.set(peer, out)
      stream.catch(() => {
        if (this.out.get(peer)?.stream === stream) this.out.delete(peer)
      })
    }
    if (out.busy) return
    const entry = out
    entry.busy = true
    try {
      const s = await entry.stream
      await writeMessage(s, new TextEncoder().encode(topic))
      await writeMessage(s, data)
    } catch (err) {
      this.log.debug({ peer, topic, err: describe(err) }, 'direct message lost')
      if (this.out.get(peer) === entry) this.out.delete(peer)
      void entry.stream.then(
        s => s.abort(),
        () => {}
      )
    } finally {
      entry.busy = false
    }
  }

  /** Forgets the outbound stream to a peer that went away. */
  drop(peer: PeerId): void {
    this.out.delete(peer)
  }

  /** Forgets every outbound stream (the PeerNet stopped; its streams were aborted). */
  clear(): void {
    this.out.clear()
  }
}
