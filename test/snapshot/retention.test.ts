import test from 'ava'
import { SNAPSHOT_LIMITS } from '../../snapshot/index.ts'
import { evictionVictim, isExpired, type HeldVersion } from '../../snapshot/retention.ts'
import { fragmentsFor, view7 } from './fixtures.ts'
import { createFragmentStore } from '../../snapshot/index.ts'

const held = (version: number, epoch: number, complete = true): HeldVersion => ({ version, epoch, complete })

test('retention: a member drops what is below the recovery point, in version or epoch', t => {
  const rp = { version: 10, epoch: 3 }
  const member = { departed: false, newestEpoch: 3 }
  t.false(isExpired(held(10, 3), member, rp))
  t.false(isExpired(held(12, 3), member, rp))
  t.true(isExpired(held(9, 3), member, rp))
  t.true(isExpired(held(10, 2), member, rp))
  t.true(isExpired(held(12, 2), member, rp))
})

test('retention: a departed owner keeps everything until its newest epoch is maxDepartedEpochs behind', t => {
  const last = 5
  const departed = { departed: true, newestEpoch: last }
  t.false(isExpired(held(1, 1), departed, { version: 99, epoch: last + SNAPSHOT_LIMITS.maxDepartedEpochs }))
  t.true(isExpired(held(1, 1), departed, { version: 99, epoch: last + SNAPSHOT_LIMITS.maxDepartedEpochs + 1 }))
  // The rule looks at the owner's newest epoch, not the entry's own.
  t.false(isExpired(held(1, 1), { departed: true, newestEpoch: 9 }, { version: 99, epoch: 10 }))
})

test('eviction victim: the oldest older than the newcomer, never the newest complete or the recovery point', t => {
  const entries = [held(7, 1), held(5, 1), held(6, 1, false)]
  t.deepEqual(evictionVictim(entries, undefined, 8), held(5, 1))
  // 5 is pinned as the recovery point: 6 (incomplete) goes next; 7, the newest complete, stays.
  t.deepEqual(evictionVictim(entries, { version: 5, epoch: 1 }, 8), held(6, 1, false))
  t.is(evictionVictim([held(7, 1), held(5, 1)], { version: 5, epoch: 1 }, 8), undefined)
  // Nothing older than the newcomer: the newcomer is the stale one.
  t.is(evictionVictim(entries, undefined, 5), undefined)
  // The same version under an older epoch sorts first.
  t.deepEqual(evictionVictim([held(6, 2), held(6, 1), held(9, 2)], undefined, 10), held(6, 1))
  // The owner rolled back to 1 (the recovery point) and places 2 again under epoch 2: the versions
  // its abandoned steps left under epoch 1 go, the oldest first; under the same epoch, 2 is stale.
  const rolledBack = [held(1, 1), held(4, 1), held(6, 1)]
  t.deepEqual(evictionVictim(rolledBack, { version: 1, epoch: 1 }, 2, 2), held(4, 1))
  t.is(evictionVictim(rolledBack, { version: 1, epoch: 1 }, 2, 1), undefined)
})

test('store retention: a full owner evicts its oldest version for a newer one and refuses an older one', t => {
  const view = view7()
  const holder = fragmentsFor(view, 0, 1).holders[0]!
  const store = createFragmentStore({ self: holder })
  store.setView(view)
  const steps = Array.from({ length: SNAPSHOT_LIMITS.maxVersionsPerOwner }, (_, i) => 10 + i)
  for (const step of steps) t.is(store.put(fragmentsFor(view, 0, step).frags[0]!), 'stored')
  t.is(store.put(fragmentsFor(view, 0, 99).frags[0]!), 'stored')
  t.is(store.get('p0', 10, 1, 0), undefined, 'the oldest version was evicted')
  t.is(store.stats().evicted, 1)
  t.throws(() => store.put(fragmentsFor(view, 0, 5).frags[0]!), { message: /newer or pinned/ })
  t.is(store.stats().refused['STALE_VERSION'], 1)
})
