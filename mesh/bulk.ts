import {
  connect as tlsConnect,
  createSecureContext,
  createServer as tlsCreateServer,
  type ConnectionOptions,
  type SecureContext,
  type Server,
  type TLSSocket
} from 'node:tls'
import { hkdfSync } from 'node:crypto'
import type { Socket } from 'node:net'
import { AbortError, InvalidArgumentError, type Logger } from '../core/index.ts'
import { BulkConn } from './bulk-conn.ts'
import { PeerGoneError } from './errors.ts'
import { MESH_LIMITS } from './limits.ts'
import { capPerAddress } from './listen-caps.ts'
import type { ByteStream, PeerId, StreamHandler } from './peernet.ts'

/**
 * The bulk channel: byte streams on their own TCP connections with TLS 1.3 in native code
 * (OpenSSL), beside libp2p. libp2p's TLS runs over a JavaScript duplex, and its JS framing
 * caps a stream at ~2 Gbit/s here; a native TLS socket per stream does not have that cost
 * (docs/PERFORMANCE.md: 0.34-0.42 of raw TCP against 0.17-0.28).
 *
 * Authentication: TLS 1.3 with an external pre-shared key, AES-128-GCM (ChaCha20-Poly1305 as
 * the alternative), in OpenSSL's default psk_dhe_ke mode, so every connection also runs an
 * ECDHE exchange and keeps forward secrecy. The pre-shared key of a pair is derived from the
 * run's auth key and the two fresh nonces of the libp2p handshake (libp2p/auth.ts), which
 * travelled inside the already-authenticated, encrypted libp2p connection: only those two
 * peers know it, so completing the TLS handshake proves the peer's identity as strongly as the
 * libp2p handshake did. The PSK identity names the client and the handshake session.
 *
 * Framing (bulk-conn.ts): each write is sent as [u32 length][bytes]; end() sends the length
 * 0xffffffff and abort() 0xfffffffe (the remote then sees StreamResetError; TLS sockets cannot
 * send a TCP RST). A connection that closes without that marker (a killed process sends a
 * plain FIN) is a PeerGoneError, never a silent short read. The first frame of a stream names
 * the protocol; the server answers one byte: 0 accepted, 1 no such protocol.
 *
 * Connections are reused: one carries one stream at a time, and once a stream has ended both
 * ways (END sent and received, no reset) the connection carries the next one. The dialer keeps
 * up to `BULK_IDLE_PER_SESSION` idle connections per peer session for `BULK_CLIENT_IDLE_MS`;
 * the listener closes a connection idle for twice that. Snapshot fragments open a stream per
 * put and fetch, and a TCP + TLS (ECDHE) handshake each was most of their cost for small states.
 * A pooled connection that turns out dead before the server accepts the stream is dropped and
 * the open goes on with the next one or a fresh dial.
 */
const CIPHERS = 'TLS_AES_128_GCM_SHA256:TLS_CHACHA20_POLY1305_SHA256'
/** Idle connections the dialer keeps per peer session. */
export const BULK_IDLE_PER_SESSION = 4
/** How long the dialer keeps an idle connection (the listener waits twice as long). */
export const BULK_CLIENT_IDLE_MS = 30_000
/** How long a new connection may take to connect and finish its TLS handshake. */
export const BULK_CONNECT_TIMEOUT_MS = 5_000

/** Derives the bulk key of a pair from the run auth key, the handshake nonces and both ids. */
export function bulkKey(authKey: Uint8Array, dialer: PeerId, listener: PeerId, nonceD: Uint8Array, nonceL: Uint8Array): Uint8Array {
  const salt = new Uint8Array(nonceD.length + nonceL.length)
  salt.set(nonceD)
  salt.set(nonceL, nonceD.length)
  return new Uint8Array(hkdfSync('sha256', authKey, salt, `zeromesh bulk v1\n${dialer}\n${listener}`, 32))
}

