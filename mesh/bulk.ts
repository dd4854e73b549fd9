import { connect as tlsConnect, createSecureContext, createServer as tlsCreateServer, type ConnectionOptions, type Server, type TLSSocket } from 'node:tls'
import { hkdfSync } from 'node:crypto'
import { AbortError, InvalidArgumentError, type Logger } from '../core/index.ts'
import { ByteQueue } from './byte-queue.ts'
import { checkChunkSize } from './checks.ts'
import { PeerGoneError, ProtocolNotSupportedError, StreamResetError } from './errors.ts'
import { MESH_LIMITS } from './limits.ts'
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
 * run's auth key and the two fresh nonces of
 * the libp2p handshake, which travelled inside the already-authenticated, encrypted libp2p
 * connection: only those two peers know it, so completing the TLS handshake proves the peer's
 * identity as strongly as the libp2p handshake did. The PSK identity names the client and the
 * handshake session.
 *
 * Framing: each write is sent as [u32 length][bytes]; end() sends the length 0xffffffff and
 * abort() 0xfffffffe (the remote then sees StreamResetError; TLS sockets cannot send a TCP RST). A
 * connection that closes without that marker (a killed process sends a plain FIN) is a
 * PeerGoneError, never a silent short read. The first frame of a stream names the protocol;
 * the server answers one byte: 0 accepted, 1 no such protocol.
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
const END = 0xffffffff
const RESET = 0xfffffffe
const READ_HIGH = MESH_LIMITS.maxStreamReadBufferBytes
/** Idle connections the dialer keeps per peer session. */
export const BULK_IDLE_PER_SESSION = 4
/** How long the dialer keeps an idle connection (the listener waits twice as long). */
export const BULK_CLIENT_IDLE_MS = 30_000

/** Derives the bulk key of a pair from the run auth key, the handshake nonces and both ids. */
export function bulkKey (authKey: Uint8Array, dialer: PeerId, listener: PeerId, nonceD: Uint8Array, nonceL: Uint8Array): Uint8Array {
  const salt = new Uint8Array(nonceD.length + nonceL.length)
  salt.set(nonceD)
  salt.set(nonceL, nonceD.length)
  return new Uint8Array(hkdfSync('sha256', authKey, salt, `zeromesh bulk v1\n${dialer}\n${listener}`, 32))
}

/** A short id for one libp2p handshake (so both sides pick the same key). */
export function bulkSessionId (nonceD: Uint8Array, nonceL: Uint8Array): string {
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
  /** Opens a stream to `peer` at host:port under `session`. */
  open(peer: PeerId, host: string, port: number, session: string, protocol: string, signal?: AbortSignal): Promise<ByteStream>
  /** Connections dialed, streams opened on a reused connection, and idle pooled connections. */
  stats(): { dials: number, reused: number, idle: number }
  close(): Promise<void>
}

