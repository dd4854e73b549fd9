import test from 'ava'
import { ProtocolError } from '../../core/index.ts'
import { createFragmentStore, stripeState, encodeState } from '../../snapshot/index.ts'
import { createErasureCoder } from '../../codec/index.ts'
import { Rng } from '../../core/index.ts'
import { fragmentsFor, view7 } from './fixtures.ts'
import { memoryMesh, randomState } from './helpers.ts'

const code = (fn: () => unknown): string => {
  try {
    fn()
  } catch (err) {
    if (err instanceof ProtocolError) return err.code
    throw err
  }
  return 'ok'
}

test('duplicate fragment: a second identical put is a no-op; the same slot with other contents is refused', t => {
  const view = view7()
  const { frags, holders } = fragmentsFor(view, 0, 5)
  const store = createFragmentStore({ self: holders[1]! })
  store.setView(view)
  t.is(store.put(frags[1]!), 'stored')
  const used = store.stats().usedBytes
  t.is(store.put(frags[1]!), 'duplicate')
  t.is(store.stats().usedBytes, used)
  t.is(store.stats().duplicates, 1)
  // Same owner, version, epoch and index, but a different state (equivocation): the first stays.
  const other = fragmentsFor(view, 0, 5, { seed: 999 }).frags[1]!
  t.is(
    code(() => store.put(other)),
    'DUPLICATE_CONFLICT'
  )
  t.is(store.get('p0', 5, 1, 1)!.label.stateChecksum, frags[1]!.label.stateChecksum)
  t.is(store.stats().refused['DUPLICATE_CONFLICT'], 1)
})

test('misdirected fragment: wrong holder, wrong owner rank, or an owner not in the view is refused', t => {
  const view = view7()
  const { frags, holders } = fragmentsFor(view, 0, 5)
  // Fragment 0 belongs on holders[0]; offer it to holders[1].
  const wrong = createFragmentStore({ self: holders[1]! })
  wrong.setView(view)
  t.is(
    code(() => wrong.put(frags[0]!)),
    'MISDIRECTED'
  )
  // A label naming p0 as rank 2 (p0 is rank 0).
  const store = createFragmentStore({ self: holders[0]! })
  store.setView(view)
  t.is(
    code(() => store.put({ ...frags[0]!, label: { ...frags[0]!.label, rank: 2 } })),
    'MISDIRECTED'
  )
  t.is(
    code(() => store.put({ ...frags[0]!, label: { ...frags[0]!.label, owner: 'stranger' } })),
    'MISDIRECTED'
  )
  t.is(
    code(() => store.put({ ...frags[0]!, label: { ...frags[0]!.label, rank: 99 } })),
    'MISDIRECTED'
  )
  t.is(store.stats().fragments, 0)
  t.is(store.stats().refused['MISDIRECTED'], 3)
  t.is(store.put(frags[0]!), 'stored')
})

test('misdirected fragment over the wire: the holder refuses it and the placer is told MISDIRECTED', async t => {
  const mesh = await memoryMesh(7, { k: 3, m: 2, segmentBytes: 4096 })
  const s = randomState(Rng.fromSeed(5), 500, { step: 3, rank: 0, worldSize: 7 })
  const bytes = encodeState(s)
  const frags = stripeState(bytes, { owner: 'p0', rank: 0, epoch: 1, coder: createErasureCoder({ k: 3, m: 2 }), segmentBytes: 4096 })
  // p6 is the spare: it holds nothing of p0's stripe. Push fragment 0 to it by hand.
  const { PUT_PROTOCOL } = await import('../../snapshot/index.ts')
  const { encodeLabel } = await import('../../snapshot/index.ts')
  const stream = await mesh.nets[0]!.open('p6', PUT_PROTOCOL)
  await stream.write(encodeLabel(frags[0]!.label))
  const chunks: Uint8Array[] = []
  for await (const c of stream) chunks.push(c)
  const reply = Buffer.concat(chunks)
  t.is(reply[0], 2)
  t.is(reply.subarray(2, 2 + reply[1]!).toString(), 'MISDIRECTED')
  t.is(mesh.services[6]!.store.stats().fragments, 0)
  await mesh.close()
})

test('a fragment whose body does not match its label is refused at commit, and the reservation is freed', t => {
  const view = view7()
  const { frags, holders } = fragmentsFor(view, 0, 5)
  const store = createFragmentStore({ self: holders[2]! })
  store.setView(view)
  const f = frags[2]!
  const bad = f.segments.map(s => s.slice())
  bad[0]![60]! ^= 1
  const r = store.reserve(f.label)
  t.is(
    code(() => store.commit(r, bad)),
    'FRAGMENT_CORRUPT'
  )
  t.is(store.stats().reservedBytes, 0)
  t.is(store.stats().fragments, 0)
  t.is(store.put(f), 'stored')
})
