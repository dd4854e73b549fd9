// Ranks started with different settings (the house's attack: another --lr, --seed, --batch or
// --steps on one node) stop with one line naming the setting and the nodes, instead of training
// different models side by side or hanging the longer run.
import test from 'ava'
import { agreedNonce, settingsMismatch, settingsWords } from '../../node/train/settings.ts'
import { runIdentity, validateTrainConfig, type TrainConfig } from '../../node/train/config.ts'
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

test('the optimizer is a setting (word 0 AdamW, 1 Lion, 2 8-bit AdamW, 3 8-bit Lion) and part of the run identity', t => {
  const optimizers = ['adamw', 'lion', 'adamw8bit', 'lion8bit'] as const
  const words = optimizers.map(o => settingsWords({ ...base, optimizer: o }))
  // The one word that differs between them (base has no identity, so only the optimizer's).
  const at = words[0]!.findIndex((w, i) => w !== words[2]![i])
  t.is(words[0]!.filter((w, i) => w !== words[2]![i]).length, 1)
  t.deepEqual(
    words.map(w => w[at]),
    [0, 1, 2, 3]
  )
  const odd = [base, base, { ...base, optimizer: 'adamw8bit' as const }].map(settingsWords)
  t.regex(settingsMismatch(Uint32Array.from(odd.flatMap(w => [...w])), roster) ?? '', /--optimizer is adamw on rank 0 .* but adamw8bit on rank 2/)
  const lion = [
    { ...base, optimizer: 'lion' as const },
    { ...base, optimizer: 'lion' as const },
    { ...base, optimizer: 'lion8bit' as const }
  ].map(settingsWords)
  t.regex(settingsMismatch(Uint32Array.from(lion.flatMap(w => [...w])), roster) ?? '', /--optimizer is lion on rank 0 .* but lion8bit on rank 2/)
  const ids = optimizers.map(o => Buffer.from(runIdentity('r', { ...base, optimizer: o })).toString('hex'))
  t.is(new Set(ids).size, 4)
  t.is(ids[0], Buffer.from(runIdentity('r', base)).toString('hex'), 'AdamW runs keep the identity they had without the option')
})

test('--zo is a setting (with its ε) and part of the run identity; it refuses ZeRO++, the DiLoCo tier, growth and another optimizer', t => {
  const zo: TrainConfig = { ...base, zo: { eps: 1e-3 } }
  const odd = [base, zo, base].map(settingsWords)
  t.regex(settingsMismatch(Uint32Array.from(odd.flatMap(w => [...w])), roster) ?? '', /--zo \(--zo-eps\) is off on rank 0 .* but on \(ε 0\.001\) on rank 1/)
  const eps = [zo, { ...zo, zo: { eps: 1e-2 } }, zo].map(settingsWords)
  t.regex(settingsMismatch(Uint32Array.from(eps.flatMap(w => [...w])), roster) ?? '', /ε 0\.001\) on rank 0 .* but on \(ε 0\.01\) on rank 1/)
  const ids = [base, zo, { ...zo, zo: { eps: 1e-2 } }].map(c => Buffer.from(runIdentity('r', c)).toString('hex'))
  t.is(new Set(ids).size, 3)
  const corpus = { source: 'zeros', train: new Uint16Array(4096), val: new Uint16Array(256), vocabSize: 256 }
  validateTrainConfig(zo, corpus)
  for (const [change, pattern] of [
    [{ zeroPP: true }, /--zeropp/],
    [{ outer: { every: 4, zones: 2, quant: 'int8', streaming: false, lr: 0.7, momentum: 0.9 } }, /DiLoCo/],
    [{ maxWorldSize: 8 }, /--max-world-size/],
    [{ optimizer: 'lion' }, /--zo replaces the optimizer/],
    [{ zo: { eps: 0 } }, /--zo-eps/],
    [{ zo: { eps: Number.NaN } }, /--zo-eps/],
    [{ offload: {} }, /--offload cpu/]
  ] as const) {
    t.throws(() => validateTrainConfig({ ...zo, ...change } as TrainConfig, corpus), { message: pattern })
  }
})

test('--offload is a setting (a replacement must replay where the lost rank ran its optimizer), not part of the run identity', t => {
  const off: TrainConfig = { ...base, offload: { threads: 2 } }
  const odd = [base, base, off].map(settingsWords)
  t.regex(settingsMismatch(Uint32Array.from(odd.flatMap(w => [...w])), roster) ?? '', /--offload is none on rank 0 .* but cpu on rank 2/)
  // The threads are this node's business: they change no bit.
  t.is(settingsMismatch(Uint32Array.from([off, { ...off, offload: {} }, off].flatMap(c => [...settingsWords(c)])), roster), undefined)
  t.is(Buffer.from(runIdentity('r', off)).toString('hex'), Buffer.from(runIdentity('r', base)).toString('hex'))
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

test('the run nonce: the one the ranks that hold it share, else rank 0 proposal; two launches are named', t => {
  // Per rank: its settings words, then a flag (1: it holds the run's nonce) and the nonce's 4 words.
  const words = (held: boolean, fill: number): number[] => [...settingsWords(base), held ? 1 : 0, ...new Uint32Array(new Uint8Array(16).fill(fill).buffer)]
  const gather = (...ranks: Array<[boolean, number]>): Uint32Array => Uint32Array.from(ranks.flatMap(([h, f]) => words(h, f)))
  t.deepEqual(agreedNonce(gather([false, 7], [false, 8], [false, 9]), roster), new Uint8Array(16).fill(7), "a run's first roster: rank 0's proposal")
  t.deepEqual(agreedNonce(gather([false, 7], [true, 3], [true, 3]), roster), new Uint8Array(16).fill(3), "a spare at rank 0 takes the run's")
  const e = t.throws(() => agreedNonce(gather([true, 3], [false, 8], [true, 4]), roster))
  t.regex(e.message, /different launches of this run: rank 0 \(h0, zone z0, launch 03030303\) but rank 2 \(h2, zone z2, launch 04040404\)/)
})