/** Starts the bulk channel's listener. */
export async function startBulkChannel (init: BulkChannelInit): Promise<BulkChannel> {
  const sessions = new Map<string, { peer: PeerId, key: Uint8Array }>()
  /** Every open connection, both directions. */
  const conns = new Set<BulkConn>()
  /** The dialer's idle connections per session, newest last. */
  const idle = new Map<string, BulkConn[]>()
  let dials = 0
  let reused = 0
  const track = (c: BulkConn): BulkConn => {
    conns.add(c)
    c.onClose = () => {
      conns.delete(c)
      if (c.session !== undefined) unpool(c.session, c)
    }
    return c
  }
  /** Removes `c` (default: the newest) from the session's idle connections and returns it. */
  const unpool = (session: string, c?: BulkConn): BulkConn | undefined => {
    const list = idle.get(session)
    if (list === undefined) return undefined
    const i = c === undefined ? list.length - 1 : list.indexOf(c)
    const taken = i >= 0 ? list.splice(i, 1)[0] : undefined
    if (list.length === 0) idle.delete(session)
    return taken
  }

  /** Listener side: wait for the next stream's protocol name on `conn`, then serve it. */
  const serve = (conn: BulkConn): void => {
    // An idle connection is closed after twice the dialer's idle time, so the dialer, which
    // closes first, normally never picks a connection the listener is closing.
    conn.socket.setTimeout(2 * BULK_CLIENT_IDLE_MS)
    void conn.nextName().then(name => {
      if (name === undefined) return
      conn.socket.setTimeout(0)
      const protocol = Buffer.from(name).toString()
      const handler = init.handler(protocol)
      if (handler === undefined) {
        conn.socket.end(Uint8Array.of(1))
        return
      }
      const s = conn.begin(protocol)
      conn.onReusable = () => serve(conn)
      conn.socket.write(Uint8Array.of(0))
      Promise.resolve().then(() => handler(s)).catch(err => {
        init.log.debug({ peer: conn.remote, protocol, err: String(err) }, 'bulk stream handler failed')
        s.abort(err instanceof Error ? err : new Error(String(err)))
      })
    }, () => conn.socket.destroy())
  }

  const server: Server = tlsCreateServer({
    ciphers: CIPHERS,
    minVersion: 'TLSv1.3',
    allowHalfOpen: true,
    pskCallback: (socket, identity) => {
      // identity = "<client peer id> <session>"
      const [peer, session] = identity.split(' ')
      const entry = sessions.get(session ?? '')
      if (entry === undefined || entry.peer !== peer) return null
      ;(socket as TLSSocket & { zmPeer?: string }).zmPeer = peer
      return Buffer.from(entry.key)
    }
  }, socket => {
    const peer = (socket as TLSSocket & { zmPeer?: string }).zmPeer
    if (peer === undefined) {
      socket.destroy()
      return
    }
    socket.setNoDelay(true)
    socket.on('timeout', () => socket.end())
    serve(track(new BulkConn(socket, peer, undefined)))
  })
  server.on('tlsClientError', err => init.log.debug({ err: err.message }, 'bulk TLS handshake refused'))
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject)
    server.listen(0, init.host, () => { server.off('error', reject); resolve() })
  })
  const port = (server.address() as { port: number }).port
  // One client context for every dial: building one per connection (what tls.connect does
  // without it) cost more CPU than the handshake when snapshots open a stream per fragment.
  const clientContext = createSecureContext({ ciphers: CIPHERS, minVersion: 'TLSv1.3' })

  const dial = async (peer: PeerId, host: string, port: number, session: string, key: Uint8Array, signal?: AbortSignal): Promise<BulkConn> => {
    const socket = tlsConnect({
      host,
      port,
      secureContext: clientContext,
      allowHalfOpen: true,
      checkServerIdentity: () => undefined,
      pskCallback: () => ({ psk: Buffer.from(key), identity: `${init.self} ${session}` })
    } as ConnectionOptions)
    socket.setNoDelay(true)
    const onAbort = (): void => { socket.destroy(new AbortError('open aborted')) }
    signal?.addEventListener('abort', onAbort, { once: true })
    try {
      await new Promise<void>((resolve, reject) => {
        socket.once('secureConnect', () => resolve())
        socket.once('error', err => reject(new PeerGoneError(`bulk handshake with ${peer} failed: ${err.message}`, { peer })))
        socket.once('close', () => reject(new PeerGoneError(`bulk connection to ${peer} closed during the handshake`, { peer })))
      })
    } catch (err) {
      socket.destroy()
      if (aborted(signal)) throw new AbortError('open aborted')
      throw err
    } finally {
      signal?.removeEventListener('abort', onAbort)
    }
    socket.on('timeout', () => socket.end())
    dials++
    return track(new BulkConn(socket, peer, session))
  }

  return {
    port,
    addSession (peer, session, key) {
      sessions.set(session, { peer, key })
    },
    dropPeer (peer) {
      for (const [id, e] of sessions) if (e.peer === peer) sessions.delete(id)
      for (const c of conns) if (c.remote === peer) c.gone()
    },
    async open (peer, host, port, session, protocol, signal) {
      const entry = sessions.get(session)
      if (entry === undefined || entry.peer !== peer) throw new InvalidArgumentError(`no bulk session ${session} with ${peer}`)
      if (signal?.aborted === true) throw new AbortError('open aborted')
      for (;;) {
        const pooled = unpool(session)
        const conn = pooled ?? await dial(peer, host, port, session, entry.key, signal)
        conn.socket.setTimeout(0)
        try {
          const s = await conn.request(protocol, signal)
          if (pooled !== undefined) reused++
          conn.onReusable = () => {
            const list = idle.get(session) ?? []
            if (list.length >= BULK_IDLE_PER_SESSION || !sessions.has(session)) {
              conn.socket.end()
              return
            }
            list.push(conn)
            idle.set(session, list)
            conn.socket.setTimeout(BULK_CLIENT_IDLE_MS)
          }
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
    stats () {
      let n = 0
      for (const list of idle.values()) n += list.length
      return { dials, reused, idle: n }
    },
    async close () {
      for (const c of conns) c.shut(new PeerGoneError('the bulk channel closed'))
      idle.clear()
      await new Promise<void>(resolve => server.close(() => resolve()))
    }
  }
}

function aborted (signal?: AbortSignal): boolean {
  return signal?.aborted === true
}

function marker (value: number): Uint8Array {
  const m = new Uint8Array(4)
  new DataView(m.buffer).setUint32(0, value, true)
  return m
}

/**
 * One TLS connection: parses frames as bytes arrive and routes them to the stream it carries
 * now (one at a time), the status byte to a dialer waiting for it, or the first frame (the
 * protocol name) to a listener waiting for the next stream.
 */
class BulkConn {
  readonly socket: TLSSocket
  readonly remote: PeerId
  /** The session a dialer's connection belongs to (undefined on the listener's side). */
  readonly session: string | undefined
  /** The stream being carried, if any. */
  stream: SocketByteStream | undefined
  /** Called when the stream ends both ways and the connection may carry another. */
  onReusable: () => void = () => {}
  onClose: () => void = () => {}
  private closed = false
  // Frame parsing state: a partial 4-byte header, and the body bytes still to come.
  private readonly head = new Uint8Array(4)
  private headLen = 0
  private bodyLeft = 0
  private nameBody: Uint8Array[] = []
  private nameWaiter: ((f: Uint8Array | undefined) => void) | undefined
  private statusWaiter: { resolve: (b: number) => void, reject: (e: Error) => void } | undefined

  constructor (socket: TLSSocket, remote: PeerId, session: string | undefined) {
    this.socket = socket
    this.remote = remote
    this.session = session
    socket.on('data', (c: Buffer) => this.onData(c))
    socket.on('end', () => {
      this.lost(new PeerGoneError(`peer ${remote} closed the bulk connection without ending the stream`, { peer: remote }))
      socket.end()
    })
    socket.on('error', (err: NodeJS.ErrnoException) => {
      // A peer that reset its stream on purpose closes the socket right after the reset marker, so a
      // write can fail with EPIPE before the marker is parsed: a reset too, not a lost peer.
      this.lost(err.code === 'ECONNRESET' || err.code === 'EPIPE' ? new StreamResetError(`stream reset by ${remote}`) : new PeerGoneError(`bulk connection to ${remote} failed: ${err.message}`, { peer: remote }))
    })
    socket.on('close', () => {
      this.lost(new PeerGoneError(`bulk connection to ${remote} closed`, { peer: remote }))
      this.onClose()
    })
  }

  /** Starts carrying a stream of `protocol`. */
  begin (protocol: string): SocketByteStream {
    const s = new SocketByteStream(this, protocol)
    this.stream = s
    return s
  }

  /** Dialer: names the protocol and waits for the listener's answer. */
  async request (protocol: string, signal?: AbortSignal): Promise<SocketByteStream> {
    if (this.closed) throw new PeerGoneError(`bulk connection to ${this.remote} closed`, { peer: this.remote })
    const answered = new Promise<number>((resolve, reject) => { this.statusWaiter = { resolve, reject } })
    const onAbort = (): void => { this.socket.destroy() }
    signal?.addEventListener('abort', onAbort, { once: true })
    try {
      const name = Buffer.from(protocol)
      this.socket.cork()
      this.socket.write(marker(name.length))
      this.socket.write(name)
      this.socket.uncork()
      const answer = await answered
      if (answer !== 0) throw new ProtocolNotSupportedError(`peer ${this.remote} does not handle ${protocol}`, { peer: this.remote, protocol })
      return this.begin(protocol)
    } finally {
      this.statusWaiter = undefined
      signal?.removeEventListener('abort', onAbort)
    }
  }

  /** Listener: the next stream's protocol name, or undefined if the connection closes first. */
  nextName (): Promise<Uint8Array | undefined> {
    if (this.closed) return Promise.resolve(undefined)
    return new Promise(resolve => { this.nameWaiter = resolve })
  }

  /** The stream ended both ways: hand the connection on. */
  release (s: SocketByteStream): void {
    if (this.stream !== s || this.closed) return
    this.stream = undefined
    this.socket.resume()
    this.onReusable()
  }

  /** Ends the connection at once: the stream (if any) fails with `err`. */
  shut (err: Error): void {
    if (this.stream !== undefined) this.stream.abort(err)
    else this.socket.destroy()
  }

  gone (): void {
    this.lost(new PeerGoneError(`peer ${this.remote} went away mid-stream`, { peer: this.remote }))
    this.socket.destroy()
  }

  private lost (err: Error): void {
    this.closed = true
    this.stream?.connectionLost(err)
    const w = this.statusWaiter
    this.statusWaiter = undefined
    w?.reject(err)
    const n = this.nameWaiter
    this.nameWaiter = undefined
    n?.(undefined)
  }

  /** A byte that breaks the protocol between streams: the connection is closed. */
  private violation (what: string): void {
    this.lost(new StreamResetError(`bulk connection to ${this.remote}: ${what}`))
    this.socket.destroy()
  }

  /**
   * Frame bodies are passed on as views of the received chunks (a byte stream has no message
   * boundaries), so nothing is copied or reassembled; only the 4-byte headers and the protocol
   * names (<= 256 bytes) are.
   */
  private onData (c: Buffer): void {
    // Consumers get plain Uint8Array views, as from every other ByteStream: a Buffer's
    // slice() is a view, not a copy, and a Buffer's .buffer is the pool it was cut from, so
    // code that copies a chunk with slice() to read it through .buffer would read other bytes
    // (that is how snapshot request/reply exchanges used to stall on this channel).
    const buf = new Uint8Array(c.buffer, c.byteOffset, c.length)
    let pos = 0
    while (pos < buf.length) {
      if (this.statusWaiter !== undefined) {
        const w = this.statusWaiter
        this.statusWaiter = undefined
        w.resolve(buf[pos]!)
        pos++
        continue
      }
      const s = this.stream
      if (this.bodyLeft > 0) {
        const n = Math.min(this.bodyLeft, buf.length - pos)
        const piece = buf.subarray(pos, pos + n)
        pos += n
        this.bodyLeft -= n
        if (this.nameWaiter !== undefined) {
          this.nameBody.push(piece)
          if (this.bodyLeft === 0) this.nameDone()
        } else if (s !== undefined) {
          s.received(piece)
        }
        continue
      }
      const k = Math.min(4 - this.headLen, buf.length - pos)
      this.head.set(buf.subarray(pos, pos + k), this.headLen)
      this.headLen += k
      pos += k
      if (this.headLen < 4) break
      this.headLen = 0
      const len = new DataView(this.head.buffer).getUint32(0, true)
      if (this.nameWaiter !== undefined) {
        if (len > MESH_LIMITS.maxNameBytes) { this.violation(`protocol name of ${len} bytes`); return }
        this.bodyLeft = len
        if (len === 0) this.nameDone()
        continue
      }
      if (s === undefined) { this.violation('a frame outside any stream'); return }
      if (len === END) {
        s.remoteEnd()
        continue
      }
      if (len === RESET) {
        s.connectionLost(new StreamResetError(`stream reset by ${this.remote}`))
        this.closed = true
        this.socket.destroy()
        return
      }
      if (len > MESH_LIMITS.maxStreamChunkBytes) {
        s.abort(new StreamResetError(`bulk frame of ${len} bytes exceeds ${MESH_LIMITS.maxStreamChunkBytes}`))
        return
      }
      this.bodyLeft = len
    }
    const cur = this.stream
    if (cur !== undefined && cur.unread() > READ_HIGH) cur.pause()
  }

  private nameDone (): void {
    const f = this.nameWaiter!
    this.nameWaiter = undefined
    const name = Buffer.concat(this.nameBody)
    this.nameBody = []
    f(name)
  }
}

/** ByteStream over a BulkConn with the length framing described above. */
class SocketByteStream implements ByteStream {
  readonly remote: PeerId
  protocol: string
  private readonly conn: BulkConn
  private readonly socket: TLSSocket
  private readonly inbound = new ByteQueue()
  private paused = false
  /** END received / END sent / handed back to the connection. */
  private remoteEnded = false
  private localEnded = false
  private released = false
  private failure: Error | undefined

  constructor (conn: BulkConn, protocol: string) {
    this.conn = conn
    this.socket = conn.socket
    this.remote = conn.remote
    this.protocol = protocol
  }

  received (piece: Uint8Array): void { this.inbound.push(piece) }
  unread (): number { return this.inbound.bytes }

  pause (): void {
    if (this.paused || this.released) return
    this.paused = true
    this.socket.pause()
  }

  remoteEnd (): void {
    this.remoteEnded = true
    this.inbound.end()
    this.maybeRelease()
  }

  /** The connection failed or closed; a stream that already got END keeps what it read. */
  connectionLost (err: Error): void {
    this.failure ??= err
    if (!this.remoteEnded) this.inbound.fail(err)
  }

  private maybeRelease (): void {
    if (!this.remoteEnded || !this.localEnded || this.failure !== undefined || this.released) return
    this.released = true
    this.paused = false
    this.conn.release(this)
  }

  private writable (): boolean {
    return this.failure === undefined && !this.localEnded && !this.socket.destroyed && this.socket.writable
  }

  async writeFrame (chunk: Uint8Array, signal?: AbortSignal): Promise<void> {
    this.socket.cork()
    this.socket.write(marker(chunk.length))
    this.socket.write(chunk)
    this.socket.uncork()
    while (this.socket.writableLength > MESH_LIMITS.maxStreamWriteBufferBytes) {
      await new Promise<void>((resolve, reject) => {
        const done = (): void => { cleanup(); resolve() }
        const onAbort = (): void => { cleanup(); reject(new AbortError('write aborted')) }
        const cleanup = (): void => {
          this.socket.off('drain', done)
          this.socket.off('close', done)
          signal?.removeEventListener('abort', onAbort)
        }
        if (signal?.aborted === true) { onAbort(); return }
        this.socket.once('drain', done)
        this.socket.once('close', done)
        signal?.addEventListener('abort', onAbort, { once: true })
      })
      if (this.failure !== undefined) throw this.failure
      if (this.socket.destroyed) throw new StreamResetError('stream closed')
    }
  }

  async write (chunk: Uint8Array, options: { signal?: AbortSignal } = {}): Promise<void> {
    checkChunkSize(chunk)
    if (options.signal?.aborted === true) throw new AbortError('write aborted')
    if (this.failure !== undefined) throw this.failure
    if (!this.writable()) throw new StreamResetError('stream closed')
    if (chunk.length === 0) return
    await this.writeFrame(chunk, options.signal)
  }

  async end (): Promise<void> {
    if (!this.writable()) return
    this.localEnded = true
    await new Promise<void>(resolve => this.socket.write(marker(END), () => resolve()))
    this.maybeRelease()
  }

  abort (reason?: Error): void {
    // A stream handed back to its connection no longer owns it (another stream may use it).
    if (this.released) return
    if (this.failure === undefined && this.socket.writable) this.socket.end(marker(RESET))
    this.connectionLost(reason ?? new AbortError('stream aborted locally'))
    this.inbound.fail(this.failure!)
    this.socket.destroySoon()
  }

  async * [Symbol.asyncIterator] (): AsyncIterator<Uint8Array> {
    for (;;) {
      const c = await this.inbound.next()
      if (c === undefined) return
      if (this.paused && this.inbound.bytes < READ_HIGH / 2) {
        this.paused = false
        this.socket.resume()
      }
      yield c
    }
  }
}
