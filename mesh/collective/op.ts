import { ProtocolError } from '../../core/index.ts'
import type { Message, MessageHeader } from './message.ts'
import type { LinkTier } from './topology.ts'

/** Bytes sent per link tier. */
export type TierBytes = Record<LinkTier, number>

export function zeroTierBytes(): TierBytes {
  return { host: 0, zone: 0, wan: 0 }
}

/**
 * An encoded body ready to send (checksum passed through when forwarding a verified body). The
 * body may be a view of the operation's own input or output or a pooled buffer: it must not
 * change until `onReleased`, which runs once the transport holds no reference to it.
 */
export interface Payload {
  encoding: number
  blockSize: number
  elements: number
  body: Uint8Array
  checksum?: bigint
  onReleased?: () => void
}

/**
 * Where message `index` of a (source, phase) goes once its header `h` is verified: a view of
 * the operation's output exactly `h.bodyBytes` long when the body is stored as-is there (f32 or
 * raw words) and `h` has the shape the plan expects, else undefined (the body is then checked
 * and decoded by the algorithm, which raises the typed error).
 */
export type Landing = (index: number, h: MessageHeader) => Uint8Array | undefined

/** What an algorithm sees of the running operation. */
export interface OpApi {
  readonly self: number
  /** Declares that `count` messages will come from `src` in `phase` (before {@link ready}), and where they may land. */
  expect(src: number, phase: number, count: number, land?: Landing): void
  /** All expectations are declared: delivers messages that arrived before the op started. */
  ready(): void
  /** Sends message `index` of (self -> dst, phase); resolves once the stream took it. */
  send(dst: number, phase: number, index: number, payload: Payload): Promise<void>
  /** Message `index` of (src -> self, phase), in any order of asking. */
  recv(src: number, phase: number, index: number): Promise<Message>
  /** Runs `fn` (a check of bytes from `src`); a ProtocolError fails the op, blamed on `src`. */
  check(src: number, fn: () => void): void
  /** Races `p` against the failure of the op. */
  guard<T>(p: Promise<T>): Promise<T>
  /** A pooled buffer of `bytes` (give it back with {@link recycle}). */
  buffer(bytes: number): Uint8Array
  /** Gives a pooled buffer back (a received body once consumed, a sent partial sum once released). */
  recycle(b: ArrayBufferView): void
}

interface Waiter {
  resolve: (m: Message) => void
  reject: (err: Error) => void
}

/** Messages of one (source, phase) of an operation: arrival order is checked, reading is by index. */
export class Mailbox {
  readonly count: number
  readonly land: Landing | undefined
  next = 0
  private readonly msgs = new Map<number, Message>()
  private readonly waiters = new Map<number, Waiter>()

  constructor(count: number, land?: Landing) {
    this.count = count
    this.land = land
  }

  /** Where the next message may be written as it arrives (see {@link Landing}). */
  landing(h: MessageHeader): Uint8Array | undefined {
    if (this.land === undefined || h.index !== this.next || h.index >= this.count) return undefined
    return this.land(h.index, h)
  }

  /** True while messages are still due. */
  get open(): boolean {
    return this.next < this.count
  }

  /** Files an arrival; throws ProtocolError when it is out of order or beyond the count. */
  put(m: Message): void {
    const i = m.header.index
    if (i !== this.next || i >= this.count) {
      throw new ProtocolError(
        'COLLECTIVE_UNEXPECTED',
        `message ${i} of phase ${m.header.phase} arrived, expected ${this.next < this.count ? `message ${this.next}` : 'none'}`,
        { index: i }
      )
    }
    this.next++
    const w = this.waiters.get(i)
    if (w !== undefined) {
      this.waiters.delete(i)
      w.resolve(m)
    } else {
      this.msgs.set(i, m)
    }
  }

  take(index: number): Promise<Message> {
    const m = this.msgs.get(index)
    if (m !== undefined) {
      this.msgs.delete(index)
      return Promise.resolve(m)
    }
    return new Promise((resolve, reject) => this.waiters.set(index, { resolve, reject }))
  }

  /** Index `index` was already delivered or is due. */
  has(index: number): boolean {
    return this.msgs.has(index)
  }

  failAll(err: Error): void {
    for (const w of this.waiters.values()) w.reject(err)
    this.waiters.clear()
    this.msgs.clear()
  }
}

/** A set of values filled in by one task and awaited by another, keyed by a number. */
export class Slots<T> {
  private readonly values = new Map<number, T>()
  private readonly waiters = new Map<number, Array<(v: T) => void>>()

  put(key: number, v: T): void {
    this.values.set(key, v)
    const ws = this.waiters.get(key)
    if (ws !== undefined) {
      this.waiters.delete(key)
      for (const w of ws) w(v)
    }
  }

  get(key: number): Promise<T> {
    if (this.values.has(key)) return Promise.resolve(this.values.get(key)!)
    return new Promise(resolve => {
      let ws = this.waiters.get(key)
      if (ws === undefined) this.waiters.set(key, (ws = []))
      ws.push(resolve)
    })
  }

  /** Forgets a value once its last reader has it (bounded memory in long pipelines). */
  delete(key: number): void {
    this.values.delete(key)
  }
}
