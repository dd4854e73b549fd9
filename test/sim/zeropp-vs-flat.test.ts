import test from 'ava'
import { mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { seedFromEnv } from '../../core/index.ts'
import { ScenarioError } from '../../sim/index.ts'
import { parseTrainScenario, readTrainScenario, trainRun, type TrainRunResult } from '../../sim/train-run.ts'
import { main } from '../../cli/main.ts'

// A tiny model trained a few hundred steps with flat ZeRO-3 and with ZeRO++ on the
// simulator (the real Trainer on every node, over SimNet); the ZeRO++ held-out loss within 1%
// of the unquantized run's, and both in the report. test/collective/zero-training.test.ts
// holds the same bound for the collectives alone, on the in-memory net.

const file = fileURLToPath(new URL('../../sim/scenarios/train/zeropp-vs-flat.json', import.meta.url))

test('zeromesh sim zeropp-vs-flat: ZeRO++ ends within 1% of flat ZeRO-3 held-out loss, and the report carries both', async t => {
  const scenario = readTrainScenario(file)!
  t.true(scenario.compareZeropp && scenario.steps >= 200 && scenario.zones >= 2 && scenario.model === 'tiny')
  const seed = seedFromEnv(scenario.seed)
  t.log(`seed ${seed}; replay: ZEROMESH_SEED=${seed} npx ava --match '${t.title}' (or npx zeromesh sim sim/scenarios/train/zeropp-vs-flat.json --seed ${seed})`)
  const tmp = mkdtempSync(join(tmpdir(), 'zm-zeropp-'))
  try {
    const out: string[] = []
    const io = { out: (l: string) => out.push(l), err: (l: string) => out.push(l) }
    const report = join(tmp, 'r.json')
    const t0 = performance.now()
    const code = await main(['sim', file, '--seed', String(seed), '--report', report, '--quiet'], io)
    const wallS = (performance.now() - t0) / 1000
    const text = out.join('\n')
    const r = JSON.parse(readFileSync(report, 'utf8')) as TrainRunResult & { ok: boolean }
    const z = r.zeroPP!
    const flat = z.flat.heldOutLoss!
    const zpp = z.zeroPP.heldOutLoss!
    const rel = Math.abs(zpp - flat) / flat
    t.log(
      `${scenario.steps} steps: flat ZeRO-3 held-out loss ${flat.toFixed(4)}, ZeRO++ ${zpp.toFixed(4)}, relative difference ${(100 * rel).toFixed(3)}% (${wallS.toFixed(1)} s wall)`
    )
    t.log(`cross-zone bytes: flat ${JSON.stringify(z.flat.crossZoneBytes)}, ZeRO++ ${JSON.stringify(z.zeroPP.crossZoneBytes)}`)
    t.is(code, 0, text)
    t.deepEqual(r.violations, [])
    t.is(r.seed, seed)
    t.is(r.steps, scenario.steps)

    // Both runs trained (well below a uniform guess, ln 64 = 4.16) and both are in the report.
    for (const run of [z.flat, z.zeroPP]) {
      t.true(run.heldOutLoss! < Math.log(64) - 1.5, `held-out loss ${run.heldOutLoss}`)
      t.is(typeof run.evalLoss, 'number')
      t.regex(run.traceHash, /^[0-9a-f]{16,}$/)
    }
    t.not(z.flat.weightsHash, z.zeroPP.weightsHash, 'the two runs are different algorithms')
    t.is(z.heldOutLossRelDiff, rel)
    t.is(z.limit, 0.01)
    t.true(rel < 0.01, `ZeRO++ held-out loss ${zpp} vs flat ${flat}: ${(100 * rel).toFixed(3)}%`)

    // Traffic across zones, read from the collective message headers: the tap sees flat
    // ZeRO-3's f32 weight gathers; ZeRO++'s forward goes int8 (qwZ) and its gradients int4
    // (qgZ) across zones, while its backward gathers (hpZ) stay inside each zone.
    t.true((z.flat.crossZoneBytes['allGather/f32'] ?? 0) > 0, JSON.stringify(z.flat.crossZoneBytes))
    t.true((z.flat.crossZoneBytes['reduceScatter/f32'] ?? 0) > 0)
    t.true((z.zeroPP.crossZoneBytes['allGather/q8'] ?? 0) > 0, JSON.stringify(z.zeroPP.crossZoneBytes))
    t.true((z.zeroPP.crossZoneBytes['hierReduceScatter/q4'] ?? 0) > 0)
    t.is(z.zeroPP.crossZoneBytes['allGather/f32'], undefined)
    t.is(z.zeroPP.crossZoneBytes['unparsed'], undefined)
    t.is(z.backwardWeightCrossZoneBytes, 0)
    t.true(z.zeroPP.sentBytes.wan < z.flat.sentBytes.wan / 4, `cross-zone bytes: ZeRO++ ${z.zeroPP.sentBytes.wan}, flat ${z.flat.sentBytes.wan}`)
    // The tap misses nothing: what the trainers counted across zones, less what it saw, is the
    // final evaluation's f32 gather alone (left out by the tap), the same in both runs.
    const untapped = (run: typeof z.flat): number => run.sentBytes.wan - Object.values(run.crossZoneBytes).reduce((a, b) => a + b, 0)
    t.true(untapped(z.flat) > 0)
    t.is(untapped(z.zeroPP), untapped(z.flat))

    // The human report names both losses and the difference.
    t.regex(text, new RegExp(`flat ZeRO-3 +loss [0-9.]+, held-out loss ${flat.toFixed(4)}`))
    t.regex(text, new RegExp(`ZeRO\\+\\+ +loss [0-9.]+, held-out loss ${zpp.toFixed(4)}`))
    t.regex(text, new RegExp(`held-out loss difference ${(100 * rel).toFixed(3)}% \\(limit 1%\\); backward weight bytes across zones with hpZ: 0`))
    t.regex(text, /result: PASS/)
  } finally {
    rmSync(tmp, { recursive: true, force: true })
  }
})

test('the runs of a comparison are the plain runs: counting cross-zone bytes changes no trace', async t => {
  const o = { seed: 3, nodes: 4, worldSize: 4, steps: 6, zones: 2, model: 'tiny' as const, data: 'bigram' as const, lr: 1e-3, snapshot: null }
  const c = await trainRun({ ...o, compareZeroPP: true })
  const flat = await trainRun({ ...o, zeroPP: false })
  const zpp = await trainRun({ ...o, zeroPP: true })
  t.deepEqual([c.violations, flat.violations, zpp.violations], [[], [], []])
  t.is(c.zeroPP!.flat.traceHash, flat.traceHash)
  t.is(c.zeroPP!.flat.weightsHash, flat.weightsHash)
  t.is(c.zeroPP!.zeroPP.traceHash, zpp.traceHash)
  t.is(c.traceHash, zpp.traceHash)
  t.is(c.zeroPP!.zeroPP.weightsHash, zpp.weightsHash)
  await t.throwsAsync(trainRun({ ...o, compareZeroPP: true, kills: [{ rank: 1, atStep: 2 }] }), { name: 'InvalidArgumentError' })
})

test('compareZeropp scenarios are checked: no faults, no zeropp, two zones or more', t => {
  const base = { name: 'x', workload: 'train', nodes: 4, worldSize: 4, steps: 5, compareZeropp: true }
  t.notThrows(() => parseTrainScenario(base))
  const cases: Array<[unknown, RegExp]> = [
    [{ ...base, zeropp: true }, /zeropp: compareZeropp runs both/],
    [{ ...base, kills: [{ rank: 1, atStep: 2 }] }, /kills: compareZeropp compares the algorithms without faults/],
    [{ ...base, zones: 1 }, /zones: is 1; compareZeropp needs 2 or more/],
    [{ ...base, model: 'huge' }, /model: /],
    [{ ...base, data: 'wiki' }, /data: /],
    [{ ...base, lr: 0 }, /lr: /]
  ]
  for (const [raw, pattern] of cases) {
    const err = t.throws(() => parseTrainScenario(raw, 'test.json'), { instanceOf: ScenarioError })
    t.regex(err.message, pattern)
  }
})
