import test from 'ava'
import { CpuBackend, Gpt, gptLayout, initGptParams } from '../../gpu/index.ts'
import { batchFor, decaySegments, type TrainConfig, type TrainStatus } from '../../node/index.ts'
import { PhaseTimes } from '../../node/train/step.ts'
import { seededRng } from '../helpers/seed.ts'
import { base, corpus, model, ok, trainMesh as trainMeshAll, type MeshOptions, type MeshRun } from '../helpers/train-mesh.ts'

/** A run whose every surviving node must succeed. */
const trainMesh = async (n: number, cfg: TrainConfig, opts?: MeshOptions): Promise<MeshRun> => ok(await trainMeshAll(n, cfg, opts))

test('four ranks train a GPT with flat ZeRO-3 on an in-memory mesh: loss falls, all ranks agree', async t => {
  const first = await trainMesh(4, { ...base, steps: 1 })
  const res = await trainMesh(4, base)
  const ranks = res.statuses
  for (const r of ranks) t.is(r.role, 'done')
  t.deepEqual(ranks.map(r => r.rank).sort(), [0, 1, 2, 3])
  t.is(new Set(ranks.map(r => r.loss)).size, 1, 'every rank reports the same mean loss')
  t.log(`loss ${first.statuses[0]!.loss!.toFixed(3)} -> ${ranks[0]!.loss!.toFixed(3)} after ${base.steps} steps`)
  t.true(ranks[0]!.loss! < first.statuses[0]!.loss! * 0.7, 'the loss fell')
  t.true(
    ranks.every(r => r.bytes.zone + r.bytes.wan + r.bytes.host > 0),
    'bytes are counted'
  )
})

test('ZeRO++ trains to within a few percent of flat ZeRO-3 and sends fewer cross-zone bytes', async t => {
  const flat = await trainMesh(4, { ...base, steps: 20 })
  const pp = await trainMesh(4, { ...base, steps: 20, zeroPP: true })
  const lf = flat.statuses[0]!.loss!
  const lp = pp.statuses[0]!.loss!
  t.log(`flat ${lf.toFixed(4)}, ZeRO++ ${lp.toFixed(4)}`)
  t.true(Math.abs(lp - lf) / lf < 0.05)
  const wan = (rs: TrainStatus[]): number => rs.reduce((a, r) => a + r.bytes.wan, 0)
  t.log(`cross-zone bytes: flat ${wan(flat.statuses)}, ZeRO++ ${wan(pp.statuses)}`)
  t.true(wan(pp.statuses) < wan(flat.statuses))
})

test('replace: a rank killed mid-run is taken over by the spare from the erasure-coded snapshots, bit-identically', async t => {
  const { rng, seed } = seededRng(t, 11)
  const cfg: TrainConfig = { ...base, steps: 12, snapshot: { k: 2, m: 1 } }
  const clean = await trainMesh(5, cfg)
  const rank = rng.int(0, 4)
  const atStep = rng.int(2, cfg.steps - 2)
  t.log(`seed ${seed}: killing rank ${rank} at step ${atStep}`)
  const hurt = await trainMesh(5, cfg, { kill: { rank, atStep } })
  const ranks = hurt.statuses.filter(s => s.role === 'done')
  t.is(ranks.length, 4, 'four ranks finished, one of them the former spare')
  const rec = ranks.flatMap(s => s.recoveries)
  t.true(rec.length > 0 && rec.every(r => r.mode === 'replace'), JSON.stringify(rec))
  t.log(`recovered from step ${rec[0]!.fromStep} in ${rec[0]!.ms} ms`)
  t.is(Buffer.compare(Buffer.from(hurt.params.buffer), Buffer.from(clean.params.buffer)), 0, 'final weights are bit-identical to the run without the kill')
})

test('snapshots every 4 steps: a rank killed between snapshots rolls back further and still ends bit-identical', async t => {
  const cfg: TrainConfig = { ...base, steps: 12, snapshot: { k: 2, m: 1, every: 4 } }
  const clean = await trainMesh(5, { ...cfg, snapshot: { k: 2, m: 1 } })
  const hurt = await trainMesh(5, cfg, { kill: { rank: 1, atStep: 7 } })
  const ranks = hurt.statuses.filter(s => s.role === 'done')
  t.is(ranks.length, 4)
  const rec = ranks.flatMap(s => s.recoveries)
  t.true(rec.length > 0 && rec.every(r => r.mode === 'replace'), JSON.stringify(rec))
  // Snapshots exist after steps 1 (the session's first), 4, 8 and 12 only.
  t.log(`killed at step 7, recovered from step ${rec[0]!.fromStep}`)
  t.true([1, 4].includes(rec[0]!.fromStep), `rolled back to step ${rec[0]!.fromStep}`)
  t.is(
    Buffer.compare(Buffer.from(hurt.params.buffer), Buffer.from(clean.params.buffer)),
    0,
    'final weights are bit-identical to the run snapshotting every step, without the kill'
  )
})

