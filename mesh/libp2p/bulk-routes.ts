import type { Socket } from 'node:net'
import type { Connection } from '@libp2p/interface'
import { AbortError, settleOnAbort, type Clock, type Logger } from '../../core/index.ts'
import { bulkKey, bulkSessionId, startBulkChannel, type BulkChannel, type BulkTarget } from '../bulk.ts'
import { MESH_LIMITS } from '../limits.ts'
import type { ByteStream, PeerId, StreamHandler } from '../peernet.ts'
import type { HandshakeResult } from './auth.ts'
import { describe } from './errors.ts'
import { ipOf, isWildcard, onLink } from './reach.ts'

/**
 * How bulk bytes reach a peer:
 * - `direct`: its bulk channel at the IP its connection came from (that IP is the one it
 *   listens on, or it listens on every address);
 * - `punched`: it is behind a NAT (the IP we see is not the one it listens on) or we reach it
 *   only through a relay: each new bulk connection is a TCP hole punch signalled over the
 *   libp2p connection (punch-signal.ts);
 * - `libp2p`: the last punch failed (a NAT that maps ports unpredictably): streams ride the
 *   libp2p connection, relayed or not, until a later punch succeeds (MESH_LIMITS.punch.backoffMs);
 * - `none`: no bulk channel on one side.
 */
export type BulkPath = 'direct' | 'punched' | 'libp2p' | 'none'

interface Route {
  session: string
  /** Where to dial; undefined: punch. */
  addr: { host: string; port: number } | undefined
  /** Monotonic ms before which no punch is tried (after a failure). */
  noPunchUntil: number
  /** A punch to this peer worked (or a direct dial did). */
  worked: boolean
  /** Punches that failed in a row. */
  failures: number
  /** `addr` is the peer's LAN address, guessed from its listener being on one of our subnets. */
  lan: boolean
}

/**
 * The bulk channel of a libp2p PeerNet and how to reach each peer's: the port and host a peer
 * offered in its handshake, the IP of the connection that handshake ran on, and the session
 * whose nonces key the pair's TLS-PSK (bulk.ts).
 */
export class BulkRoutes {
  private readonly authKey: Uint8Array
  private readonly log: Logger
  private readonly clock: Clock
  private readonly allow: (protocol: string) => boolean
  private readonly punch: (peer: PeerId, signal?: AbortSignal) => Promise<Socket>
  private channel: BulkChannel | undefined
  private host = '127.0.0.1'
  private readonly routes = new Map<PeerId, Route>()

  /**
   * `authKey` is the run's auth key; `allow` picks the protocols that may use the channel;
   * `punch` makes a hole-punched socket to a peer; `log` takes the fallbacks to libp2p streams.
   */
  constructor(init: {
    authKey: Uint8Array
    log: Logger
    clock: Clock
    punch: (peer: PeerId, signal?: AbortSignal) => Promise<Socket>
    allow?: (protocol: string) => boolean
  }) {
    this.authKey = init.authKey
    this.log = init.log
    this.clock = init.clock
    this.punch = init.punch
    this.allow = init.allow ?? (() => true)
  }

  /** The port our channel listens on, offered in every handshake; undefined without one. */
  get port(): number | undefined {
    return this.channel?.port
  }

  /** The IP our channel listens on. */
  get listenHost(): string {
    return this.host
  }

  /** Starts the channel's listener on `host`, serving the handlers `handler` returns. */
  async start(init: { host: string; self: PeerId; handler: (protocol: string) => StreamHandler | undefined; log: Logger }): Promise<void> {
    this.host = init.host
    this.channel = await startBulkChannel(init)
  }

  /** Serves the responder's end of a punch. */
  accept(socket: Socket): void {
    if (this.channel === undefined) socket.destroy()
    else this.channel.accept(socket)
  }