/** A short id for one libp2p handshake (so both sides pick the same key). */
export function bulkSessionId(nonceD: Uint8Array, nonceL: Uint8Array): string {
  return Buffer.from(nonceD.subarray(0, 8)).toString('hex') + Buffer.from(nonceL.subarray(0, 8)).toString('hex')
}

export interface BulkChannelInit {
  /** Address to listen on (the libp2p listen IP). */
  host: string
  /** Our own peer id (the PSK identity we present). */
  self: PeerId
  /** The handler for a protocol, or undefined. */
  handler: (protocol: string) => StreamHandler | undefined
  log: Logger
}

export interface BulkChannel {
  /** The TCP port peers should dial. */
  readonly port: number
  /** Records the key of a handshake session with `peer`. */
  addSession(peer: PeerId, session: string, key: Uint8Array): void
  /** Forgets a peer's sessions and resets its streams. */
  dropPeer(peer: PeerId): void
  /**
   * Opens a stream to `peer` under `session`: on a pooled connection, else on a new one dialled
   * at `to`'s host and port, or made by `to.connect` (a hole-punched TCP socket: this end is
   * the TLS client on it, the other end handed its side to `accept`).
   */
  open(peer: PeerId, to: BulkTarget, session: string, protocol: string, signal?: AbortSignal): Promise<ByteStream>
  /** Serves a connected TCP socket as if the listener had accepted it (the far end of a punch). */
  accept(socket: Socket): void
  /** Connections dialed, streams opened on a reused connection, and idle pooled connections. */
  stats(): { dials: number; reused: number; idle: number }
  /** Connections the listener holds open (handshaking or serving). */
  accepted(): number
  close(): Promise<void>
}

/** Where a new bulk connection comes from: a dial to host:port, or a socket made another way. */
export type BulkTarget = { host: string; port: number } | { connect: (signal?: AbortSignal) => Promise<Socket> }

/** The key of each handshake session, by session id. */
type Sessions = Map<string, { peer: PeerId; key: Uint8Array }>

/** Starts the bulk channel's listener. */
export async function startBulkChannel(init: BulkChannelInit): Promise<BulkChannel> {
  const sessions: Sessions = new Map()
  const conns = new ConnSet()
  let dials = 0
  let reused = 0
  const listener = await listen(
    init.host,
    sessions,
    socket => {
      const peer = (socket as TLSSocket & { zmPeer?: string }).zmPeer
      if (peer === undefined) {
        socket.destroy()
        return
      }
      socket.setNoDelay(true)
      socket.on('timeout', () => socket.end())
      serve(conns.track(new BulkConn(socket, peer, undefined)), init)
    },
    init.log
  )
  const port = (listener.server.address() as { port: number }).port
  // One client context for every dial: building one per connection (what tls.connect does
  // without it) cost more CPU than the handshake when snapshots open a stream per fragment.
  const clientContext = createSecureContext({ ciphers: CIPHERS, minVersion: 'TLSv1.3' })

  return {
    port,
    addSession(peer, session, key) {
      sessions.set(session, { peer, key })
    },
    dropPeer(peer) {
      for (const [id, e] of sessions) if (e.peer === peer) sessions.delete(id)
      conns.peerGone(peer)
    },
    accept(socket) {
      socket.setNoDelay(true)
      listener.server.emit('connection', socket)
    },
    async open(peer, to, session, protocol, signal) {
      const entry = sessions.get(session)
      if (entry === undefined || entry.peer !== peer) throw new InvalidArgumentError(`no bulk session ${session} with ${peer}`)
      if (signal?.aborted === true) throw new AbortError('open aborted')
      for (;;) {
        const pooled = conns.takeIdle(session)
        const conn = pooled ?? (await dial(clientContext, { self: init.self, peer, to, session, key: entry.key }, conns, signal))
        if (pooled === undefined) dials++
        conn.socket.setTimeout(0)
        try {
          const s = await conn.request(protocol, signal)
          if (pooled !== undefined) reused++
          conn.onReusable = () => conns.putIdle(session, conn, sessions.has(session))
          return s
        } catch (err) {
          conn.socket.destroy()
          if (aborted(signal)) throw new AbortError('open aborted')
          // A pooled connection the listener had already closed: try the next one.
          if (pooled !== undefined && err instanceof PeerGoneError) continue
          throw err
        }
      }
    },
    stats() {
      return { dials, reused, idle: conns.idleCount() }
    },
    accepted: () => listener.open(),
    async close() {
      conns.closeAll(new PeerGoneError('the bulk channel closed'))
      await new Promise<void>(resolve => listener.server.close(() => resolve()))
    }
  }
}

