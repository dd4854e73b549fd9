import test, { type ExecutionContext } from 'ava'
import { seedFromEnv } from '../../core/index.ts'
import { COLLECTIVE_LIMITS } from '../../mesh/index.ts'
import type { TrainConfig } from '../../node/index.ts'
import { base } from '../helpers/train-mesh.ts'
import { simOk, simTrain, type SimTrainRun } from '../helpers/sim-train.ts'

// Zeroth-order training (--zo, node/train/zo.ts) across zones: the step's (slope, loss) pairs
// travel by the tiered all-gather, and the weights must come out the same bits whatever the
// zones are, with and without a rank killed and replaced. Runs on the simulator (the real
// membership, collectives, snapshots and trainer on SimNet), deterministic in the seed; the
// simulator puts node i in zone i mod zones, so the zones interleave in rank order.

function seedOf(t: ExecutionContext, fallback: number): number {
  const seed = seedFromEnv(fallback)
  t.log(`seed ${seed}; replay: ZEROMESH_SEED=${seed} npx ava test/node/zo-zones.test.ts --match '${t.title}'`)
  return seed
}

const zo: TrainConfig = { ...base, steps: 10, lr: 1e-4, zo: { eps: 1e-3 } }

/** Collective bytes the ranks sent across zones (every op, the whole run). */
const wanSent = (r: SimTrainRun): number => r.statuses.filter(s => s.role === 'done').reduce((a, s) => a + s.bytes.wan, 0)

test.serial('zeroth-order (--zo) across 2 and 3 zones trains the same bits as one zone, and a step crosses zones once per pair of zones', async t => {
  const seed = seedOf(t, 11)
  const one = simOk(await simTrain(4, zo, { seed, zones: 1 }))
  t.truthy(one.weightsHash)
  for (const zones of [2, 3]) {
    const run = simOk(await simTrain(4, zo, { seed, zones }))
    t.is(run.weightsHash, one.weightsHash, `${zones} zones: final weights bit-identical to one zone`)
    t.deepEqual(
      run.statuses.map(s => s.loss),
      one.statuses.map(s => s.loss)
    )
  }
  // What a step sends across zones: the difference between runs of 20 and 10 steps (the
  // model's gathers at the start and for the final evaluation are the same in both). Two
  // zones of two ranks: one message each way of the zone's two (slope, loss) pairs.
  const ten = simOk(await simTrain(4, zo, { seed, zones: 2 }))
  const twenty = simOk(await simTrain(4, { ...zo, steps: 20 }, { seed, zones: 2 }))
  const perStep = (wanSent(twenty) - wanSent(ten)) / 10
  t.log(`collective bytes across zones per step: ${perStep}`)
  t.is(perStep, 2 * (COLLECTIVE_LIMITS.headerBytes + 2 * 8))
})

test.serial(
  'zeroth-order (--zo) across zones: a killed rank is replaced from the snapshots and the run ends with the bits of a one-zone run without the kill',
  async t => {
    const seed = seedOf(t, 12)
    const cfg: TrainConfig = { ...zo, steps: 12, snapshot: { k: 2, m: 1 } }
    const clean = simOk(await simTrain(5, cfg, { seed, zones: 1 }))
    for (const zones of [2, 3]) {
      const hurt = simOk(await simTrain(5, cfg, { seed, zones, kill: { rank: 2, atStep: 7 } }))
      const ranks = hurt.statuses.filter(s => s.role === 'done')
      t.is(ranks.length, 4)
      t.true(
        ranks.flatMap(s => s.recoveries).some(r => r.mode === 'replace'),
        `${zones} zones: a spare took the rank from the snapshots`
      )
      t.is(hurt.weightsHash, clean.weightsHash, `${zones} zones: final weights bit-identical to the one-zone run without the kill`)
    }
  }
)
