import test from 'ava'
import { randomMembershipRun } from '../../sim/index.ts'

// Proof that the safety checker can fail: with the majority quorum and the minority pause
// both switched off, random partitions make two sides choose different views for one epoch.
test('a membership without its quorum and minority pause is caught by the invariant checker', async t => {
  let caught: { seed: number, violation: string } | undefined
  for (let seed = 1; seed <= 40 && caught === undefined; seed++) {
    const r = await randomMembershipRun(seed, { nodes: 16, faults: 8, membership: { unsafe: { quorumOfOne: true, ignoreMinority: true } } })
    if (r.violations.length > 0) caught = { seed, violation: r.violations[0]! }
  }
  t.truthy(caught, 'some seed exposes the broken variant')
  t.log(`seed ${caught?.seed}: ${caught?.violation}`)
})