/**
 * Every open connection of a channel (both directions), and the dialer's idle ones per
 * session, newest last (at most BULK_IDLE_PER_SESSION each).
 */
class ConnSet {
  private readonly all = new Set<BulkConn>()
  private readonly idle = new Map<string, BulkConn[]>()

  track(c: BulkConn): BulkConn {
    this.all.add(c)
    c.onClose = () => {
      this.all.delete(c)
      if (c.session !== undefined) this.unpool(c.session, c)
    }
    return c
  }

  /** The newest idle connection of `session`, taken out of the pool. */
  takeIdle(session: string): BulkConn | undefined {
    return this.unpool(session)
  }

  /** Pools a connection whose stream ended, or closes it (pool full, or session gone). */
  putIdle(session: string, conn: BulkConn, sessionLive: boolean): void {
    const list = this.idle.get(session) ?? []
    if (list.length >= BULK_IDLE_PER_SESSION || !sessionLive) {
      conn.socket.end()
      return
    }
    list.push(conn)
    this.idle.set(session, list)
    conn.socket.setTimeout(BULK_CLIENT_IDLE_MS)
  }

  idleCount(): number {
    let n = 0
    for (const list of this.idle.values()) n += list.length
    return n
  }

  /** Fails every connection to `peer`. */
  peerGone(peer: PeerId): void {
    for (const c of this.all) if (c.remote === peer) c.gone()
  }

  closeAll(err: Error): void {
    for (const c of this.all) c.shut(err)
    this.idle.clear()
  }

  /** Removes `c` (default: the newest) from the session's idle connections and returns it. */
  private unpool(session: string, c?: BulkConn): BulkConn | undefined {
    const list = this.idle.get(session)
    if (list === undefined) return undefined
    const i = c === undefined ? list.length - 1 : list.indexOf(c)
    const taken = i >= 0 ? list.splice(i, 1)[0] : undefined
    if (list.length === 0) this.idle.delete(session)
    return taken
  }
}

/**
 * The TLS-PSK listener: a client's PSK identity "<peer id> <session>" must name a known
 * session of that peer; `onSocket` gets each connection that completed the handshake.
 */
async function listen(host: string, sessions: Sessions, onSocket: (socket: TLSSocket) => void, log: Logger): Promise<{ server: Server; open: () => number }> {
  const L = MESH_LIMITS.bulkListener
  const server: Server = tlsCreateServer(
    {
      ciphers: CIPHERS,
      minVersion: 'TLSv1.3',
      allowHalfOpen: true,
      handshakeTimeout: L.handshakeTimeoutMs,
      pskCallback: (socket, identity) => {
        // identity = "<client peer id> <session>"
        const [peer, session] = identity.split(' ')
        const entry = sessions.get(session ?? '')
        if (entry === undefined || entry.peer !== peer) return null
        ;(socket as TLSSocket & { zmPeer?: string }).zmPeer = peer
        return Buffer.from(entry.key)
      }
    },
    onSocket
  )
  server.maxConnections = L.maxConnections
  // Per remote address: open connections (raw TCP, counted until they close).
  const open = capPerAddress(server, L.maxPerAddress, (ip, n) => log.debug({ ip, open: n }, 'bulk connection refused: too many from this address'))
  // A handshake that failed or ran out of time: the socket goes at once (with allowHalfOpen a
  // peer's FIN would otherwise leave it half open, and its descriptor held, indefinitely).
  server.on('tlsClientError', (err, socket) => {
    log.debug({ err: err.message }, 'bulk TLS handshake refused')
    socket.destroy()
  })
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject)
    server.listen(0, host, () => {
      server.off('error', reject)
      resolve()
    })
  })
  return { server, open }
}

