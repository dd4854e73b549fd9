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
  /** Our side of the handshake on `conn` (read when it starts). */
  handshake: (conn: Connection) => HandshakeInit
  /** Whether the peer of `conn` has another connection open. */
  otherConnections: (conn: Connection) => boolean
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
  /** Callers of {@link settled} waiting for a peer's handshake to end, by peer. */
  private readonly waiting = new Map<PeerId, Set<(admitted: boolean) => void>>()

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

  /**
   * Resolves true once `peer` is admitted, false when it is refused or `ms` passes first (a
   * relay asks before it serves a reservation, which may arrive before the handshake ended).
   */
  settled(peer: PeerId, ms: number): Promise<boolean> {
    if (this.authed.has(peer)) return Promise.resolve(true)
    if (this.isDenied(peer)) return Promise.resolve(false)
    return new Promise(resolve => {
      const set = this.waiting.get(peer) ?? new Set()
      if (!this.waiting.has(peer)) remember(this.waiting, peer, set)
      const done = (admitted: boolean): void => {
        this.init.clock.clearTimeout(timer)
        set.delete(done)
        if (set.size === 0 && this.waiting.get(peer) === set) this.waiting.delete(peer)
        resolve(admitted)
      }
      const timer = this.init.clock.setTimeout(() => done(false), ms)
      set.add(done)
    })
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
      this.authenticateOutbound(conn).catch(err => this.failed(conn, describe(err)))
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
    const hs = this.init.handshake(conn)
    authenticateAsListener(s, hs, signal).then(
      result => {
        this.init.onHandshake(conn, result, remote, hs.self)
        this.admit(conn.remotePeer, result.labels)
      },
      err => this.failed(conn, err instanceof AuthenticationError ? err.message : describe(err))
    )
  }

  /** Dialer side of the handshake, on a connection we opened. */
  private async authenticateOutbound(conn: Connection): Promise<void> {
    const signal = this.deadline()
    const raw = await conn.newStream(AUTH_PROTOCOL, { signal, runOnLimitedConnection: true })
    const remote = conn.remotePeer.toString()
    const hs = this.init.handshake(conn)
    const result = await authenticateAsDialer(new Libp2pByteStream(raw, remote, AUTH_PROTOCOL), hs, signal)
    this.init.onHandshake(conn, result, hs.self, remote)
    this.admit(conn.remotePeer, result.labels)
  }

  /**
   * A handshake on `conn` failed. If that connection went away meanwhile while the peer has
   * another one open (libp2p or a service closed a second connection of the pair), that says
   * nothing about the peer: it is not refused. A peer that hangs up its only connection is.
   */
  private failed(conn: Connection, why: string): void {
    if (conn.status !== 'open' && this.init.otherConnections(conn)) {
      this.init.log.debug({ peer: conn.remotePeer.toString(), why }, 'a second connection closed during the run handshake')
      return
    }
    this.refuse(conn.remotePeer, why)
  }

  private refuse(peer: Libp2pPeerId, why: string): void {
    const id = peer.toString()
    if (this.authed.has(id)) return
    this.init.log.debug({ peer: id, why }, 'peer failed run authentication; disconnecting')
    remember(this.denied, id, this.init.clock.monotonic() + this.init.denyMs)
    this.wake(id, false)
    void this.init.hangUp(peer).catch(() => {})
  }

  private admit(peer: Libp2pPeerId, labels: PeerLabels): void {
    const id = peer.toString()
    if (this.authed.has(id)) return
    this.authed.set(id, labels)
    this.init.log.debug({ peer: id, labels }, 'peer authenticated')
    this.wake(id, true)
    this.init.onAdmit({ id, labels })
  }

  private wake(peer: PeerId, admitted: boolean): void {
    for (const f of [...(this.waiting.get(peer) ?? [])]) f(admitted)
  }

  /** An AbortSignal that fires after authTimeoutMs of the injected clock. */
  private deadline(): AbortSignal {
    const ac = new AbortController()
    this.init.clock.setTimeout(() => ac.abort(new AuthenticationError('authentication timed out')), this.init.authTimeoutMs)
    return ac.signal
  }
}
