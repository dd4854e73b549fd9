import test from 'ava'
import { readdirSync } from 'node:fs'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { ScenarioError } from '../../sim/index.ts'
import { parseTrainScenario, trainRun } from '../../sim/train-run.ts'
import { main } from '../../cli/main.ts'
import { seededRng } from '../helpers/seed.ts'

// The real Trainer (collectives, snapshots, recovery) on simulated nodes over SimNet and the
// virtual clock, with a cost model for compute. Each run also checks membership safety.

test('simulated training: a rank crashed at a seeded step is replaced from the snapshots, bit-identical to the run without faults', async t => {
  const { rng, seed } = seededRng(t, 7)
  const rank = rng.int(0, 4)
  const atStep = rng.int(2, 7)
  t.log(`crash rank ${rank} at step ${atStep}`)
  const r = await trainRun({ seed, nodes: 5, worldSize: 4, steps: 8, kills: [{ rank, atStep }], reference: true })
  t.deepEqual(r.violations, [])
  t.is(r.steps, 8)
  t.true(
    r.recoveries.some(x => x.mode === 'replace'),
    JSON.stringify(r.recoveries)
  )
  t.is(r.weightsHash, r.reference!.weightsHash)
  t.log(
    `${(r.simMs / 1000).toFixed(1)} simulated s (${(r.reference!.simMs / 1000).toFixed(1)} without the crash), ${r.stepMs!.toFixed(0)} ms per step modelled, trace ${r.traceHash.slice(0, 12)}`
  )
})

test('simulated training is deterministic: the same seed gives the same trace and weights; another seed another trace', async t => {
  const opts = { nodes: 5, worldSize: 4, steps: 5, kills: [{ rank: 2, atStep: 3 }] }
  const a = await trainRun({ seed: 21, ...opts })
  const b = await trainRun({ seed: 21, ...opts })
  const c = await trainRun({ seed: 22, ...opts })
  t.deepEqual([a.violations, b.violations, c.violations], [[], [], []])
  t.is(a.traceHash, b.traceHash)
  t.is(a.weightsHash, b.weightsHash)
  t.not(a.traceHash, c.traceHash)
})

test('simulated training: with no spare the survivors shrink and finish within 1% of the run without faults', async t => {
  const r = await trainRun({ seed: 9, nodes: 4, worldSize: 4, steps: 10, kills: [{ rank: 3, atStep: 5 }], reference: true })
  t.deepEqual(r.violations, [])
  t.true(r.recoveries.some(x => x.mode === 'shrink'))
  t.log(`held-out loss ${r.evalLoss!.toFixed(4)} vs ${r.reference!.evalLoss!.toFixed(4)} without the crash`)
})

test('the simulated invariant checker fails a run whose ranks could not finish (snapshots off, a rank lost)', async t => {
  // Without snapshots nothing can bring the lost rank back: the checker must say so.
  const r = await trainRun({ seed: 4, nodes: 5, worldSize: 4, steps: 6, snapshot: null, kills: [{ rank: 1, atStep: 3 }], limitMs: 120_000 })
  t.true(r.violations.length > 0)
  t.log(r.violations[0]!)
})

const trainDir = fileURLToPath(new URL('../../sim/scenarios/train/', import.meta.url))
// zeropp-vs-flat.json (two runs of 200 steps) has its own test: zeropp-vs-flat.test.ts.
for (const file of readdirSync(trainDir)
  .filter(f => f.endsWith('.json') && f !== 'zeropp-vs-flat.json')
  .sort()) {
  test(`training scenario ${file} passes through zeromesh sim`, async t => {
    const out: string[] = []
    const io = { out: (l: string) => out.push(l), err: (l: string) => out.push(l) }
    const code = await main(['sim', join(trainDir, file), '--quiet'], io)
    t.log(out.filter(l => /recovery|reference|invariants/.test(l)).join('\n'))
    t.is(code, 0, out.join('\n'))
    t.regex(out.join('\n'), /result: PASS/)
  })
}

test('invalid training scenarios name the field and the reason', t => {
  const base = { name: 'x', workload: 'train', nodes: 4, worldSize: 4, steps: 5 }
  const cases: Array<[unknown, RegExp]> = [
    [{ ...base, colour: 'red' }, /\(top level\): Unrecognized key: "colour"/],
    [{ ...base, worldSize: 5 }, /worldSize: is 5, more than the 4 nodes/],
    [{ ...base, kills: [{ rank: 4, atStep: 2 }] }, /kills\.0\.rank: rank 4 does not exist/],
    [{ ...base, kills: [{ rank: 1, atStep: 5 }] }, /kills\.0\.atStep/],
    [{ ...base, snapshot: '2-1' }, /snapshot: must be k\+m/]
  ]
  for (const [raw, pattern] of cases) {
    const err = t.throws(() => parseTrainScenario(raw, 'test.json'), { instanceOf: ScenarioError })
    t.regex(err.message, pattern)
  }
})
