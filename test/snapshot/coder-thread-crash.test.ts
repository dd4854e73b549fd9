import test from 'ava'
import { Rng } from '../../core/index.ts'
import { createThreadCoder, encodeState, SnapshotCoderError, type SnapshotCoder } from '../../snapshot/index.ts'
import { bytesEqual, memoryMesh, randomState } from './helpers.ts'

const crashing = new URL('./fixtures/crashing-coder-worker.ts', import.meta.url)

test('a coder thread that crashes rejects its job with SnapshotCoderError; the next job runs on a fresh thread', async t => {
  const c = createThreadCoder({ threads: 1, entry: crashing })
  try {
    const sealed = encodeState(randomState(Rng.fromSeed(31), 5000, { step: 2 }))
    const spec = { owner: 'p0', rank: 0, epoch: 1, m: 1, segmentBytes: 8192 }
    const err = await t.throwsAsync(c.stripe(sealed, { ...spec, k: 3 }), { instanceOf: SnapshotCoderError })
    t.is(err!.name, 'SnapshotCoderError')
    const frags = await c.stripe(sealed, { ...spec, k: 2 })
    t.is(frags.length, 3)
    t.true(bytesEqual((await c.assemble([frags[2]!, frags[1]!], 2, 1)).state, sealed))
  } finally {
    c.stop()
  }
})

test('a coder thread crash fails that capture (typed), and the next capture is placed and recoverable', async t => {
  const coders: SnapshotCoder[] = []
  const coderOf = (i: number): SnapshotCoder => {
    const c = createThreadCoder({ threads: 1, ...(i === 0 ? { entry: crashing } : {}) })
    coders.push(c)
    return c
  }
  const mesh = await memoryMesh(4, { k: 2, m: 1, segmentBytes: 8192 }, { coder: coderOf })
  try {
    const owner = mesh.services[0]!
    const s = randomState(Rng.fromSeed(32), 4000, { step: 13 })
    const failed = await owner.capture(s).done
    t.is(failed.status, 'failed')
    t.is(failed.status === 'failed' ? failed.error.name : '', 'SnapshotCoderError')
    s.step = 14
    const placed = await owner.capture(s).done
    t.is(placed.status, 'placed', placed.status === 'failed' ? placed.error.message : '')
    const rec = await mesh.services[3]!.recover({ owner: 'p0' })
    t.true(bytesEqual(rec.bytes, encodeState(s)))
  } finally {
    await mesh.close()
    for (const c of coders) c.stop()
  }
})
