import { CODEC_LIMITS } from '../codec/index.ts'

/** Caps and defaults of mesh/. Listed with their tests in docs/LIMITS.md. */
export const MESH_LIMITS = Object.freeze({
  /** Largest gossip message (bytes of data, before any framing); js gossipsub refuses > 4 MB. */
  maxGossipBytes: CODEC_LIMITS.maxEnvelopeBytes,
  /**
   * Bytes a stream accepts from its writer before write() waits: libp2p's own send() kept
   * returning true while gigabytes queued, so we cap the queue ourselves.
   */
  maxStreamWriteBufferBytes: 8 * 1024 * 1024,
  /** Largest single write() (bytes); bigger buffers are split by the caller. */
  maxStreamChunkBytes: 8 * 1024 * 1024,
  /** Bytes an in-memory stream buffers for a reader that is not reading. */
  maxStreamReadBufferBytes: 8 * 1024 * 1024,
  /** Longest protocol or topic name. */
  maxNameBytes: 256,
  /** Peers remembered in per-peer bookkeeping of strangers (refused peers, rejection counts); the oldest entry goes first. */
  maxTrackedPeers: 10_000,
  /**
   * Peers whose announced addresses a node remembers, to dial them again when the connection is
   * lost (a partition that heals: gossip cannot carry announcements across it); the peer heard
   * from longest ago goes first.
   */
  maxRememberedPeers: 1024,
  /** Remembered peers dialled again per announcement period (the rest wait for later periods). */
  redialsPerPeriod: 8,
  /** The longest wait between two redials of one unreachable peer (ms); it doubles from the announcement period. */
  maxRedialBackoffMs: 10_000,
  /**
   * The longest wait between two address announcements of a node while its mesh does not
   * change (ms); the wait doubles from the announcement period (mesh/libp2p/announce.ts).
   */
  maxAnnounceIntervalMs: 30_000,
  /**
   * Circuit Relay v2, as a relay serves it to members of its run (the protocol's defaults,
   * 128 KiB and 2 minutes a relayed connection, would cut a training run's control channel
   * within a step or two). A relayed connection is reset when either limit is reached; the
   * announcer dials the peer again through a relay.
   */
  relay: Object.freeze({
    /** Reservations one relay holds at once (one per private member). */
    maxReservations: 64,
    /** How long a reservation lasts before the member refreshes it (ms). */
    reservationTtlMs: 60 * 60_000,
    /** Bytes one relayed connection may carry, both directions together. */
    dataLimitBytes: 256n * 2n ** 30n,
    /** How long one relayed connection may stay open (ms). */
    durationLimitMs: 6 * 60 * 60_000,
    /** A hop request (reserve or connect) must complete within this (ms). */
    hopTimeoutMs: 30_000,
    /** Relays a private member reserves a slot on. */
    perMember: 2,
    /** How long a relay that refused a reservation (or could not be reached) is left alone (ms). */
    retryMs: 30_000,
    /** How long a reservation request waits for its sender to finish the run handshake (ms). */
    admissionWaitMs: 10_000
  }),
  /**
   * TCP hole punching of the bulk channel (punch.ts): a simultaneous open from both ends,
   * signalled over the libp2p connection (relayed or not).
   */
  punch: Object.freeze({
    /** The connect loop of one attempt (ms). */
    deadlineMs: 8_000,
    /** What signalling may add to it: the offer and answer over a libp2p connection, a relayed one included (ms). */
    signalMs: 4_000,
    /** One connect() before it is abandoned and tried again (ms). */
    attemptMs: 1_500,
    /** Wait between two connect() calls of one attempt (ms). */
    retryMs: 200,
    /**
     * After a failed attempt, streams to that peer use libp2p for this long before the next try
     * (ms); it doubles with each failure in a row up to maxBackoffMs (an attempt that fails holds
     * the open that asked for it up to deadlineMs + signalMs).
     */
    backoffMs: 60_000,
    maxBackoffMs: 30 * 60_000,
    /**
     * Punch requests one peer may have in flight to us at once (a snapshot placement and a
     * collective open several streams to one peer together); past it the request is refused as
     * busy and that stream rides libp2p, with no backoff.
     */
    maxInFlightPerPeer: 16
  }),
  /**
   * Inbound libp2p connections before they are upgraded (encrypted and multiplexed): anyone
   * who reaches the port can open them. libp2p's defaults (10 pending in total, 10 s to
   * upgrade) let ten stalled connections from one address refuse every other inbound one, a
   * correct joiner's too, for 10 s at a time. Each host opens at most `perHostPerSecond`, so
   * one host holds at most perHostPerSecond x upgradeTimeoutMs / 1000 pending slots.
   */
  libp2pInbound: Object.freeze({
    /** Inbound connections being upgraded at once, from every host together. */
    maxPending: 256,
    /** Time an inbound connection has to finish its upgrade (ms). */
    upgradeTimeoutMs: 5_000,
    /** New inbound connections one host may open per second (libp2p's rate limiter). */
    perHostPerSecond: 5
  }),
  /**
   * A dial of nothing but private addresses off this host's networks (mesh/libp2p/announce.ts):
   * it gives up after this long (ms), and a later dial of the same peer cancels it. A LAN or a
   * VPN answers in milliseconds; another LAN's range usually never does.
   */
  tentativeDialMs: 2_000,
  /**
   * The bulk channel's TLS listener (mesh/bulk.ts), which anyone who reaches its port can
   * connect to: connections are capped in total and per remote address, and one that has not
   * finished its TLS-PSK handshake in time (or fails it) is destroyed at once, so descriptors
   * an outsider opens are given back within the deadline.
   */
  bulkListener: Object.freeze({
    /** Open connections at once; more are closed on arrival. */
    maxConnections: 4096,
    /** Open connections from one remote address (the nodes of a home share their NAT's). */
    maxPerAddress: 512,
    /** Time from accept to a finished TLS handshake (ms). */
    handshakeTimeoutMs: 5_000
  })
})
