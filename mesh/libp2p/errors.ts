import { AbortError } from '../../core/index.ts'
import { PeerGoneError, ProtocolNotSupportedError } from '../errors.ts'

/** One line for a log field: the error's class name and message. */
export function describe(err: unknown): string {
  return err instanceof Error ? `${err.name}: ${err.message}` : String(err)
}

/** Maps a failed libp2p dialProtocol to the PeerNet error `open()` promises. */
export function mapOpenError(err: unknown, peer: string, protocol: string, signal?: AbortSignal): Error {
  const e = err as Error
  if (signal?.aborted === true || e.name === 'AbortError') return new AbortError('open aborted', { peer, protocol })
  if (e.name === 'UnsupportedProtocolError') return new ProtocolNotSupportedError(`peer ${peer} does not handle ${protocol}`, { peer, protocol })
  return new PeerGoneError(`cannot open ${protocol} to ${peer}: ${e.message}`, { peer, protocol })
}
