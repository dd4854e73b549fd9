import test from 'ava'
import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { writeFileDurableSync } from '../../core/index.ts'

test('writeFileDurableSync replaces a file whole (mode 0600 by default), leaves no temp file, and throws the fs error when the directory is gone', t => {
  const dir = mkdtempSync(join(tmpdir(), 'zm-durable-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  const file = join(dir, 'record')
  writeFileDurableSync(file, new Uint8Array([1, 2, 3]))
  writeFileDurableSync(file, new Uint8Array(100_000).fill(7))
  t.deepEqual(readFileSync(file), Buffer.alloc(100_000, 7))
  t.is(statSync(file).mode & 0o777, 0o600)
  t.deepEqual(readdirSync(dir), ['record'])
  const notDir = join(dir, 'plain')
  writeFileSync(notDir, 'x')
  const err = t.throws(() => writeFileDurableSync(join(notDir, 'record'), new Uint8Array([1])))
  t.is((err as NodeJS.ErrnoException).code, 'ENOTDIR')
  t.deepEqual(readdirSync(dir).sort(), ['plain', 'record'])
})
