import type { Connection, PeerId as Libp2pPeerId, Stream } from '@libp2p/interface'
import type { Clock, Logger } from '../../core/index.ts'
import { remember } from '../checks.ts'
import { AuthenticationError } from '../errors.ts'
import type { PeerId, PeerInfo, PeerLabels } from '../peernet.ts'
import { AUTH_PROTOCOL, authenticateAsDialer, authenticateAsListener, type HandshakeInit, type HandshakeResult } from './auth.ts'
import { describe } from './errors.ts'
import { Libp2pByteStream } from './stream-adapter.ts'

/** What admission needs from the PeerNet around it. */
export interface AdmissionInit {
  clock: Clock
  log: Logger
  /** How long a new connection may take to authenticate. */
  authTimeoutMs: number
  /** How long a peer that failed authentication is refused. */
  denyMs: number
  /** Our side of every handshake (read when a handshake starts). */
  handshake: () => HandshakeInit
  /** Closes every connection to a refused peer. */
  hangUp: (peer: Libp2pPeerId) => Promise<void>
  /** A handshake completed on `conn`; `dialer` and `listener` are the two ids in their roles. */
  onHandshake: (conn: Connection, result: HandshakeResult, dialer: PeerId, listener: PeerId) => void
  /** A peer was admitted to the run. */
  onAdmit: (peer: PeerInfo) => void
}

/**
 * Which peers belong to the run. Every new connection runs the handshake of auth.ts (the
 * dialer starts it; the listener answers on AUTH_PROTOCOL and expects it within
 * authTimeoutMs); a peer that completes it is admitted, one that fails is disconnected and
 * denied for denyMs (bounded: maxTrackedPeers).
 */
export class Admission {
  private readonly init: AdmissionInit
  private readonly authed = new Map<PeerId, PeerLabels>()
  private readonly denied = new Map<PeerId, number>()

  constructor(init: AdmissionInit) {
    this.init = init
  }

  isAdmitted(peer: PeerId): boolean {
    return this.authed.has(peer)
  }
  /** Admitted peers and their labels. */
  admitted(): IterableIterator<[PeerId, PeerLabels]> {
    return this.authed.entries()
  }
  get size(): number {
    return this.authed.size
  }
  /** Forgets a peer whose connection closed; true if it had been admitted. */
  forget(peer: PeerId): boolean {
    return this.authed.delete(peer)
  }
  clear(): void {
    this.authed.clear()
  }

  /** Whether `peer` failed authentication less than denyMs ago. */
  isDenied(peer: PeerId): boolean {
    const until = this.denied.get(peer)
    if (until === undefined) return false
    if (this.init.clock.monotonic() < until) return true
    this.denied.delete(peer)
    return false
  }

  /** The connection:open listener: runs or awaits the handshake of a new connection. */
  onConnectionOpen(conn: Connection): void {
    const peer = conn.remotePeer.toString()
    if (this.isDenied(peer)) {
      void conn.close().catch(() => {})
      return
    }
    if (this.authed.has(peer)) return
    if (conn.direction === 'outbound') {
      this.authenticateOutbound(conn).catch(err => this.refuse(conn.remotePeer, describe(err)))
    } else {
      // The dialer must prove itself in time; the handshake handler admits it.
      const ms = this.init.authTimeoutMs
      this.init.clock.setTimeout(() => {
        if (!this.authed.has(peer) && conn.status === 'open') this.refuse(conn.remotePeer, `no authentication within ${ms} ms`)
      }, ms)
    }
  }

  /** The AUTH_PROTOCOL stream handler: the listener's side of the handshake. */
  readonly handleAuthStream = (raw: Stream, conn: Connection): void => {
    const signal = this.deadline()
    const remote = conn.remotePeer.toString()
    const s = new Libp2pByteStream(raw, remote, AUTH_PROTOCOL)
    const hs = this.init.handshake()
    authenticateAsListener(s, hs, signal).then(
      result => {
        this.init.onHandshake(conn, result, remote, hs.self)
        this.admit(conn.remotePeer, result.labels)
      },
      err => this.refuse(conn.remotePeer, err instanceof AuthenticationError ? err.message : describe(err))
    )
  }

  /** Dialer side of the handshake, on a connection we opened. */
  private async authenticateOutbound(conn: Connection): Promise<void> {
    const signal = this.deadline()
    const raw = await conn.newStream(AUTH_PROTOCOL, { signal })
    const remote = conn.remotePeer.toString()
    const hs = this.init.handshake()
    const result = await authenticateAsDialer(new Libp2pByteStream(raw, remote, AUTH_PROTOCOL), hs, signal)
    this.init.onHandshake(conn, result, hs.self, remote)
    this.admit(conn.remotePeer, result.labels)
  }

  private refuse(peer: Libp2pPeerId, why: string): void {
    const id = peer.toString()
    if (this.authed.has(id)) return
    this.init.log.debug({ peer: id, why }, 'peer failed run authentication; disconnecting')
    remember(this.denied, id, this.init.clock.monotonic() + this.init.denyMs)
    void this.init.hangUp(peer).catch(() => {})
  }

  private admit(peer: Libp2pPeerId, labels: PeerLabels): void {
    const id = peer.toString()
    if (this.authed.has(id)) return
    this.authed.set(id, labels)
    this.init.log.debug({ peer: id, labels }, 'peer authenticated')
    this.init.onAdmit({ id, labels })
  }

  /** An AbortSignal that fires after authTimeoutMs of the injected clock. */
  private deadline(): AbortSignal {
    const ac = new AbortController()
    this.init.clock.setTimeout(() => ac.abort(new AuthenticationError('authentication timed out')), this.init.authTimeoutMs)
    return ac.signal
  }
}
