import { execFile } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import { promisify } from 'node:util'
import test from 'ava'
import { InvalidArgumentError, LimitExceededError, Rng } from '../../core/index.ts'
import { threadExecArgv } from '../../core/index.ts'
import { createInlineCoder, createThreadCoder, encodeState, SNAPSHOT_LIMITS, writeState, type SnapshotFragment } from '../../snapshot/index.ts'
import { coders, snapshotCoderSuite } from './coder-compliance.ts'
import { bytesEqual, randomState } from './helpers.ts'

snapshotCoderSuite('inline', () => createInlineCoder({ coderFor: coders(), breathe: () => new Promise(resolve => setImmediate(resolve)) }))
snapshotCoderSuite('threads (1)', () => createThreadCoder({ threads: 1 }))
snapshotCoderSuite('threads (2)', () => createThreadCoder({ threads: 2 }))

test('inline and thread coders give the same sealed state and fragments, byte for byte, over many segments', async t => {
  const inline = createInlineCoder({ coderFor: coders(), breathe: async () => {} })
  const threads = createThreadCoder({ threads: 2 })
  try {
    const s = randomState(Rng.fromSeed(21), 300_000, { step: 12 })
    const a = writeState(s, inline.alloc(4_000_000))
    const b = writeState(s, threads.alloc(4_000_000))
    t.is(await inline.seal(a), await threads.seal(b))
    t.true(b.buffer instanceof SharedArrayBuffer, 'the thread coder reads capture buffers in place')
    t.true(bytesEqual(a, b) && bytesEqual(a, encodeState(s)))
    const spec = { owner: 'p7', rank: 7, epoch: 2, k: 4, m: 2, segmentBytes: 256 * 1024 }
    const fa = await inline.stripe(a, spec)
    const fb = await threads.stripe(b, spec)
    t.is(fa[0]!.segments.length, Math.ceil(a.length / spec.segmentBytes))
    const flat = (fs: SnapshotFragment[]): Uint8Array[] => fs.flatMap(f => f.segments)
    t.true(
      flat(fa).every((x, i) => bytesEqual(x, flat(fb)[i]!)),
      'identical fragments'
    )
    const ra = await inline.assemble([fa[5]!, fa[1]!, fa[4]!, fa[3]!], 4, 2)
    const rb = await threads.assemble([fb[5]!, fb[1]!, fb[4]!, fb[3]!], 4, 2)
    t.true(bytesEqual(ra.state, a) && bytesEqual(rb.state, a))
    t.deepEqual(ra.report, rb.report)
  } finally {
    threads.stop()
  }
})

test('idle coder threads never keep a process alive: a process that codes and never calls stop() exits', async t => {
  const fixture = fileURLToPath(new URL('./fixtures/coder-without-stop.ts', import.meta.url))
  const { stdout } = await promisify(execFile)(process.execPath, [fixture], { timeout: 120_000 })
  t.is(stdout.trim(), 'coded 3 fragments')
})

test('thread coder caps: threads over maxCoderThreads and jobs over maxCoderJobs are refused before anything starts', async t => {
  t.throws(() => createThreadCoder({ threads: SNAPSHOT_LIMITS.maxCoderThreads + 1 }), { instanceOf: LimitExceededError })
  t.throws(() => createThreadCoder({ threads: 0 }), { instanceOf: InvalidArgumentError })
  const c = createThreadCoder({ threads: 1 })
  try {
    const bufs = Array.from({ length: SNAPSHOT_LIMITS.maxCoderJobs + 1 }, (_, i) => writeState(randomState(Rng.fromSeed(40 + i), 10), c.alloc(4096)))
    // Posted in one tick: no reply can free a place before the last one is asked for.
    const jobs = bufs.slice(0, -1).map(b => c.seal(b))
    await t.throwsAsync(c.seal(bufs.at(-1)!), { instanceOf: LimitExceededError })
    await Promise.all(jobs)
    t.true(bytesEqual(bufs[0]!, encodeState(randomState(Rng.fromSeed(40), 10))))
    await c.seal(bufs.at(-1)!)
  } finally {
    c.stop()
  }
})

test('coder threads take the parent Node options except those naming the main script (--input-type, -e / -p and its text)', t => {
  t.deepEqual(threadExecArgv(['--input-type=module', '-e', 'code()', '--max-old-space-size=100']), ['--max-old-space-size=100'])
  t.deepEqual(threadExecArgv(['-p', '1+1', '--eval=x', '--print=y', '--conditions=dev']), ['--conditions=dev'])
  t.deepEqual(threadExecArgv([]), [])
})
