// A scenario fuzzer: random scenario files, most of them wrong in some field, some of them
// valid. Every one is either refused with a ScenarioError naming where, or runs to a report
// whose safety invariant holds; never another exception, an unbounded run or a crash.
import test from 'ava'
import type { Rng } from '../../core/index.ts'
import { parseScenario, runScenario, ScenarioError } from '../../sim/index.ts'
import { seededRng } from '../helpers/seed.ts'

/** A value that is sometimes right for a numeric field and often not. */
function num(rng: Rng, good: () => number): unknown {
  if (rng.bool(0.93)) return good()
  return [-1, 0, 1e9, 1e308, Number.NaN, 'ten', null, [], {}, 0.5, 2 ** 53][rng.int(0, 11)]
}

function node(rng: Rng, nodes: number): string {
  return `n${String(rng.int(0, rng.bool(0.9) ? nodes : nodes + 3)).padStart(3, '0')}`
}

function randomScenario(rng: Rng): Record<string, unknown> {
  const nodes = rng.int(1, 9)
  const duration = rng.int(500, 4000)
  const faultKinds = [
    () => ({ at: rng.int(0, duration + 100), crash: node(rng, nodes) }),
    () => ({ at: rng.int(0, duration), restart: node(rng, nodes), state: rng.bool(0.5) ? 'kept' : 'fresh' }),
    () => ({ at: rng.int(0, duration), pause: node(rng, nodes), forMs: num(rng, () => rng.int(1, 2000)) }),
    () => ({ at: rng.int(0, duration), partition: [[node(rng, nodes)], ['*']] }),
    () => ({ at: rng.int(0, duration), heal: true }),
    () => ({ at: rng.int(0, duration), slow: node(rng, nodes), factor: num(rng, () => 1 + rng.float() * 10) }),
    () => (rng.bool(0.3) ? { at: rng.int(0, duration), bogus: 1 } : { at: rng.int(0, duration), heal: true })
  ]
  const s: Record<string, unknown> = {
    name: rng.bool(0.95) ? `fuzz-${rng.int(0, 1e6)}` : '',
    nodes: num(rng, () => nodes),
    durationMs: num(rng, () => duration),
    seed: rng.int(0, 1000),
    faults: Array.from({ length: rng.int(0, 4) }, () => faultKinds[rng.int(0, faultKinds.length)]!())
  }
  if (rng.bool(0.3)) s['membership'] = { heartbeatMs: num(rng, () => rng.int(50, 500)), expect: num(rng, () => rng.int(1, nodes + 1)) }
  if (rng.bool(0.3))
    s['random'] = { crashPerS: num(rng, () => rng.float()), pausePerS: num(rng, () => rng.float()), faultMs: num(rng, () => rng.int(100, 1000)) }
  if (rng.bool(0.2)) s['assertions'] = { convergeWithinMs: num(rng, () => rng.int(200, 2000)) }
  if (rng.bool(0.05)) s['workload'] = rng.bool(0.5) ? 'mine' : 7
  if (rng.bool(0.05)) s['colour'] = 'red'
  return s
}

test('fuzzed scenario files are refused with a named field or run safely to a report', async t => {
  t.timeout(120_000)
  const { rng } = seededRng(t, 4242)
  let refused = 0
  let ran = 0
  const unsafe: string[] = []
  for (let i = 0; i < 150; i++) {
    const raw = randomScenario(rng)
    let s
    try {
      s = parseScenario(raw, 'fuzz.json')
    } catch (err) {
      t.true(err instanceof ScenarioError, `case ${i}: ${JSON.stringify(raw)} threw ${(err as Error).name}: ${(err as Error).message}`)
      t.regex((err as Error).message, /^fuzz\.json: /, `case ${i}`)
      refused++
      continue
    }
    const r = await runScenario(s)
    t.true(r.durationMs > 0 && r.events > 0, `case ${i}: a report`)
    if (r.invariants.safety.violations.length > 0) unsafe.push(`case ${i}: ${JSON.stringify(raw)}: ${r.invariants.safety.violations[0]}`)
    ran++
  }
  t.log(`${refused} refused, ${ran} ran`)
  t.true(refused > 0 && ran > 0, 'both kinds occurred')
  t.deepEqual(unsafe, [], 'the safety invariant held on every run')
})