/** Listener side: wait for the next stream's protocol name on `conn`, then serve it. */
function serve(conn: BulkConn, init: Pick<BulkChannelInit, 'handler' | 'log'>): void {
  // An idle connection is closed after twice the dialer's idle time, so the dialer, which
  // closes first, normally never picks a connection the listener is closing.
  conn.socket.setTimeout(2 * BULK_CLIENT_IDLE_MS)
  void conn.nextName().then(
    name => {
      if (name === undefined) return
      conn.socket.setTimeout(0)
      const protocol = Buffer.from(name).toString()
      const handler = init.handler(protocol)
      if (handler === undefined) {
        conn.socket.end(Uint8Array.of(1))
        return
      }
      const s = conn.begin(protocol)
      conn.onReusable = () => serve(conn, init)
      conn.socket.write(Uint8Array.of(0))
      Promise.resolve()
        .then(() => handler(s))
        .catch(err => {
          init.log.debug({ peer: conn.remote, protocol, err: String(err) }, 'bulk stream handler failed')
          s.abort(err instanceof Error ? err : new Error(String(err)))
        })
    },
    () => conn.socket.destroy()
  )
}

/** Dials a new connection to `to.peer`, completes its TLS-PSK handshake and tracks it in `conns`. */
async function dial(
  context: SecureContext,
  to: { self: PeerId; peer: PeerId; to: BulkTarget; session: string; key: Uint8Array },
  conns: ConnSet,
  signal?: AbortSignal
): Promise<BulkConn> {
  const { peer, session, key } = to
  const where: ConnectionOptions = 'connect' in to.to ? { socket: await to.to.connect(signal) } : { host: to.to.host, port: to.to.port }
  const socket = tlsConnect({
    ...where,
    secureContext: context,
    allowHalfOpen: true,
    checkServerIdentity: () => undefined,
    pskCallback: () => ({ psk: Buffer.from(key), identity: `${to.self} ${session}` })
  } as ConnectionOptions & { allowHalfOpen: boolean })
  socket.setNoDelay(true)
  socket.setTimeout(BULK_CONNECT_TIMEOUT_MS)
  const onAbort = (): void => {
    socket.destroy(new AbortError('open aborted'))
  }
  signal?.addEventListener('abort', onAbort, { once: true })
  try {
    await new Promise<void>((resolve, reject) => {
      socket.once('secureConnect', () => resolve())
      socket.once('error', err => reject(new PeerGoneError(`bulk handshake with ${peer} failed: ${err.message}`, { peer })))
      socket.once('close', () => reject(new PeerGoneError(`bulk connection to ${peer} closed during the handshake`, { peer })))
      socket.once('timeout', () => reject(new PeerGoneError(`bulk connection to ${peer} timed out after ${BULK_CONNECT_TIMEOUT_MS} ms`, { peer })))
    })
  } catch (err) {
    socket.destroy()
    if (aborted(signal)) throw new AbortError('open aborted')
    throw err
  } finally {
    signal?.removeEventListener('abort', onAbort)
  }
  socket.setTimeout(0)
  socket.on('timeout', () => socket.end())
  return conns.track(new BulkConn(socket, peer, session))
}

function aborted(signal?: AbortSignal): boolean {
  return signal?.aborted === true
}
