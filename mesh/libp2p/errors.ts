import { AbortError } from '../../core/index.ts'
import { PeerGoneError, ProtocolNotSupportedError } from '../errors.ts'

/** One line for a log field: the error's class name and message (and an AggregateError's parts: libp2p's failed multi-address dials). */
export function describe(err: unknown): string {
  if (!(err instanceof Error)) return String(err)
  const parts = err instanceof AggregateError ? ` [${err.errors.slice(0, 4).map(describe).join('; ')}]` : ''
  return `${err.name}: ${err.message}${parts}`
}

/** Maps a failed libp2p dialProtocol to the PeerNet error `open()` promises. */
export function mapOpenError(err: unknown, peer: string, protocol: string, signal?: AbortSignal): Error {
  const e = err as Error
  if (signal?.aborted === true || e.name === 'AbortError') return new AbortError('open aborted', { peer, protocol })
  if (e.name === 'UnsupportedProtocolError') return new ProtocolNotSupportedError(`peer ${peer} does not handle ${protocol}`, { peer, protocol })
  return new PeerGoneError(`cannot open ${protocol} to ${peer}: ${e.message}`, { peer, protocol })
}
