import type { Connection } from '@libp2p/interface'
import { AbortError, settleOnAbort, type Logger } from '../../core/index.ts'
import { bulkKey, bulkSessionId, startBulkChannel, type BulkChannel } from '../bulk.ts'
import type { ByteStream, PeerId, StreamHandler } from '../peernet.ts'
import type { HandshakeResult } from './auth.ts'
import { describe } from './errors.ts'

/**
 * The bulk channel of a libp2p PeerNet and where to reach each peer's: the port a peer offered
 * in its handshake, the IP of the connection that handshake ran on, and the session whose
 * nonces key the pair's TLS-PSK (bulk.ts).
 */
export class BulkRoutes {
  private readonly authKey: Uint8Array
  private readonly log: Logger
  private readonly allow: (protocol: string) => boolean
  private channel: BulkChannel | undefined
  private readonly routes = new Map<PeerId, { host: string; port: number; session: string }>()

  /**
   * `authKey` is the run's auth key; `allow` picks the protocols that may use the channel;
   * `log` takes the fallbacks to libp2p streams.
   */
  constructor(init: { authKey: Uint8Array; log: Logger; allow?: (protocol: string) => boolean }) {
    this.authKey = init.authKey
    this.log = init.log
    this.allow = init.allow ?? (() => true)
  }

  /** The port our channel listens on, offered in every handshake; undefined without one. */
  get port(): number | undefined {
    return this.channel?.port
  }

  /** Starts the channel's listener on `host`, serving the handlers `handler` returns. */
  async start(init: { host: string; self: PeerId; handler: (protocol: string) => StreamHandler | undefined; log: Logger }): Promise<void> {
    this.channel = await startBulkChannel(init)
  }

  /** Records a peer's route and session key after a handshake on `conn`. */
  learn(conn: Connection, result: HandshakeResult, dialer: PeerId, listener: PeerId): void {
    const host = ipOf(conn)
    if (this.channel === undefined || result.bulkPort === undefined || host === undefined) return
    const peer = conn.remotePeer.toString()
    const session = bulkSessionId(result.nonceD, result.nonceL)
    this.channel.addSession(peer, session, bulkKey(this.authKey, dialer, listener, result.nonceD, result.nonceL))
    if (!this.routes.has(peer)) this.routes.set(peer, { host, port: result.bulkPort, session })
  }

  /**
   * Opens a stream on the bulk channel; undefined where there is no route or the channel
   * failed in a way a libp2p stream may not (the caller falls back to one).
   */
  async open(peer: PeerId, protocol: string, signal?: AbortSignal): Promise<ByteStream | undefined> {
    const via = this.allow(protocol) ? this.routes.get(peer) : undefined
    if (this.channel === undefined || via === undefined) return undefined
    try {
      return await settleOnAbort(signal, this.channel.open(peer, via.host, via.port, via.session, protocol, signal), st =>
        st.abort(new AbortError('open abandoned'))
      )
    } catch (err) {
      const name = (err as Error).name
      if (name === 'ProtocolNotSupportedError' || name === 'AbortError') throw err
      this.log.debug({ peer, protocol, err: describe(err) }, 'bulk channel unavailable; using a libp2p stream')
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

/** The IP address of a connection's remote end, if it has one. */
function ipOf(conn: Connection): string | undefined {
  return conn.remoteAddr.getComponents().find(c => c.name === 'ip4' || c.name === 'ip6')?.value
}
