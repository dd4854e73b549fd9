import type { AbortError } from '../core/index.ts'

/**
 * PeerNet: the only way protocol code (membership, collectives, snapshots, the trainer) reaches
 * other peers. Implementations: `createLibp2pPeerNet` (real), the in-memory hub in
 * `memory-net.ts` (tests), and SimNet in sim/ (virtual time). All of them pass the compliance
 * suite in test/mesh/peernet-compliance.ts.
 */

/** A peer's stable identity (a libp2p peer id string, or any unique name in memory/sim). */
export type PeerId = string

/** Placement labels used for tiers and fragment placement. */
export interface PeerLabels {
  /** Failure/bandwidth domain: same host, rack or site. */
  zone: string
  /** Machine name: two peers with the same host share fate. */
  host: string
  /** false: this node never takes a rank (it holds snapshot fragments only); absent or true: it may train. */
  trains?: boolean
}

export interface PeerInfo {
  id: PeerId
  labels: PeerLabels
}

/** What a gossip validator decides: deliver; drop and penalise the sender; drop quietly. */
export type GossipVerdict = 'accept' | 'reject' | 'ignore'

export interface GossipMessage {
  topic: string
  /** The peer that published the message (not the relay). */
  from: PeerId
  data: Uint8Array
}

export interface GossipHandler {
  /** Runs before delivery; 'reject' counts against the sender. Default: accept. */
  validate?: (msg: GossipMessage) => GossipVerdict
  /** Receives accepted messages (never the node's own). */
  deliver: (msg: GossipMessage) => void
}

/**
 * A bidirectional byte stream to one peer for one protocol. Reading: iterate it; iteration
 * ends when the remote calls end(), and throws PeerGoneError / StreamResetError if the peer
 * dies or resets. Writing applies backpressure: write() resolves once the stream has room.
 */
export interface ByteStream extends AsyncIterable<Uint8Array> {
  readonly remote: PeerId
  readonly protocol: string
  /**
   * Queues `chunk` (at most MESH_LIMITS.maxStreamChunkBytes); resolves when the bytes still
   * queued are under the stream's write cap. Rejects with {@link AbortError} on `signal`,
   * PeerGoneError / StreamResetError if the remote goes away. The caller must not mutate
   * `chunk` afterwards.
   */
  write(chunk: Uint8Array, options?: { signal?: AbortSignal }): Promise<void>
  /**
   * Optional, on streams that hand bytes to the kernel rather than to a reader (the bulk
   * channel): writes `parts` back to back as if joined (at most maxStreamChunkBytes in all)
   * without copying them, resolving like write(); `onReleased` runs once the stream holds no
   * reference to any part (sent, or dropped because the stream failed), after which the caller
   * may reuse them. Streams that pass chunks to their reader by reference (in memory,
   * simulated) do not have it: a caller joins the parts and uses write().
   */
  writev?(parts: readonly Uint8Array[], options?: { signal?: AbortSignal; onReleased?: () => void }): Promise<void>
  /** Closes the writing side; the remote's iteration ends after the queued bytes. */
  end(options?: { signal?: AbortSignal }): Promise<void>
  /** Resets both directions now; the remote sees StreamResetError. Idempotent. */
  abort(reason?: Error): void
}

export type StreamHandler = (stream: ByteStream) => void | Promise<void>

export interface PeerNetEvents {
  'peer:connect': PeerInfo
  'peer:disconnect': PeerId
}

export interface PeerNet {
  /** This node. */
  readonly self: PeerInfo
  start(): Promise<void>
  stop(): Promise<void>
  /** Peers currently connected (and, on libp2p, authenticated to the run). */
  peers(): PeerInfo[]
  /** Subscribes to connect / disconnect; returns the unsubscribe function. */
  on<E extends keyof PeerNetEvents>(event: E, listener: (detail: PeerNetEvents[E]) => void): () => void
  /** Subscribes to a gossip topic; returns the unsubscribe function. One handler per topic. */
  subscribe(topic: string, handler: GossipHandler): () => void
  /** Publishes to every subscribed peer (not to self). Data over maxGossipBytes is refused. */
  publish(topic: string, data: Uint8Array): Promise<void>
  /**
   * Sends one small message straight to `peer`, where the topic's handler validates and
   * delivers it exactly like gossip; nobody else sees it. Best effort, like gossip: it may be
   * lost (peer gone, link cut, the peer not subscribed) without an error. Data over
   * maxGossipBytes is refused; sending to oneself is a no-op.
   */
  send(peer: PeerId, topic: string, data: Uint8Array): Promise<void>
  /** Accepts inbound streams for `protocol`. One handler per protocol. */
  handle(protocol: string, handler: StreamHandler): void
  unhandle(protocol: string): void
  /** Opens a stream; rejects with PeerGoneError, ProtocolNotSupportedError or AbortError. */
  open(peer: PeerId, protocol: string, options?: { signal?: AbortSignal }): Promise<ByteStream>
  /** Gossip messages from `peer` that validators rejected (feeds scoring and tests). */
  rejectedFrom(peer: PeerId): number
  /** How this node is reached and reaches each peer (libp2p only; absent in memory). */
  connectivity?(): Connectivity
}

/**
 * Reachability and paths (mesh/libp2p/reach.ts, relays.ts, bulk-routes.ts). `reach`: 'public'
 * (a peer reached us at our own address), 'nat' (a peer saw us come
 * from an address not ours: `externalIp`), 'unknown' (no evidence yet).
 */
export interface Connectivity {
  reach: 'public' | 'nat' | 'unknown'
  /** Our NAT's address as a peer (`seenBy`) saw it. */
  externalIp?: string
  seenBy?: PeerId
  /** Our own address, where a peer saw us (no NAT between). */
  reachedAt?: string
  /** Bulk-channel hole punches that worked and that failed (both roles). */
  punches: { ok: number; failed: number }
  /** Relays we hold a reservation on. */
  relays: PeerId[]
  /** Reservations we serve as a relay. */
  relayServing: number
  /**
   * Each connected peer: `link` is 'relayed' when every connection to it runs through a relay;
   * `bulk` is how bulk streams reach it ('direct', 'punched', 'libp2p' after a failed punch,
   * 'none' without a bulk channel).
   */
  peers: Array<{ id: PeerId; link: 'direct' | 'relayed'; bulk: 'direct' | 'punched' | 'libp2p' | 'none' }>
}

export type { AbortError }
