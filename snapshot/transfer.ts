import { AbortError, settleOnAbort, type Clock, type ProtocolError } from '../core/index.ts'
import type { ByteStream, PeerId, PeerNet } from '../mesh/index.ts'
import { snapshotError, SnapshotErrorCode, TransferTimeoutError } from './errors.ts'
import { LABEL_HEAD_BYTES } from './fragment.ts'
import type { Reply } from './wire.ts'

/** Progress tracking of one transfer: a transfer that moves no bytes for idleMs is aborted. */
export interface Watchdog {
  /** Bytes moved: restart the idle timer. */
  poke(): void
  /** The transfer ended: cancel the timer. */
  done(): void
  /** Whether the timer fired (and aborted the stream). */
  timedOut(): boolean
}

/** The bounds every snapshot transfer runs under, on either side of a stream. */
export interface Transfers {
  /** A transfer (or a stream being opened) with no progress for this long is abandoned (ms). */
  readonly idleMs: number
  /** Starts the idle timer of a transfer on `stream`; `what` names it in the timeout error. */
  watchdog(stream: ByteStream, what: string): Watchdog
  /**
   * Opens a stream to `peer`, bounded by idleMs too: a dial to a peer that died without
   * closing its connection can otherwise wait for the transport's own timeout, or forever.
   */
  open(peer: PeerId, protocol: string, signal: AbortSignal, what: string): Promise<ByteStream>
}

/** Creates the transfer bounds of one node: idle timers on its clock, streams opened on its net. */
export function createTransfers(init: { idleMs: number }, deps: { clock: Clock; net: Pick<PeerNet, 'open'> }): Transfers {
  const { clock, net } = deps
  const idleMs = init.idleMs
  const watchdog = (stream: ByteStream, what: string): Watchdog => {
    let fired = false
    let id = clock.setTimeout(fire, idleMs)
    function fire(): void {
      fired = true
      stream.abort(new TransferTimeoutError(`${what}: no progress for ${idleMs} ms`))
    }
    return {
      poke() {
        clock.clearTimeout(id)
        if (!fired) id = clock.setTimeout(fire, idleMs)
      },
      done() {
        clock.clearTimeout(id)
      },
      timedOut: () => fired
    }
  }
  const open = async (peer: PeerId, protocol: string, signal: AbortSignal, what: string): Promise<ByteStream> => {
    const ctl = new AbortController()
    const id = clock.setTimeout(() => ctl.abort(new TransferTimeoutError(`${what}: opening a stream made no progress for ${idleMs} ms`)), idleMs)
    try {
      const both = AbortSignal.any([signal, ctl.signal])
      return await settleOnAbort(both, net.open(peer, protocol, { signal: both }), st => st.abort())
    } catch (err) {
      if (ctl.signal.aborted && !signal.aborted) throw ctl.signal.reason as Error
      throw err
    } finally {
      clock.clearTimeout(id)
    }
  }
  return { idleMs, watchdog, open }
}

/** Aborts `stream` when `signal` fires; returns the function that stops listening. */
export function abortOnSignal(signal: AbortSignal, stream: ByteStream): () => void {
  const fn = (): void => stream.abort(new AbortError('snapshot transfer aborted'))
  signal.addEventListener('abort', fn, { once: true })
  return () => signal.removeEventListener('abort', fn)
}

/**
 * The error an ERROR reply from `holder` stands for: its code when it is a snapshot error code
 * (anything else reads as REQUEST_MALFORMED), action 'ignore' (the holder refused, it did not
 * misbehave).
 */
export function replyError(reply: Pick<Reply, 'code' | 'message'>, holder: PeerId): ProtocolError {
  const known = (Object.values(SnapshotErrorCode) as string[]).includes(reply.code)
  return snapshotError(
    known ? (reply.code as typeof SnapshotErrorCode.NOT_FOUND) : SnapshotErrorCode.REQUEST_MALFORMED,
    `${holder}: ${reply.message}`,
    { holder, code: reply.code },
    'ignore'
  )
}

/**
 * A whole label from its fixed head and the rest (read separately: the head gives the length,
 * see fragment.ts labelLength).
 */
export function joinLabel(head: Uint8Array, rest: Uint8Array): Uint8Array {
  const whole = new Uint8Array(LABEL_HEAD_BYTES + rest.length)
  whole.set(head)
  whole.set(rest, LABEL_HEAD_BYTES)
  return whole
}
