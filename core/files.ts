import { closeSync, fstatSync, openSync, readSync } from 'node:fs'
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
