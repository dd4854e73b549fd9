import { InvalidArgumentError, ZeromeshError, protocolCodes } from '../core/index.ts'

/**
 * Stable codes carried by the ProtocolErrors raised in snapshot/ (`SnapshotErrorCode.X === 'X'`), and
 * `snapshotError`, core's protocolError typed to them.
 */
export const { codes: SnapshotErrorCode, error: snapshotError } = protocolCodes([
  // A serialized state (from a peer or a file) is too short, has a bad magic/version, or lengths that do not add up.
  'STATE_MALFORMED',
  // The whole-state checksum does not match.
  'STATE_CHECKSUM',
  // A fragment label (owner, version, index, k, m, epoch) is malformed or fails its checksum.
  'LABEL_MALFORMED',
  // A fragment's body fails its segment checks (ZMFG header/body checksums, k/m/index mismatch).
  'FRAGMENT_CORRUPT',
  // The fragment's bytes do not hash to what the manifest says.
  'FRAGMENT_HASH',
  // A put labelled with an epoch older than the holder's view.
  'STALE_EPOCH',
  // A put labelled with an epoch the holder has not installed yet (the sender retries).
  'FUTURE_EPOCH',
  // A put of a version older than the one the holder must keep for that owner.
  'STALE_VERSION',
  // The placement of that (view, owner, k, m) does not put this fragment index on this holder.
  'MISDIRECTED',
  // Same (owner, epoch, version, index) already held with different bytes (the first is kept).
  'DUPLICATE_CONFLICT',
  // The holder's store is at its memory cap.
  'STORE_FULL',
  // The holder does not have the fragment asked for.
  'NOT_FOUND',
  // A request or reply on a snapshot stream is malformed or over a cap.
  'REQUEST_MALFORMED'
])
export type SnapshotErrorCodeT = keyof typeof SnapshotErrorCode

/** k and m do not fit the view (k + m distinct holders other than the owner are needed). */
export class PlacementError extends InvalidArgumentError {
  static override name = 'PlacementError'
}

/**
 * A FragmentStore refused a fragment because holding it would take the store past its memory
 * cap. Also sent back to the placer as a STORE_FULL ProtocolError.
 */
export class StoreFullError extends ZeromeshError {
  static override name = 'StoreFullError'
  readonly usedBytes: number
  readonly wantBytes: number
  readonly capBytes: number

  constructor(usedBytes: number, wantBytes: number, capBytes: number) {
    super(`fragment store is full: ${usedBytes} bytes held + ${wantBytes} would exceed the cap of ${capBytes}`, { usedBytes, wantBytes, capBytes })
    this.usedBytes = usedBytes
    this.wantBytes = wantBytes
    this.capBytes = capBytes
  }
}

/** A stripe could not be placed on all k + m holders; the previous complete version stays the newest. */
export class PlacementFailedError extends ZeromeshError {
  static override name = 'PlacementFailedError'
  readonly owner: string
  readonly version: number
  readonly failed: Array<{ index: number; holder: string; reason: string }>

  constructor(owner: string, version: number, failed: Array<{ index: number; holder: string; reason: string }>) {
    super(`snapshot ${version} of ${owner}: ${failed.length} fragment(s) not placed: ` + failed.map(f => `${f.index}@${f.holder} (${f.reason})`).join(', '), {
      owner,
      version,
      failed
    })
    this.owner = owner
    this.version = version
    this.failed = failed
  }
}

/**
 * A rank's state cannot be rebuilt: fewer than k valid fragments of the version could be
 * fetched. Names the rank, the version and which fragment indices were missing or corrupt.
 */
export class UnrecoverableError extends ZeromeshError {
  static override name = 'UnrecoverableError'
  readonly owner: string
  readonly rank: number
  readonly version: number
  readonly k: number
  readonly m: number
  readonly missing: number[]
  readonly corrupt: number[]

  constructor(init: { owner: string; rank: number; version: number; k: number; m: number; missing: number[]; corrupt: number[] }) {
    super(
      `rank ${init.rank} (${init.owner}) snapshot version ${init.version} is unrecoverable: ` +
        `need ${init.k} of ${init.k + init.m} fragments, missing [${init.missing.join(', ')}]` +
        (init.corrupt.length > 0 ? `, corrupt [${init.corrupt.join(', ')}]` : ''),
      { ...init }
    )
    this.owner = init.owner
    this.rank = init.rank
    this.version = init.version
    this.k = init.k
    this.m = init.m
    this.missing = init.missing
    this.corrupt = init.corrupt
  }
}

/** No snapshot of the owner is known (no manifest, and no holder listed a version). */
export class NoSnapshotError extends ZeromeshError {
  static override name = 'NoSnapshotError'
}

/** A transfer made no progress within its idle timeout. */
export class TransferTimeoutError extends ZeromeshError {
  static override name = 'TransferTimeoutError'
}

/**
 * A coder thread died (crashed, exited, failed to start) or answered something that is not a
 * reply to the job it was given. The capture whose placement needed it settles `failed`; the
 * next job starts a fresh thread.
 */
export class SnapshotCoderError extends ZeromeshError {
  static override name = 'SnapshotCoderError'
}
