import { AbortError } from '../core/index.ts'

interface Waiter {
  resolve: () => void
  reject: (err: Error) => void
}

/**
 * A FIFO of byte chunks between a producer and one async-iterating consumer, with
 * backpressure: the producer awaits `waitForRoom(cap)` until the unread bytes are at most cap.
 * `end()` finishes iteration after the queued bytes; `fail(err)` makes the consumer (and any
 * waiting producer) throw `err` at once, dropping what is queued.
 */
export class ByteQueue implements AsyncIterable<Uint8Array> {
  private readonly chunks: Uint8Array[] = []
  private head = 0
  private queued = 0
  private ended = false
  private error: Error | undefined
  private reader: Waiter | undefined
  private readonly roomWaiters = new Set<Waiter & { cap: number }>()

  /** Bytes pushed but not yet read. */
  get bytes(): number {
    return this.queued
  }
  /** True once end() or fail() was called. */
  get closed(): boolean {
    return this.ended || this.error !== undefined
  }

  push(chunk: Uint8Array): void {
    if (this.closed) return
    if (chunk.length === 0) return
    this.chunks.push(chunk)
    this.queued += chunk.length
    this.wakeReader()
  }

  end(): void {
    if (this.closed) return
    this.ended = true
    this.wakeReader()
  }

  fail(err: Error): void {
    if (this.error !== undefined) return
    this.error = err
    this.chunks.length = 0
    this.head = 0
    this.queued = 0
    const r = this.reader
    this.reader = undefined
    r?.reject(err)
    for (const w of this.roomWaiters) w.reject(err)
    this.roomWaiters.clear()
  }

  /** Resolves when unread bytes <= cap; rejects on fail() or abort. */
  waitForRoom(cap: number, signal?: AbortSignal): Promise<void> {
    if (this.error !== undefined) return Promise.reject(this.error)
    if (this.queued <= cap) return Promise.resolve()
    if (signal?.aborted === true) return Promise.reject(new AbortError('write aborted'))
    return new Promise((resolve, reject) => {
      const w = {
        cap,
        resolve: () => {
          cleanup()
          resolve()
        },
        reject: (err: Error) => {
          cleanup()
          reject(err)
        }
      }
      const onAbort = (): void => {
        this.roomWaiters.delete(w)
        w.reject(new AbortError('write aborted'))
      }
      const cleanup = (): void => signal?.removeEventListener('abort', onAbort)
      signal?.addEventListener('abort', onAbort, { once: true })
      this.roomWaiters.add(w)
    })
  }

  /** The next chunk, or undefined at the end. */
  async next(signal?: AbortSignal): Promise<Uint8Array | undefined> {
    for (;;) {
      if (this.error !== undefined) throw this.error
      if (this.head < this.chunks.length) {
        const c = this.chunks[this.head]!
        this.chunks[this.head++] = EMPTY
        if (this.head > 1024 && this.head * 2 > this.chunks.length) {
          this.chunks.splice(0, this.head)
          this.head = 0
        }
        this.queued -= c.length
        this.wakeWriters()
        return c
      }
      if (this.ended) return undefined
      if (signal?.aborted === true) throw new AbortError('read aborted')
      await new Promise<void>((resolve, reject) => {
        const onAbort = (): void => {
          this.reader = undefined
          reject(new AbortError('read aborted'))
        }
        signal?.addEventListener('abort', onAbort, { once: true })
        this.reader = {
          resolve: () => {
            signal?.removeEventListener('abort', onAbort)
            resolve()
          },
          reject: err => {
            signal?.removeEventListener('abort', onAbort)
            reject(err)
          }
        }
      })
    }
  }

  async *[Symbol.asyncIterator](): AsyncIterator<Uint8Array> {
    for (;;) {
      const c = await this.next()
      if (c === undefined) return
      yield c
    }
  }

  private wakeReader(): void {
    const r = this.reader
    this.reader = undefined
    r?.resolve()
  }

  private wakeWriters(): void {
    for (const w of this.roomWaiters) {
      if (this.queued <= w.cap) {
        this.roomWaiters.delete(w)
        w.resolve()
      }
    }
  }
}

const EMPTY = new Uint8Array(0)
