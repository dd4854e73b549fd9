import test from 'ava'
import { fileURLToPath } from 'node:url'
import { gptLayout, GPT_PRESETS } from '../../gpu/index.ts'
import { readTrainScenario, runTrainScenario } from '../../sim/train-run.ts'

// A world size that does not divide the parameter count: the five ranks' ZeRO shards differ
// in length by one. The held-out loss is measured on the final weights joined from the five
// shards, so it needs the joining side to use the collectives' shard layout.

const file = fileURLToPath(new URL('../../sim/scenarios/train/five-ranks.json', import.meta.url))

test('simulated training on 5 ranks (parameter count not a multiple of 5) reports the held-out loss of both runs and no violation', async t => {
  const s = readTrainScenario(file)!
  t.is(s.worldSize, 5)
  t.true(s.compareZeropp, 'the held-out loss is measured in the ZeRO++ comparison')
  // The simulator's tiny model on the bigram data (64 tokens) is GPT_PRESETS.tiny's shape.
  t.true(s.model === 'tiny' && s.data === 'bigram')
  t.not(gptLayout(GPT_PRESETS.tiny).length % 5, 0, 'the premise: 5 does not divide the parameter count')
  const r = await runTrainScenario(s)
  t.deepEqual(r.violations, [])
  t.true(r.ok)
  t.is(r.steps, s.steps)
  const z = r.zeroPP!
  t.true(Number.isFinite(z.flat.heldOutLoss), `flat ZeRO-3 held-out loss ${z.flat.heldOutLoss}`)
  t.true(Number.isFinite(z.zeroPP.heldOutLoss), `ZeRO++ held-out loss ${z.zeroPP.heldOutLoss}`)
  t.true(z.heldOutLossRelDiff! <= z.limit)
  t.log(
    `held-out loss: flat ZeRO-3 ${z.flat.heldOutLoss!.toFixed(4)}, ZeRO++ ${z.zeroPP.heldOutLoss!.toFixed(4)} (${(100 * z.heldOutLossRelDiff!).toFixed(3)}% apart)`
  )
})
