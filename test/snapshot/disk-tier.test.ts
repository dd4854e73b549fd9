import test from 'ava'
import { mkdtemp, readFile, rm, truncate, writeFile, readdir } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { ProtocolError, Rng } from '../../core/index.ts'
import { encodeState, loadState, persistState, STATE_FILE } from '../../snapshot/index.ts'
import { bytesEqual, randomState } from './helpers.ts'

const withDir = async (fn: (dir: string) => Promise<void>): Promise<void> => {
  const dir = await mkdtemp(join(tmpdir(), 'zm-snap-'))
  try {
    await fn(dir)
  } finally {
    await rm(dir, { recursive: true, force: true })
  }
}

test('disk tier: persist then load returns the same verified state; no temp file is left', async t => {
  await withDir(async dir => {
    t.is(await loadState(dir), undefined)
    const bytes = encodeState(randomState(Rng.fromSeed(1), 10_000, { step: 12 }))
    await persistState(dir, bytes)
    t.deepEqual(await readdir(dir), [STATE_FILE])
    const back = await loadState(dir)
    t.true(bytesEqual(back!.bytes, bytes))
    t.is(back!.state.step, 12)
    // A newer persist replaces it atomically.
    const newer = encodeState(randomState(Rng.fromSeed(2), 10_000, { step: 13 }))
    await persistState(dir, newer)
    t.is((await loadState(dir))!.state.step, 13)
  })
})

test('disk tier: a truncated file is detected (STATE_MALFORMED), never loaded', async t => {
  await withDir(async dir => {
    const bytes = encodeState(randomState(Rng.fromSeed(3), 1000))
    await persistState(dir, bytes)
    for (const len of [bytes.length - 1, bytes.length - 4000, 63, 0]) {
      await truncate(join(dir, STATE_FILE), len)
      const err = await t.throwsAsync(loadState(dir), { instanceOf: ProtocolError })
      t.is(err!.code, 'STATE_MALFORMED', `truncated to ${len}`)
    }
  })
})

test('disk tier: a corrupted file is detected (STATE_CHECKSUM), and a torn buffer is never persisted', async t => {
  await withDir(async dir => {
    const bytes = encodeState(randomState(Rng.fromSeed(4), 1000))
    await persistState(dir, bytes)
    const file = join(dir, STATE_FILE)
    const raw = new Uint8Array(await readFile(file))
    raw[5000]! ^= 0x40
    await writeFile(file, raw)
    const err = await t.throwsAsync(loadState(dir), { instanceOf: ProtocolError })
    t.is(err!.code, 'STATE_CHECKSUM')
    const torn = bytes.slice()
    torn[200]! ^= 1
    await t.throwsAsync(persistState(dir, torn), { instanceOf: ProtocolError })
  })
})

test('disk tier: a state file over 2 GiB (below the 16 GiB cap) is read in chunks and refused with a typed error naming it, not a native abort', async t => {
  t.timeout(120_000)
  const dir = await mkdtemp(join(tmpdir(), 'zm-big-'))
  try {
    // A sparse file of 2 GiB + 64 bytes of zeros: no magic, so it is malformed, once it has been read.
    const path = join(dir, STATE_FILE)
    await writeFile(path, new Uint8Array(0))
    await truncate(path, 2 ** 31 + 64)
    const err = await t.throwsAsync(loadState(dir), { instanceOf: ProtocolError })
    t.is((err as ProtocolError).code, 'STATE_MALFORMED')
    t.true(err!.message.startsWith(`${path}: `), err!.message)
  } finally {
    await rm(dir, { recursive: true, force: true })
  }
})
