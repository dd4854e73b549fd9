import test from 'ava'
import { randomMembershipRun } from '../../sim/index.ts'

const opts = { nodes: 8, faults: 8, keepTrace: true }

test('the same seed gives the same trace, byte for byte; different seeds differ', async t => {
  const a = await randomMembershipRun(42, opts)
  const b = await randomMembershipRun(42, opts)
  t.is(a.traceHash, b.traceHash)
  t.deepEqual(a.trace, b.trace, 'identical trace lines')
  t.true(a.events > 500, `a real run (${a.events} events)`)
  const c = await randomMembershipRun(43, opts)
  t.not(c.traceHash, a.traceHash)
  t.notDeepEqual(c.faults, a.faults)
})
