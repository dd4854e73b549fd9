import { ZeromeshError } from '../core/index.ts'

/** The peer is not connected (never was, left, or died) for the operation asked of it. */
export class PeerGoneError extends ZeromeshError {
  static override name = 'PeerGoneError'
}

/** The remote end reset (aborted) the stream; bytes in flight are lost. */
export class StreamResetError extends ZeromeshError {
  static override name = 'StreamResetError'
}

/** The remote peer has no handler for the protocol asked for. */
export class ProtocolNotSupportedError extends ZeromeshError {
  static override name = 'ProtocolNotSupportedError'
}

/** An operation on a PeerNet that is not started (or already stopped). */
export class NotStartedError extends ZeromeshError {
  static override name = 'NotStartedError'
}

/** A peer failed run authentication (wrong secret, bad proof, or too slow). */
export class AuthenticationError extends ZeromeshError {
  static override name = 'AuthenticationError'
}
