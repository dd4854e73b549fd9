import { closeSync, fstatSync, fsyncSync, mkdirSync, openSync, readSync, renameSync, rmSync, statSync, writeSync, type Stats } from 'node:fs'
import { dirname, resolve } from 'node:path'
import { InvalidArgumentError, LimitExceededError } from './errors.ts'

/**
 * Reads a file a user named, bounded: only a regular file (a device such as /dev/zero, a FIFO
 * or a directory is refused before a byte is read), at most `cap` bytes (checked against its
 * size before anything is allocated, and again while reading, should it grow). `what` names
 * the file in errors ("data file", "secret file"). Errors: the fs error (ENOENT, EACCES: the
 * caller words it), InvalidArgumentError (not a regular file), LimitExceededError (over cap).
 */
export function readFileCapped(file: string, cap: number, what: string): Buffer {
  const fd = openSync(file, 'r')
  try {
    const st = fstatSync(fd)
    if (!st.isFile()) throw new InvalidArgumentError(`${what} ${file} is not a regular file${st.isDirectory() ? ' (a directory)' : ''}`)
    if (st.size > cap) throw new LimitExceededError(`${what} bytes`, st.size, cap)
    const out = Buffer.alloc(st.size)
    let o = 0
    while (o < out.length) {
      const n = readSync(fd, out, o, Math.min(out.length - o, 1 << 30), o)
      if (n === 0) break
      o += n
    }
    // A file that grew past its size while read: one more byte says so.
    if (readSync(fd, Buffer.alloc(1), 0, 1, o) > 0 && o >= cap) throw new LimitExceededError(`${what} bytes`, o + 1, cap)
    return o === out.length ? out : out.subarray(0, o)
  } finally {
    closeSync(fd)
  }
}

/**
 * Creates `dir` and its missing parents (each with `mode`), one level at a time: Node's
 * recursive mkdir never returns for a path under /proc. An existing non-directory on the way
 * is an InvalidArgumentError; the fs error of the first level that cannot be made is thrown as
 * it is (ENOENT, EACCES, EROFS: the caller words it).
 */
export function makeDirs(dir: string, mode = 0o700): void {
  const missing: string[] = []
  let p = resolve(dir)
  for (;;) {
    let st: Stats | undefined
    try {
      st = statSync(p)
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err
    }
    if (st !== undefined) {
      if (!st.isDirectory()) throw new InvalidArgumentError(`${p} is not a directory`)
      break
    }
    missing.push(p)
    const up = dirname(p)
    if (up === p) break
    p = up
  }
  for (const d of missing.reverse()) {
    try {
      mkdirSync(d, { mode })
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err
    }
  }
}

/**
 * Writes `bytes` to `path` atomically and durably, before it returns: a temp file beside it
 * (mode `mode`), fsync, rename over the target, fsync of the directory. A crash of the process
 * or the machine leaves the old file or the new one. The synchronous twin of snapshot/disk.ts
 * writeFileDurable, for small files whose write must be done before the caller goes on (an
 * identity key, an acceptor record). The fs error is thrown as it is (the caller words it);
 * the temp file is removed.
 */
export function writeFileDurableSync(path: string, bytes: Uint8Array, mode = 0o600): void {
  const tmp = `${path}.tmp-${process.pid}`
  try {
    const fd = openSync(tmp, 'w', mode)
    try {
      for (let o = 0; o < bytes.length; ) o += writeSync(fd, bytes, o, bytes.length - o)
      fsyncSync(fd)
    } finally {
      closeSync(fd)
    }
    renameSync(tmp, path)
  } catch (err) {
    try {
      rmSync(tmp, { force: true })
    } catch {
      // (The directory itself failed: nothing was left in it.)
    }
    throw err
  }
  const dir = openSync(dirname(path), 'r')
  try {
    fsyncSync(dir)
  } finally {
    closeSync(dir)
  }
}