test('shrink: with no spare, the survivors rebuild the lost shard from the snapshots and finish; eval loss within 1%', async t => {
  const cfg: TrainConfig = { ...base, steps: 16, snapshot: { k: 2, m: 1 } }
  const clean = await trainMesh(4, cfg)
  const hurt = await trainMesh(4, cfg, { kill: { rank: 2, atStep: 8 } })
  const ranks = hurt.statuses.filter(s => s.role === 'done')
  t.is(ranks.length, 3)
  t.deepEqual(ranks.map(r => r.rank).sort(), [0, 1, 2], 'the survivors are re-ranked 0..2')
  t.true(ranks.every(r => r.recoveries.some(x => x.mode === 'shrink')))
  const a = clean.statuses[0]!.evalLoss!
  const b = ranks[0]!.evalLoss!
  t.log(`eval loss: no failure ${a.toFixed(4)}, shrunk to 3 ranks at step 8 ${b.toFixed(4)} (${((100 * Math.abs(b - a)) / a).toFixed(2)}%)`)
  t.true(Math.abs(b - a) / a < 0.01)
})

test('decay segments cover a shard, merging neighbours with the same decay flag', t => {
  const layout = gptLayout(model)
  const all = decaySegments(layout, 0, layout.length)
  t.is(
    all.reduce((a, s) => a + s.length, 0),
    layout.length
  )
  t.true(
    all.every((s, i) => i === 0 || all[i - 1]!.decay !== s.decay),
    'neighbours differ'
  )
  const part = decaySegments(layout, 100, 1000)
  t.is(part[0]!.start, 100)
  t.is(
    part.reduce((a, s) => a + s.length, 0),
    1000
  )
})

test('one rank with exact wires keeps its step on the backend: the same weights, bit for bit, as a whole model trained step by step', async t => {
  const cfg: TrainConfig = { ...base, worldSize: 1, steps: 6 }
  const run = await trainMesh(1, cfg)
  const st = run.statuses[0]!
  t.is(st.role, 'done')
  t.is(st.memory!.inFlightPeak, 0, 'no gathered bucket or gradient copy was ever held on the host')
  // The reference: the same model as one full replica, the same batches, AdamW over the whole buffer.
  const be = new CpuBackend()
  const ref = new Gpt(be, cfg.model, { B: cfg.B, T: cfg.T, dtype: 'f32', seed: cfg.seed })
  ref.setParams(initGptParams(cfg.model, cfg.seed))
  const train = corpus().train
  for (let s = 0; s < cfg.steps; s++) {
    const batch = batchFor(train, cfg.seed, s, 0, cfg.B, cfg.T)
    ref.zeroGrad()
    ref.forward(batch.inputs, batch.targets)
    ref.backward()
    ref.update({ lr: cfg.lr, step: s + 1, beta1: 0.9, beta2: 0.95, eps: 1e-8, weightDecay: cfg.weightDecay, gradScale: 1 })
  }
  t.is(Buffer.compare(Buffer.from(run.params.buffer), Buffer.from(ref.getParams().buffer)), 0, 'final weights are bit-identical to the reference')
  ref.dispose()
})

test('snapshots off: a lost rank ends the run with a clear TrainingError on every node, never a crash', async t => {
  const cfg: TrainConfig = { ...base, worldSize: 2, steps: 8, snapshot: undefined }
  const hurt = await trainMeshAll(3, cfg, { kill: { rank: 1, atStep: 4 } })
  t.true(hurt.errors.length > 0, 'the run ended')
  for (const e of hurt.errors) {
    t.is(e.name, 'TrainingError', e.message)
    t.regex(e.message, /snapshots are off|--snapshot/)
  }
})

test('step phases: the mean per step of a roster, its first step left out; every rank of a run reports them', async t => {
  const st = { phases: undefined } as unknown as TrainStatus
  const times = new PhaseTimes(st)
  times.add({ compute: 1000, wire: 1000, optimizer: 1000, snapshot: 1000 }, true)
  t.is(st.phases, undefined, 'the first step (a warm-up) is not counted')
  times.add({ compute: 10, wire: 2, optimizer: 1, snapshot: 3 }, false)
  times.add({ compute: 20, wire: 4, optimizer: 3, snapshot: 1 }, false)
  t.deepEqual(st.phases, { compute: 15, wire: 3, optimizer: 2, snapshot: 2 })
  const run = await trainMesh(2, { ...base, worldSize: 2, steps: 4 })
  for (const s of run.statuses) {
    const p = s.phases!
    t.true(
      [p.compute, p.wire, p.optimizer, p.snapshot].every(x => Number.isFinite(x) && x >= 0),
      JSON.stringify(p)
    )
    t.true(p.compute > 0, 'the passes take time')
  }
})