  /** Records a peer's route and session key after a handshake on `conn`. */
  learn(conn: Connection, result: HandshakeResult, dialer: PeerId, listener: PeerId): void {
    if (this.channel === undefined || result.bulkPort === undefined) return
    const peer = conn.remotePeer.toString()
    const session = bulkSessionId(result.nonceD, result.nonceL)
    this.channel.addSession(peer, session, bulkKey(this.authKey, dialer, listener, result.nonceD, result.nonceL))
    if (this.routes.has(peer)) return
    const ip = ipOf(conn)
    const claimed = result.bulkHost
    const direct = ip !== undefined && (claimed === undefined || claimed === ip || isWildcard(claimed))
    // A peer reached through a relay whose listener sits on one of our subnets is on our LAN
    // (two nodes of one home): dial it there. A TCP hole punch cannot connect two hosts of one
    // LAN: nothing drops the early SYN, the other end answers it with a reset, and the two
    // connect() calls never overlap. If the address is another LAN's that happens to use the
    // same subnet, the dial fails and the route turns to punching (open()).
    const lan = !direct && claimed !== undefined && !isWildcard(claimed) && onLink(claimed)
    const addr = direct ? { host: ip, port: result.bulkPort } : lan ? { host: claimed, port: result.bulkPort } : undefined
    this.routes.set(peer, { session, addr, noPunchUntil: 0, worked: false, failures: 0, lan })
  }

  /** How bulk bytes reach `peer` now. */
  path(peer: PeerId): BulkPath {
    const r = this.routes.get(peer)
    if (r === undefined || this.channel === undefined) return 'none'
    if (r.addr !== undefined) return 'direct'
    return r.noPunchUntil > this.clock.monotonic() ? 'libp2p' : 'punched'
  }

  /**
   * Opens a stream on the bulk channel; undefined where there is no route or the channel
   * failed in a way a libp2p stream may not (the caller falls back to one).
   */
  async open(peer: PeerId, protocol: string, signal?: AbortSignal): Promise<ByteStream | undefined> {
    const r = this.allow(protocol) ? this.routes.get(peer) : undefined
    if (this.channel === undefined || r === undefined) return undefined
    const punched = r.addr === undefined
    if (punched && r.noPunchUntil > this.clock.monotonic()) return undefined
    const to: BulkTarget = r.addr ?? { connect: s => this.punch(peer, s) }
    try {
      const s = await settleOnAbort(signal, this.channel.open(peer, to, r.session, protocol, signal), st => st.abort(new AbortError('open abandoned')))
      r.worked = true
      if (punched) r.failures = 0
      return s
    } catch (err) {
      const name = (err as Error).name
      if (name === 'ProtocolNotSupportedError' || name === 'AbortError') throw err
      if (punched && (err as { details?: { busy?: boolean } }).details?.busy === true) {
        this.log.debug({ peer, protocol }, 'the peer is busy with other punches; this stream uses libp2p')
      } else if (punched) {
        const P = MESH_LIMITS.punch
        const wait = Math.min(P.maxBackoffMs, P.backoffMs * 2 ** Math.min(r.failures, 16))
        r.failures++
        r.noPunchUntil = this.clock.monotonic() + wait
        this.log.info({ peer, err: describe(err) }, `hole punch failed; bulk streams to this peer ride libp2p for ${wait / 1000} s`)
      } else if (!r.worked && (r.lan || /ECONNREFUSED|EHOSTUNREACH|ENETUNREACH|ETIMEDOUT|timed out/.test(describe(err)))) {
        // The address its handshake came from does not take connections, or the LAN address we
        // guessed never took one of ours (it may be another host of a LAN on the same subnet):
        // punch from now on.
        r.addr = undefined
        this.log.info({ peer, err: describe(err) }, 'bulk channel not reachable directly; hole punching from now on')
      } else {
        this.log.debug({ peer, protocol, err: describe(err) }, 'bulk channel unavailable; using a libp2p stream')
      }
      return undefined
    }
  }

  /** Forgets a peer that went away and resets its bulk streams. */
  dropPeer(peer: PeerId): void {
    this.channel?.dropPeer(peer)
    this.routes.delete(peer)
  }

  /** Forgets every route and closes the channel. */
  async close(): Promise<void> {
    this.routes.clear()
    await this.channel?.close()
    this.channel = undefined
  }
}
