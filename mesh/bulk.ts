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
 */
const CIPHERS = 'TLS_AES_128_GCM_SHA256:TLS_CHACHA20_POLY1305_SHA256'
const END = 0xffffffff
const RESET = 0xfffffffe
const READ_HIGH = MESH_LIMITS.maxStreamReadBufferBytes

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
  close(): Promise<void>
}

/** Starts the bulk channel's listener. */
export async function startBulkChannel (init: BulkChannelInit): Promise<BulkChannel> {
  const sessions = new Map<string, { peer: PeerId, key: Uint8Array }>()
  const live = new Set<SocketByteStream>()
  const track = (s: SocketByteStream): SocketByteStream => {
    live.add(s)
    s.onFinish = () => live.delete(s)
    return s
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
    const s = track(new SocketByteStream(socket, peer, ''))
    void s.firstFrame(MESH_LIMITS.maxNameBytes).then(name => {
      const protocol = name === undefined ? '' : Buffer.from(name).toString()
      const handler = init.handler(protocol)
      if (handler === undefined) {
        socket.end(Uint8Array.of(1))
        return
      }
      s.setProtocol(protocol)
      socket.write(Uint8Array.of(0))
      Promise.resolve().then(() => handler(s)).catch(err => {
        init.log.debug({ peer, protocol, err: String(err) }, 'bulk stream handler failed')
        s.abort(err instanceof Error ? err : new Error(String(err)))
      })
    }, () => socket.destroy())
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

  return {
    port,
    addSession (peer, session, key) {
      sessions.set(session, { peer, key })
    },
    dropPeer (peer) {
      for (const [id, e] of sessions) if (e.peer === peer) sessions.delete(id)
      for (const s of live) if (s.remote === peer) s.gone()
    },
    async open (peer, host, port, session, protocol, signal) {
      const entry = sessions.get(session)
      if (entry === undefined || entry.peer !== peer) throw new InvalidArgumentError(`no bulk session ${session} with ${peer}`)
      if (signal?.aborted === true) throw new AbortError('open aborted')
      const socket = tlsConnect({
        host,
        port,
        secureContext: clientContext,
        allowHalfOpen: true,
        checkServerIdentity: () => undefined,
        pskCallback: () => ({ psk: Buffer.from(entry.key), identity: `${init.self} ${session}` })
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
        const s = track(new SocketByteStream(socket, peer, protocol))
        const answered = s.readRawByte()
        await s.writeFrame(Buffer.from(protocol))
        const answer = await answered
        if (answer !== 0) {
          s.abort()
          throw new ProtocolNotSupportedError(`peer ${peer} does not handle ${protocol}`, { peer, protocol })
        }
        return s
      } catch (err) {
        socket.destroy()
        if (aborted(signal)) throw new AbortError('open aborted')
        throw err
      } finally {
        signal?.removeEventListener('abort', onAbort)
      }
    },
    async close () {
      for (const s of live) s.abort(new PeerGoneError('the bulk channel closed'))
      await new Promise<void>(resolve => server.close(() => resolve()))
    }
  }
}

function aborted (signal?: AbortSignal): boolean {
  return signal?.aborted === true
}

/** ByteStream over one TLS socket with the length framing described above. */
class SocketByteStream implements ByteStream {
  readonly remote: PeerId
  protocol: string
  onFinish: () => void = () => {}
  private readonly socket: TLSSocket
  private readonly inbound = new ByteQueue()
  // Frame parsing state: a partial 4-byte header, and the body bytes still to come.
  private readonly head = new Uint8Array(4)
  private headLen = 0
  private bodyLeft = 0
  private firstBody: Uint8Array[] = []
  private paused = false
  private ended = false
  private failure: Error | undefined
  private raw: ((b: number) => void) | undefined
  private first: ((f: Uint8Array | undefined) => void) | undefined
  private firstCap = 0

  constructor (socket: TLSSocket, remote: PeerId, protocol: string) {
    this.socket = socket
    this.remote = remote
    this.protocol = protocol
    socket.on('data', (c: Buffer) => this.onData(c))
    socket.on('end', () => {
      if (!this.ended) this.fail(new PeerGoneError(`peer ${remote} closed the bulk connection without ending the stream`, { peer: remote }))
    })
    socket.on('error', (err: NodeJS.ErrnoException) => {
      this.fail(err.code === 'ECONNRESET' ? new StreamResetError(`stream reset by ${remote}`) : new PeerGoneError(`bulk connection to ${remote} failed: ${err.message}`, { peer: remote }))
    })
    socket.on('close', () => {
      if (!this.ended) this.fail(new PeerGoneError(`bulk connection to ${remote} closed`, { peer: remote }))
      this.onFinish()
    })
  }

  setProtocol (p: string): void { this.protocol = p }

  /** Reads the single status byte the server sends before any frame. */
  readRawByte (): Promise<number> {
    return new Promise((resolve, reject) => {
      if (this.failure !== undefined) { reject(this.failure); return }
      this.raw = resolve
      this.socket.once('close', () => reject(this.failure ?? new PeerGoneError('closed before answering')))
    })
  }

  /** The first frame (the protocol name), capped. */
  firstFrame (cap: number): Promise<Uint8Array | undefined> {
    this.firstCap = cap
    return new Promise(resolve => { this.first = resolve })
  }

  /**
   * Parses frames as bytes arrive. Frame bodies are passed on as views of the received
   * chunks (a byte stream has no message boundaries), so nothing is copied or reassembled;
   * only the 4-byte headers and the first frame (the protocol name, <= 256 bytes) are.
   */
  private onData (c: Buffer): void {
    // Consumers get plain Uint8Array views, as from every other ByteStream: a Buffer's
    // slice() is a view, not a copy, and a Buffer's .buffer is the pool it was cut from, so
    // code that copies a chunk with slice() to read it through .buffer would read other bytes
    // (that is how snapshot request/reply exchanges used to stall on this channel).
    let buf = new Uint8Array(c.buffer, c.byteOffset, c.length)
    if (this.raw !== undefined && buf.length > 0) {
      const r = this.raw
      this.raw = undefined
      r(buf[0]!)
      buf = buf.subarray(1)
    }
    let pos = 0
    while (pos < buf.length) {
      if (this.bodyLeft > 0) {
        const n = Math.min(this.bodyLeft, buf.length - pos)
        const piece = buf.subarray(pos, pos + n)
        pos += n
        this.bodyLeft -= n
        if (this.first !== undefined) {
          this.firstBody.push(piece)
          if (this.bodyLeft === 0) {
            const f = this.first
            this.first = undefined
            f(Buffer.concat(this.firstBody))
            this.firstBody = []
          }
        } else {
          this.inbound.push(piece)
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
      if (len === END) {
        this.ended = true
        this.inbound.end()
        continue
      }
      if (len === RESET) {
        this.fail(new StreamResetError(`stream reset by ${this.remote}`))
        this.socket.destroy()
        return
      }
      const cap = this.first !== undefined ? this.firstCap : MESH_LIMITS.maxStreamChunkBytes
      if (len > cap) {
        this.abort(new StreamResetError(`bulk frame of ${len} bytes exceeds ${cap}`))
        return
      }
      this.bodyLeft = len
      if (len === 0 && this.first !== undefined) {
        const f = this.first
        this.first = undefined
        f(new Uint8Array(0))
      }
    }
    if (!this.paused && this.inbound.bytes > READ_HIGH) {
      this.paused = true
      this.socket.pause()
    }
  }

  gone (): void {
    this.fail(new PeerGoneError(`peer ${this.remote} went away mid-stream`, { peer: this.remote }))
    this.socket.destroy()
  }

  private fail (err: Error): void {
    this.failure ??= err
    this.inbound.fail(err)
    if (this.first !== undefined) {
      const f = this.first
      this.first = undefined
      f(undefined)
    }
  }

  async writeFrame (chunk: Uint8Array, signal?: AbortSignal): Promise<void> {
    const head = new Uint8Array(4)
    new DataView(head.buffer).setUint32(0, chunk.length, true)
    this.socket.cork()
    this.socket.write(head)
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
    if (this.socket.destroyed || !this.socket.writable) throw new StreamResetError('stream closed')
    if (chunk.length === 0) return
    await this.writeFrame(chunk, options.signal)
  }

  async end (): Promise<void> {
    if (this.failure !== undefined || !this.socket.writable) return
    const marker = new Uint8Array(4)
    new DataView(marker.buffer).setUint32(0, END, true)
    await new Promise<void>(resolve => this.socket.end(marker, () => resolve()))
  }

  abort (reason?: Error): void {
    if (this.failure === undefined && this.socket.writable) {
      const marker = new Uint8Array(4)
      new DataView(marker.buffer).setUint32(0, RESET, true)
      this.socket.end(marker)
    }
    this.fail(reason ?? new AbortError('stream aborted locally'))
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
