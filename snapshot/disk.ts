import { open, rename, stat, unlink } from 'node:fs/promises'
import { join } from 'node:path'
import { checkCap, InvalidArgumentError, ProtocolError, protocolError } from '../core/index.ts'
import { snapshotError, SnapshotErrorCode } from './errors.ts'
import { SNAPSHOT_LIMITS } from './limits.ts'
import { decodeState, verifyState, type RankState } from './state.ts'

/** File name of a rank's own state in its data dir. */
export const STATE_FILE = 'snapshot.zms'

/**
 * Writes `bytes` to `path` atomically and durably: a temp file beside it, fsync, rename over
 * the target, fsync of the directory. A crash leaves either the old file or the new one, never
 * a mix; a leftover temp file is overwritten next time.
 */
export async function writeFileDurable(path: string, bytes: Uint8Array | readonly Uint8Array[], dir: string): Promise<void> {
  const tmp = `${path}.tmp`
  const fh = await open(tmp, 'w', 0o600)
  try {
    for (const part of bytes instanceof Uint8Array ? [bytes] : bytes) {
      let o = 0
      while (o < part.length) {
        const { bytesWritten } = await fh.write(part, o, part.length - o)
        o += bytesWritten
      }
    }
    await fh.sync()
  } catch (err) {
    await fh.close()
    await unlink(tmp).catch(() => {})
    throw err
  }
  await fh.close()
  await rename(tmp, path)
  const d = await open(dir, 'r')
  try {
    await d.sync()
  } finally {
    await d.close()
  }
}

/**
 * Disk tier: persists a rank's own sealed state (from the capturer's `retained()` or
 * `encodeState`) to `<dir>/snapshot.zms`, for when the whole mesh goes down. The file is the
 * serialized state itself, whose header carries magic, version, lengths and the whole-state
 * checksum; it is verified before writing, so a torn buffer is never persisted.
 */
export async function persistState(dir: string, sealed: Uint8Array, options: { name?: string } = {}): Promise<string> {
  verifyState(sealed)
  const path = join(dir, options.name ?? STATE_FILE)
  await writeFileDurable(path, sealed, dir)
  return path
}

/**
 * Loads and verifies `<dir>/snapshot.zms`. Returns undefined when there is no file. The size is
 * capped (maxStateBytes) before reading; a truncated, padded or corrupted file is a
 * STATE_MALFORMED / STATE_CHECKSUM ProtocolError, never a partial state.
 */
export async function loadState(dir: string, options: { name?: string } = {}): Promise<{ state: RankState; bytes: Uint8Array } | undefined> {
  const path = join(dir, options.name ?? STATE_FILE)
  let size: number
  try {
    const st = await stat(path)
    if (!st.isFile()) throw new InvalidArgumentError(`${path} is not a file`)
    size = st.size
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined
    throw err
  }
  checkCap('snapshot file bytes', size, SNAPSHOT_LIMITS.maxStateBytes)
  const bytes = new Uint8Array(size)
  const fh = await open(path, 'r')
  try {
    let o = 0
    while (o < size) {
      // One read is at most READ_CHUNK_BYTES: Node's read takes a 32-bit length (a 2 GiB read aborts the process).
      const { bytesRead } = await fh.read(bytes, o, Math.min(size - o, READ_CHUNK_BYTES), o)
      if (bytesRead === 0) throw snapshotError(SnapshotErrorCode.STATE_MALFORMED, `${path} shrank while being read`)
      o += bytesRead
    }
  } finally {
    await fh.close()
  }
  try {
    return { state: decodeState(bytes), bytes }
  } catch (err) {
    // Name the file: a damaged state is reported where it lies.
    if (err instanceof ProtocolError) throw protocolError(err.code, `${path}: ${err.message}`, { ...err.details, path })
    throw err
  }
}

/** The largest single read of a state file (bytes). */
const READ_CHUNK_BYTES = 1 << 30
