import type { TLSSocket } from 'node:tls'
import { AbortError } from '../core/index.ts'
import { ByteQueue } from './byte-queue.ts'
import { checkChunkSize, checkWriteBytes } from './checks.ts'
import { PeerGoneError, ProtocolNotSupportedError, StreamResetError } from './errors.ts'
import { MESH_LIMITS } from './limits.ts'
import { u32le } from './lp.ts'
import type { ByteStream, PeerId } from './peernet.ts'

// The bulk channel's wire format, on one TLS connection (bulk.ts says why it exists): each
// write is a frame [u32 length][bytes]; the length END ends the sender's side of the stream
// and RESET aborts it. The first frame of a stream names the protocol; the listener answers
// one byte: 0 accepted, 1 no such protocol.
const END = 0xffffffff
const RESET = 0xfffffffe
const READ_HIGH = MESH_LIMITS.maxStreamReadBufferBytes

/**
 * One TLS connection: parses frames as bytes arrive and routes them to the stream it carries
 * now (one at a time), the status byte to a dialer waiting for it, or the first frame (the
 * protocol name) to a listener waiting for the next stream.
 */
export class BulkConn {
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
  private statusWaiter: { resolve: (b: number) => void; reject: (e: Error) => void } | undefined

  constructor(socket: TLSSocket, remote: PeerId, session: string | undefined) {
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
      this.lost(
        err.code === 'ECONNRESET' || err.code === 'EPIPE'
          ? new StreamResetError(`stream reset by ${remote}`)
          : new PeerGoneError(`bulk connection to ${remote} failed: ${err.message}`, { peer: remote })
      )
    })
    socket.on('close', () => {
      this.lost(new PeerGoneError(`bulk connection to ${remote} closed`, { peer: remote }))
      this.onClose()
    })
  }

  /** Starts carrying a stream of `protocol`. */
  begin(protocol: string): SocketByteStream {
    const s = new SocketByteStream(this, protocol)
    this.stream = s
    return s
  }

  /** Dialer: names the protocol and waits for the listener's answer. */
  async request(protocol: string, signal?: AbortSignal): Promise<SocketByteStream> {
    if (this.closed) throw new PeerGoneError(`bulk connection to ${this.remote} closed`, { peer: this.remote })
    const answered = new Promise<number>((resolve, reject) => {
      this.statusWaiter = { resolve, reject }
    })
    const onAbort = (): void => {
      this.socket.destroy()
    }
    signal?.addEventListener('abort', onAbort, { once: true })
    try {
      const name = Buffer.from(protocol)
      this.socket.cork()
      this.socket.write(u32le(name.length))
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
  nextName(): Promise<Uint8Array | undefined> {
    if (this.closed) return Promise.resolve(undefined)
    return new Promise(resolve => {
      this.nameWaiter = resolve
    })
  }

  /** The stream ended both ways: hand the connection on. */
  release(s: SocketByteStream): void {
    if (this.stream !== s || this.closed) return
    this.stream = undefined
    this.socket.resume()
    this.onReusable()
  }

  /** Ends the connection at once: the stream (if any) fails with `err`. */
  shut(err: Error): void {
    if (this.stream !== undefined) this.stream.abort(err)
    else this.socket.destroy()
  }

  gone(): void {
    this.lost(new PeerGoneError(`peer ${this.remote} went away mid-stream`, { peer: this.remote }))
    this.socket.destroy()
  }

  private lost(err: Error): void {
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
  private violation(what: string): void {
    this.lost(new StreamResetError(`bulk connection to ${this.remote}: ${what}`))
    this.socket.destroy()
  }

  /**
   * Frame bodies are passed on as views of the received chunks (a byte stream has no message
   * boundaries), so nothing is copied or reassembled; only the 4-byte headers and the protocol
   * names (<= 256 bytes) are.
   */
  private onData(c: Buffer): void {
    // Consumers get plain Uint8Array views, as from every other ByteStream: a Buffer's
    // slice() is a view, not a copy, and a Buffer's .buffer is the pool it was cut from, so
    // code that copies a chunk with slice() to read it through .buffer would read other bytes
    // (a request/reply exchange then waits for a message that never parses).
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
        if (len > MESH_LIMITS.maxNameBytes) {
          this.violation(`protocol name of ${len} bytes`)
          return
        }
        this.bodyLeft = len
        if (len === 0) this.nameDone()
        continue
      }
      if (s === undefined) {
        this.violation('a frame outside any stream')
        return
      }
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

  private nameDone(): void {
    const f = this.nameWaiter!
    this.nameWaiter = undefined
    const name = Buffer.concat(this.nameBody)
    this.nameBody = []
    f(name)
  }
}

/** ByteStream over a BulkConn with the length framing described above. */
export class SocketByteStream implements ByteStream {
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

  constructor(conn: BulkConn, protocol: string) {
    this.conn = conn
    this.socket = conn.socket
    this.remote = conn.remote
    this.protocol = protocol
  }

  received(piece: Uint8Array): void {
    this.inbound.push(piece)
  }
  unread(): number {
    return this.inbound.bytes
  }

  pause(): void {
    if (this.paused || this.released) return
    this.paused = true
    this.socket.pause()
  }

  remoteEnd(): void {
    this.remoteEnded = true
    this.inbound.end()
    this.maybeRelease()
  }

  /** The connection failed or closed; a stream that already got END keeps what it read. */
  connectionLost(err: Error): void {
    this.failure ??= err
    if (!this.remoteEnded) this.inbound.fail(err)
  }

  private maybeRelease(): void {
    if (!this.remoteEnded || !this.localEnded || this.failure !== undefined || this.released) return
    this.released = true
    this.paused = false
    this.conn.release(this)
  }

  private writable(): boolean {
    return this.failure === undefined && !this.localEnded && !this.socket.destroyed && this.socket.writable
  }

  /** One frame of `parts` (total `bytes`); `onWritten` runs once the socket is done with them. */
  private async writeFrame(parts: readonly Uint8Array[], bytes: number, signal?: AbortSignal, onWritten?: () => void): Promise<void> {
    this.socket.cork()
    this.socket.write(u32le(bytes))
    const last = parts.length - 1
    parts.forEach((p, i) => this.socket.write(p, i === last ? onWritten : undefined))
    this.socket.uncork()
    while (this.socket.writableLength > MESH_LIMITS.maxStreamWriteBufferBytes) {
      await new Promise<void>((resolve, reject) => {
        const done = (): void => {
          cleanup()
          resolve()
        }
        const onAbort = (): void => {
          cleanup()
          reject(new AbortError('write aborted'))
        }
        const cleanup = (): void => {
          this.socket.off('drain', done)
          this.socket.off('close', done)
          signal?.removeEventListener('abort', onAbort)
        }
        if (signal?.aborted === true) {
          onAbort()
          return
        }
        this.socket.once('drain', done)
        this.socket.once('close', done)
        signal?.addEventListener('abort', onAbort, { once: true })
      })
      if (this.failure !== undefined) throw this.failure
      if (this.socket.destroyed) throw new StreamResetError('stream closed')
    }
  }

  /** Throws why nothing can be written now, if anything. */
  private checkWritable(signal: AbortSignal | undefined): void {
    if (signal?.aborted === true) throw new AbortError('write aborted')
    if (this.failure !== undefined) throw this.failure
    if (!this.writable()) throw new StreamResetError('stream closed')
  }

  async write(chunk: Uint8Array, options: { signal?: AbortSignal } = {}): Promise<void> {
    checkChunkSize(chunk)
    this.checkWritable(options.signal)
    if (chunk.length === 0) return
    await this.writeFrame([chunk], chunk.length, options.signal)
  }

  /** The socket copies nothing: the parts go to the kernel (through TLS) as they are. */
  async writev(parts: readonly Uint8Array[], options: { signal?: AbortSignal; onReleased?: () => void } = {}): Promise<void> {
    const release = once(options.onReleased)
    let bytes = 0
    for (const p of parts) bytes += p.length
    try {
      checkWriteBytes(bytes)
      this.checkWritable(options.signal)
    } catch (err) {
      release()
      throw err
    }
    if (bytes === 0) {
      release()
      return
    }
    // The socket calls back on the last part once everything before it went out too (or
    // with an error once the socket is destroyed and drops them).
    await this.writeFrame(
      parts.filter(p => p.length > 0),
      bytes,
      options.signal,
      release
    )
  }

  async end(): Promise<void> {
    if (!this.writable()) return
    this.localEnded = true
    await new Promise<void>(resolve => this.socket.write(u32le(END), () => resolve()))
    this.maybeRelease()
  }

  abort(reason?: Error): void {
    // A stream handed back to its connection no longer owns it (another stream may use it).
    if (this.released) return
    if (this.failure === undefined && this.socket.writable) this.socket.end(u32le(RESET))
    this.connectionLost(reason ?? new AbortError('stream aborted locally'))
    this.inbound.fail(this.failure!)
    this.socket.destroySoon()
  }

  async *[Symbol.asyncIterator](): AsyncIterator<Uint8Array> {
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

/** `f` made safe to call more than once (or absent). */
function once(f: (() => void) | undefined): () => void {
  let called = f === undefined
  return () => {
    if (called) return
    called = true
    f!()
  }
}
