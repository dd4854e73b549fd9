import type { Stream } from '@libp2p/interface'
import { AbortError, settleOnAbort } from '../../core/index.ts'
import { ByteQueue } from '../byte-queue.ts'
import { checkChunkSize } from '../checks.ts'
import { PeerGoneError, StreamResetError } from '../errors.ts'
import { MESH_LIMITS } from '../limits.ts'
import type { ByteStream, PeerId } from '../peernet.ts'
import { describe } from './errors.ts'

/** Unread bytes at which a stream stops granting the sender window, and resumes below half. */
export const READ_HIGH = MESH_LIMITS.maxStreamReadBufferBytes

/** Waits for one of a stream's events, or the signal. */
function nextEvent(stream: Stream, names: Array<'drain' | 'close'>, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    const done = (): void => {
      for (const n of names) stream.removeEventListener(n, done)
      signal?.removeEventListener('abort', onAbort)
      resolve()
    }
    const onAbort = (): void => {
      for (const n of names) stream.removeEventListener(n, done)
      reject(new AbortError('write aborted'))
    }
    if (signal?.aborted === true) {
      onAbort()
      return
    }
    for (const n of names) stream.addEventListener(n, done, { once: true })
    signal?.addEventListener('abort', onAbort, { once: true })
  })
}

/**
 * Adapts a libp2p Stream to ByteStream. Reading: 'message' events feed a ByteQueue; above
 * READ_HIGH unread bytes the stream is paused (yamux stops granting window, so the sender
 * stalls) and resumed below half. Writing: send(), then wait for 'drain' while more than the
 * write cap is queued inside the stream.
 */
export class Libp2pByteStream implements ByteStream {
  readonly remote: PeerId
  readonly protocol: string
  onFinish: () => void = () => {}
  private readonly raw: Stream
  private readonly inbound = new ByteQueue()
  private paused = false
  private remoteEnded = false
  private failure: Error | undefined
  /** Aborted on the first failure: a pending end() settles with it (libp2p's close may not). */
  private readonly failed = new AbortController()

  constructor(raw: Stream, remote: PeerId, protocol: string) {
    this.raw = raw
    this.remote = remote
    this.protocol = protocol
    raw.addEventListener('message', evt => {
      const d = evt.data
      // A copy: the transport may hand out views into buffers it reuses, and readers keep chunks.
      this.inbound.push(d.slice())
      if (!this.paused && this.inbound.bytes > READ_HIGH && raw.readStatus === 'readable') {
        this.paused = true
        raw.pause()
      }
    })
    raw.addEventListener('remoteCloseWrite', () => {
      this.remoteEnded = true
      this.inbound.end()
    })
    raw.addEventListener('close', evt => {
      const err = (evt as Event & { error?: Error }).error
      if (err !== undefined)
        this.fail(
          err.name === 'StreamResetError' || err.name === 'StreamAbortedError'
            ? new StreamResetError(`stream reset by ${remote}: ${err.message}`)
            : new PeerGoneError(`peer ${remote} went away mid-stream: ${err.message}`, { peer: remote })
        )
      else if (!this.remoteEnded) this.fail(new PeerGoneError(`peer ${remote} closed the stream before ending it`, { peer: remote }))
      else this.inbound.end()
      this.onFinish()
    })
  }

  /** The connection to the peer died. */
  gone(): void {
    this.fail(new PeerGoneError(`peer ${this.remote} went away mid-stream`, { peer: this.remote }))
  }

  private fail(err: Error): void {
    this.failure ??= err
    this.inbound.fail(err)
    this.failed.abort(err)
  }

  async write(chunk: Uint8Array, options: { signal?: AbortSignal } = {}): Promise<void> {
    checkChunkSize(chunk)
    if (options.signal?.aborted === true) throw new AbortError('write aborted')
    if (this.failure !== undefined) throw this.failure
    if (this.raw.writeStatus !== 'writable') throw this.failure ?? new StreamResetError(`stream is ${this.raw.writeStatus}`)
    try {
      this.raw.send(chunk)
    } catch (err) {
      throw this.failure ?? new StreamResetError(describe(err))
    }
    while (this.raw.writeBufferLength > MESH_LIMITS.maxStreamWriteBufferBytes) {
      await nextEvent(this.raw, ['drain', 'close'], options.signal)
      if (this.failure !== undefined) throw this.failure
      if (this.raw.status !== 'open') throw new StreamResetError(`stream is ${this.raw.status}`)
    }
  }

  async end(options: { signal?: AbortSignal } = {}): Promise<void> {
    if (this.failure !== undefined) return
    const until = options.signal === undefined ? this.failed.signal : AbortSignal.any([options.signal, this.failed.signal])
    try {
      await settleOnAbort(until, this.raw.close(options), () => {})
    } catch (err) {
      throw this.failure ?? new StreamResetError(describe(err))
    }
  }

  abort(reason?: Error): void {
    this.fail(reason ?? new AbortError('stream aborted locally'))
    this.raw.abort(reason ?? new Error('aborted'))
  }

  async *[Symbol.asyncIterator](): AsyncIterator<Uint8Array> {
    for (;;) {
      const c = await this.inbound.next()
      if (c === undefined) return
      if (this.paused && this.inbound.bytes < READ_HIGH / 2 && this.raw.readStatus === 'paused') {
        this.paused = false
        this.raw.resume()
      }
      yield c
    }
  }
}

/** The streams open on a PeerNet, so a lost peer or a stop fails them at once. */
export class OpenStreams {
  private readonly open = new Set<Libp2pByteStream>()

  /** Adds `s` until it closes. */
  track(s: Libp2pByteStream): Libp2pByteStream {
    this.open.add(s)
    s.onFinish = () => this.open.delete(s)
    return s
  }

  /** Fails every stream to `peer` with PeerGoneError. */
  peerGone(peer: PeerId): void {
    for (const s of this.open) if (s.remote === peer) s.gone()
  }

  /** Aborts every stream with `err`. */
  abortAll(err: Error): void {
    for (const s of this.open) s.abort(err)
  }
}
