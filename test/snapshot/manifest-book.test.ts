import test from 'ava'
import type { View } from '../../mesh/index.ts'
import type { Manifest, RecoveryPoint } from '../../snapshot/index.ts'
import { commonVersion, createManifestBook } from '../../snapshot/manifest-book.ts'
import { topology } from './helpers.ts'

const mf = (owner: string, version: number, epoch = 1): Manifest => ({
  owner,
  rank: 0,
  epoch,
  version,
  k: 2,
  m: 1,
  stateBytes: 100,
  stateChecksum: 1n,
  holders: ['a', 'b', 'c'],
  digests: [1n, 2n, 3n]
})

function fakeStore(): {
  complete: string[]
  points: RecoveryPoint[]
  markComplete: (o: string, v: number, e: number) => void
  setRecoveryPoint: (rp: RecoveryPoint) => void
} {
  const complete: string[] = []
  const points: RecoveryPoint[] = []
  return {
    complete,
    points,
    markComplete: (o, v, e) => {
      complete.push(`${o}@${v}/${e}`)
    },
    setRecoveryPoint: rp => {
      points.push({ ...rp })
    }
  }
}

test('common version: the newest version every member with manifests has under the epoch; spares do not count', t => {
  const view: View = { epoch: 2, members: topology(3) }
  const known = new Map([
    ['p0', [mf('p0', 6, 2), mf('p0', 5, 2)]],
    ['p1', [mf('p1', 5, 2), mf('p1', 6, 1)]]
  ])
  t.is(
    commonVersion(view, o => known.get(o)),
    5
  )
  known.set('p2', [mf('p2', 4, 2)])
  t.is(
    commonVersion(view, o => known.get(o)),
    undefined
  )
  t.is(
    commonVersion(view, () => undefined),
    undefined
  )
})

test('manifest book: a manifest marks its version complete and moves the recovery point once every member has it', t => {
  let view: View | undefined
  const store = fakeStore()
  const book = createManifestBook({ view: () => view, store })
  book.apply(mf('p0', 3))
  t.deepEqual(store.complete, ['p0@3/1'])
  t.is(book.recoveryPoint(), undefined, 'no view yet')
  view = { epoch: 1, members: topology(2) }
  book.update()
  t.deepEqual(book.recoveryPoint(), { version: 3, epoch: 1 }, 'p1 placed nothing: only p0 counts')
  book.apply(mf('p1', 4))
  t.deepEqual(book.recoveryPoint(), { version: 3, epoch: 1 }, 'no version in common: the point stays')
  book.apply(mf('p0', 4))
  t.deepEqual(book.recoveryPoint(), { version: 4, epoch: 1 })
  t.deepEqual(store.points, [
    { version: 3, epoch: 1 },
    { version: 4, epoch: 1 }
  ])
  // A repeated manifest changes nothing; lists are newest first and copies.
  book.apply(mf('p0', 4))
  t.deepEqual(
    book.list('p0').map(x => x.version),
    [4, 3]
  )
  book.list('p0').pop()
  t.is(book.list('p0').length, 2)
  t.is(book.newest('p0')?.version, 4)
  t.is(book.newest('p0', 3)?.version, 3)
  t.is(book.newest('p0', 3, 2), undefined)
  book.forget('p0')
  t.deepEqual(book.list('p0'), [])
})

test('manifest book: past the per-owner cap the oldest manifest goes, unless it is the recovery point (stores pin it; a recovery offers it)', t => {
  const view: View = { epoch: 1, members: topology(2) }
  const book = createManifestBook({ view: () => view, store: fakeStore() })
  book.apply(mf('p0', 8))
  book.apply(mf('p1', 8))
  t.deepEqual(book.recoveryPoint(), { version: 8, epoch: 1 })
  // p0 goes on placing while p1 lags: 9, 10, 11 would push 8 out of a list of three.
  for (const v of [9, 10, 11]) book.apply(mf('p0', v))
  t.deepEqual(
    book.list('p0').map(x => x.version),
    [11, 10, 8]
  )
  // Once the point moves, the old one may go.
  book.apply(mf('p1', 11))
  t.deepEqual(book.recoveryPoint(), { version: 11, epoch: 1 })
  book.apply(mf('p0', 12))
  t.deepEqual(
    book.list('p0').map(x => x.version),
    [12, 11, 10]
  )
})
