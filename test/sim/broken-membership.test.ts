import test from 'ava'
import { randomMembershipRun } from '../../sim/index.ts'

// Proof that the safety checker can fail, for each of its two checks.

// Agreement: with the majority quorum and the minority pause both switched off, random
// partitions make two sides choose different views for one epoch.
test('a membership without its quorum and minority pause is caught choosing two views for one epoch', async t => {
  let caught: { seed: number; violation: string } | undefined
  for (let seed = 1; seed <= 40 && caught === undefined; seed++) {
    const r = await randomMembershipRun(seed, { nodes: 16, faults: 8, membership: { unsafe: { quorumOfOne: true, ignoreMinority: true } } })
    const twoViews = r.violations.find(v => v.includes('] and ['))
    if (twoViews !== undefined) caught = { seed, violation: twoViews }
  }
  t.truthy(caught, 'some seed exposes two views with one epoch')
  t.log(`seed ${caught?.seed}: ${caught?.violation}`)
})

// Quorum: with the quorum switched off the leader installs a view on its own acceptance; the
// checker flags it even when nothing else conflicts (no partition, one crash).
test('a view installed without a majority of the previous view is caught', async t => {
  const r = await randomMembershipRun(3, { nodes: 7, faults: 0, membership: { unsafe: { quorumOfOne: true } } })
  t.deepEqual(r.violations, [], 'genesis still needs every member, and nothing changed the view')
  const w = await randomMembershipRun(3, { nodes: 7, faults: 4, membership: { unsafe: { quorumOfOne: true } } })
  const quorum = w.violations.find(v => v.includes('acceptors, needs'))
  t.truthy(quorum, `violations: ${w.violations.join('; ')}`)
  t.log(quorum)
})
