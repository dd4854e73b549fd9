/**
 * Error classes with stable names. Callers match on `err.name` (or `instanceof`), never on
 * message text. Two families:
 *
 * - lifecycle / programmer / input errors: plain classes below;
 * - errors about bytes that came from a peer: {@link ProtocolError}, which carries a `code`
 *   and an `action` ('ignore' | 'reject') that the mesh feeds into peer scoring.
 */

/** Base class: every error zeromesh throws on purpose extends this. */
export class ZeromeshError extends Error {
  static override name = 'ZeromeshError'
  /** Structured context for logs (never payload bytes, never secrets). */
  readonly details: Record<string, unknown>

  constructor(message: string, details: Record<string, unknown> = {}, options?: ErrorOptions) {
    super(message, options)
    this.name = (new.target as { name: string }).name
    this.details = details
  }
}

/** A caller passed a value outside the documented domain (bad k/m, bad block size, ...). */
export class InvalidArgumentError extends ZeromeshError {
  static override name = 'InvalidArgumentError'
}

/** A size cap from a limits module would be exceeded; raised before allocating. */
export class LimitExceededError extends ZeromeshError {
  static override name = 'LimitExceededError'
  readonly limit: string
  readonly value: number
  readonly cap: number

  constructor(limit: string, value: number, cap: number) {
    super(`${limit} ${value} exceeds the cap of ${cap}`, { limit, value, cap })
    this.limit = limit
    this.value = value
    this.cap = cap
  }
}

/** An operation was cancelled through its AbortSignal. */
export class AbortError extends ZeromeshError {
  static override name = 'AbortError'
  constructor(message = 'the operation was aborted', details: Record<string, unknown> = {}) {
    super(message, details)
  }
}

/** What the mesh should do about the peer that sent bad bytes. */
export type ProtocolAction = 'ignore' | 'reject'

/**
 * Bytes from the network (or a file) that do not decode: malformed, truncated, oversize,
 * corrupt, wrong dtype/shape, unknown type, stale. `code` is a stable machine-readable tag.
 */
export class ProtocolError extends ZeromeshError {
  static override name = 'ProtocolError'
  readonly code: string
  readonly action: ProtocolAction

  constructor(code: string, message: string, details: Record<string, unknown> = {}, action: ProtocolAction = 'reject') {
    super(message, { code, ...details })
    this.code = code
    this.action = action
  }
}

/** Builds a {@link ProtocolError} whose code is one of `C` (a layer's table of codes). */
export type ProtocolErrorFactory<C extends string> = (code: C, message: string, details?: Record<string, unknown>, action?: ProtocolAction) => ProtocolError

/**
 * The protocol-error factory: a {@link ProtocolError} with `code`, `details` for logs and the
 * `action` for peer scoring ('reject' unless said otherwise). Each layer types it to its own
 * codes (codec's `codecError`, snapshot's `snapshotError` are this function).
 */
export function protocolError(code: string, message: string, details: Record<string, unknown> = {}, action: ProtocolAction = 'reject'): ProtocolError {
  return new ProtocolError(code, message, details, action)
}

/**
 * A layer's protocol-error codes declared once: `codes` maps each code to itself (so call sites
 * write `CodecErrorCode.FRAME_TRUNCATED`), and `error` is {@link protocolError} typed to them.
 */
export function protocolCodes<const C extends string>(names: readonly C[]): { codes: Readonly<{ [K in C]: K }>; error: ProtocolErrorFactory<C> } {
  const codes = Object.fromEntries(names.map(n => [n, n])) as { [K in C]: K }
  return { codes: Object.freeze(codes), error: protocolError }
}

/** Throws {@link AbortError} if the signal has fired. */
export function throwIfAborted(signal?: AbortSignal): void {
  if (signal?.aborted === true) {
    throw new AbortError('the operation was aborted', { reason: String(signal.reason) })
  }
}

/**
 * `work`, settled by `signal` at once (AbortError) even when the work itself does not listen
 * to it (a dial can wait in a transport's queues past its signal); a value the work yields
 * after that is handed to `dispose` (close the stream nobody will use).
 */
export function settleOnAbort<T>(signal: AbortSignal | undefined, work: Promise<T>, dispose: (value: T) => void): Promise<T> {
  if (signal === undefined) return work
  return new Promise<T>((resolve, reject) => {
    let settled = false
    const onAbort = (): void => {
      if (settled) return
      settled = true
      reject(new AbortError('the operation was aborted', { reason: String(signal.reason) }))
    }
    if (signal.aborted) onAbort()
    else signal.addEventListener('abort', onAbort, { once: true })
    work.then(
      value => {
        signal.removeEventListener('abort', onAbort)
        if (settled) dispose(value)
        else {
          settled = true
          resolve(value)
        }
      },
      (err: unknown) => {
        signal.removeEventListener('abort', onAbort)
        if (!settled) {
          settled = true
          reject(err)
        }
      }
    )
  })
}
