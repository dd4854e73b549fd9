import test from 'ava'
import { checksum64 } from '../../codec/index.ts'
import { ProtocolError, Rng } from '../../core/index.ts'
import { encodeState, placeStripe, UnrecoverableError } from '../../snapshot/index.ts'
import { bytesEqual, memoryMesh, randomState } from './helpers.ts'

const setup = async (seed: number) => {
  const mesh = await memoryMesh(7, { k: 3, m: 2, segmentBytes: 8 * 1024 })
  const state = randomState(Rng.fromSeed(seed), 5000, { step: 6, rank: 0, worldSize: 7 })
  const out = await mesh.services[0]!.capture(state).done
  if (out.status !== 'placed') throw new Error('placement failed')
  const holders = placeStripe(mesh.view, 0, 3, 2)
  const svcOf = (id: string) => mesh.services[mesh.nets.findIndex(n => n.self.id === id)]!
  return { mesh, state, holders, svcOf }
}

test('bit rot in a held fragment: detected by checksum, treated as an erasure, reported', async t => {
  const { mesh, state, holders, svcOf } = await setup(1)
  t.true(svcOf(holders[0]!).store.corruptForTest('p0', 6, 1, 0))
  const rec = await mesh.services[6]!.recover({ owner: 'p0' })
  t.true(bytesEqual(rec.bytes, encodeState(state)))
  t.deepEqual(
    rec.report.corrupt.map(x => x.index),
    [0]
  )
  t.regex(rec.report.corrupt[0]!.reason, /FRAGMENT_CORRUPT/)
  t.false(rec.report.used.some(x => x.index === 0))
  await mesh.close()
})

test('a re-sealed (well-formed but changed) fragment is caught by the manifest digest', async t => {
  const { mesh, state, holders, svcOf } = await setup(2)
  const f = svcOf(holders[1]!).store.get('p0', 6, 1, 1)!
  // Change a body byte and fix both ZMFG checksums, as a lying holder would.
  const seg = f.segments[0]!
  seg[100]! ^= 0xff
  const v = new DataView(seg.buffer, seg.byteOffset, 48)
  v.setBigUint64(32, checksum64(seg.subarray(48)), true)
  v.setBigUint64(40, checksum64(seg.subarray(0, 40)), true)
  const rec = await mesh.services[6]!.recover({ owner: 'p0' })
  t.true(bytesEqual(rec.bytes, encodeState(state)))
  t.deepEqual(
    rec.report.corrupt.map(x => x.index),
    [1]
  )
  t.regex(rec.report.corrupt[0]!.reason, /FRAGMENT_HASH/)
  // Without the manifest (a node that missed the gossip), the lie cannot become state either:
  // the rebuilt payload fails its checksum, or the liar's fragment is not needed.
  mesh.services[5]!.forget('p0')
  try {
    const r2 = await mesh.services[5]!.recover({ owner: 'p0' })
    t.true(bytesEqual(r2.bytes, encodeState(state)))
  } catch (err) {
    t.true(err instanceof ProtocolError, String(err))
  }
  await mesh.close()
})

test('more than m corrupt fragments: UnrecoverableError lists them as corrupt', async t => {
  const { mesh, holders, svcOf } = await setup(3)
  for (const i of [0, 2, 4]) t.true(svcOf(holders[i]!).store.corruptForTest('p0', 6, 1, i))
  const err = await t.throwsAsync(mesh.services[6]!.recover({ owner: 'p0' }), { instanceOf: UnrecoverableError })
  t.deepEqual(err!.corrupt, [0, 2, 4])
  t.deepEqual(err!.missing, [])
  t.is(err!.version, 6)
  await mesh.close()
})
