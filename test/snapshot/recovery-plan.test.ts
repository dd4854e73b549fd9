import test from 'ava'
import { NoSnapshotError, UnrecoverableError, type FragmentLabel } from '../../snapshot/index.ts'
import { planFromLists } from '../../snapshot/recovery.ts'

const label = (version: number, index: number, over: Partial<FragmentLabel> = {}): FragmentLabel => ({
  owner: 'p0',
  rank: 0,
  epoch: 1,
  version,
  index,
  k: 2,
  m: 1,
  stateBytes: 100,
  stateChecksum: BigInt(version),
  segments: 1,
  segmentBytes: 4096,
  bodyBytes: 0,
  ...over
})

test('recovery plan from LIST replies: the newest stripe with k indices, each index from the first peer that has it', t => {
  const plan = planFromLists(
    { owner: 'p0' },
    [
      { peer: 'p1', labels: [label(9, 0), label(8, 0)] },
      { peer: 'p2', labels: [label(8, 1), label(8, 0)] },
      { peer: 'p3', labels: [label(8, 2)] }
    ],
    3
  )
  // Version 9 has only one index: version 8 (indices 0, 1, 2) is the newest recoverable.
  t.is(plan.version, 8)
  t.is(plan.source, 'list')
  t.is(plan.digests, undefined)
  t.deepEqual(
    [...plan.holders].sort((a, b) => a[0] - b[0]),
    [
      [0, 'p1'],
      [1, 'p2'],
      [2, 'p3']
    ]
  )
})

test('recovery plan from LIST replies: a requested version is the only one considered', t => {
  const replies = [
    { peer: 'p1', labels: [label(9, 0), label(8, 0)] },
    { peer: 'p2', labels: [label(9, 1), label(8, 1)] }
  ]
  t.is(planFromLists({ owner: 'p0' }, replies, 2).version, 9)
  t.is(planFromLists({ owner: 'p0', version: 8 }, replies, 2).version, 8)
  // Same version, different contents (another checksum): two stripes, neither with k indices.
  const split = [
    { peer: 'p1', labels: [label(9, 0)] },
    { peer: 'p2', labels: [label(9, 1, { stateChecksum: 77n })] }
  ]
  const err = t.throws(() => planFromLists({ owner: 'p0' }, split, 2), { instanceOf: UnrecoverableError })
  t.deepEqual(err?.missing, [1, 2])
})

test('recovery plan from LIST replies: held but too few fragments is unrecoverable; nothing held is no snapshot', t => {
  const err = t.throws(() => planFromLists({ owner: 'p0' }, [{ peer: 'p1', labels: [label(4, 1)] }], 1), { instanceOf: UnrecoverableError })
  t.deepEqual(err?.missing, [0, 2])
  t.throws(() => planFromLists({ owner: 'p0' }, [{ peer: 'p1', labels: [] }], 5), { instanceOf: NoSnapshotError, message: /any of 5 peers/ })
  t.throws(() => planFromLists({ owner: 'p0', version: 3 }, [{ peer: 'p1', labels: [label(4, 0), label(4, 1)] }], 1), { instanceOf: NoSnapshotError })
})
