// Ranks started with different settings (the house's attack: another --lr, --seed, --batch or
// --steps on one node) stop with one line naming the setting and the nodes, instead of training
// different models side by side or hanging the longer run.
import test from 'ava'
import { settingsMismatch, settingsWords } from '../../node/train/settings.ts'
import { runIdentity, type TrainConfig } from '../../node/train/config.ts'
import { base, trainMesh } from '../helpers/train-mesh.ts'

const roster = ['a', 'b', 'c'].map((id, r) => ({ id, zone: `z${r}`, host: `h${r}` }))

test('the settings words of equal configs agree; one differing setting is named with its values and nodes', t => {
  const same = [base, base, base].map(settingsWords)
  t.is(settingsMismatch(Uint32Array.from(same.flatMap(w => [...w])), roster), undefined)
  const odd = [base, { ...base, lr: 0.003 }, base].map(settingsWords)
  const why = settingsMismatch(Uint32Array.from(odd.flatMap(w => [...w])), roster)
  t.regex(why ?? '', /--lr is 0\.01 on rank 0 \(h0, zone z0\) but 0\.003 on rank 1 \(h1, zone z1\)/)
  const steps = [base, base, { ...base, steps: base.steps + 5 }].map(settingsWords)
  t.regex(settingsMismatch(Uint32Array.from(steps.flatMap(w => [...w])), roster) ?? '', /--steps is \d+ on rank 0 .* but \d+ on rank 2/)
})

test('a rank started with another --lr or --steps stops the run at once with one clear line on every rank', async t => {
  const withId = (c: TrainConfig): TrainConfig => ({ ...c, identity: runIdentity('r', c) })
  for (const [flag, change] of [
    ['--lr', { lr: base.lr * 3 }],
    ['--steps', { steps: base.steps + 4 }]
  ] as const) {
    const r = await trainMesh(2, withId({ ...base, worldSize: 2, snapshot: undefined }), {
      configOf: i => (i === 1 ? withId({ ...base, worldSize: 2, snapshot: undefined, ...change }) : {})
    })
    t.is(r.statuses.filter(s => s.role === 'done').length, 0, `${flag}: nobody trained`)
    t.true(r.errors.length >= 1)
    for (const e of r.errors) t.regex(e.message, new RegExp(`different settings: ${flag} is`), e.message)
    t.log(r.errors[0]!.message)
  }
})
