import test from 'ava'
import { RealClock, Rng, silentLogger } from '../../core/index.ts'
import { createMemoryNetwork, createMembership } from '../../mesh/index.ts'
import { CpuBackend, gptLayout } from '../../gpu/index.ts'
import { Trainer, decaySegments, trainingModel, type TrainConfig, type TrainStatus } from '../../node/trainer.ts'
import type { Corpus } from '../../node/data.ts'
import { seededRng } from '../helpers/seed.ts'

// A small repetitive corpus, so a tiny model learns visibly in a few dozen steps.
function corpus (): Corpus {
  const text = Buffer.from('the quick brown fox jumps over the lazy dog. '.repeat(400))
  const ids = new Uint16Array(text.length)
  ids.set(text)
  return { source: 'test', vocabSize: 256, train: ids, val: ids.subarray(0, 100) }
}

interface MeshRun { statuses: TrainStatus[], params: Float32Array }

/** n in-process workers on a memory network; `kill` crashes one rank's node at a step. */
async function trainMesh (n: number, cfg: TrainConfig, opts: { zones?: number, kill?: { rank: number, atStep: number } } = {}): Promise<MeshRun> {
  const zones = opts.zones ?? 2
  const hub = createMemoryNetwork()
  const clock = new RealClock()
  const nodes = Array.from({ length: n }, (_, i) => {
    const net = hub.createPeer({ id: `w${i}`, labels: { zone: `z${i % zones}`, host: `h${i}` } })
    const membership = createMembership({ heartbeatMs: 200, expect: n }, { net, clock, rng: Rng.fromSeed(i), log: silentLogger() })
    return { net, membership, ctrl: new AbortController(), killed: false }
  })
  for (const x of nodes) {
    await x.net.start()
    await x.membership.start()
  }
  const c = corpus()
  const trainers = nodes.map((x, i) => new Trainer({
    backend: new CpuBackend(),
    net: x.net,
    membership: x.membership,
    clock,
    log: silentLogger(),
    corpus: c,
    onStep: s => {
      if (opts.kill !== undefined && s.rank === opts.kill.rank && s.step === opts.kill.atStep && !nodes.some(n => n.killed)) {
        nodes[i]!.killed = true
        hub.kill(x.net.self.id)
        x.ctrl.abort()
        void x.membership.stop()
      }
    }
  }, cfg))
  const runs = trainers.map((t, i) => t.run(nodes[i]!.ctrl.signal))
  try {
    const settled = await Promise.allSettled(runs.map((r, i) => r.then(s => {
      // Once every live rank is done, the spares are told to stop.
      if (s.role === 'done' && trainers.every((t, j) => nodes[j]!.killed || t.status().role !== 'rank')) for (const x of nodes) x.ctrl.abort()
      return s
    })))
    const statuses = settled.flatMap((r, i) => (nodes[i]!.killed ? [] : r.status === 'fulfilled' ? [r.value] : (() => { throw r.reason })()))
    const N = gptLayout(cfg.model).length
    const params = new Float32Array(N)
    trainers.forEach((t, i) => { if (!nodes[i]!.killed && t.finalShard !== undefined) params.set(t.finalShard.data, t.finalShard.start) })
    return { statuses, params }
  } finally {
    for (const x of nodes) {
      if (!x.killed) await x.membership.stop()
      await x.net.stop()
    }
  }
}

const model = trainingModel('mini', 256)
const base: TrainConfig = { model: { ...model, maxT: 16 }, B: 2, T: 16, steps: 30, lr: 1e-2, weightDecay: 0, seed: 5, worldSize: 4, zeroPP: false, dtype: 'f32', snapshot: undefined }

test('four ranks train a GPT with flat ZeRO-3 on an in-memory mesh: loss falls, all ranks agree', async t => {
  const first = await trainMesh(4, { ...base, steps: 1 })
  const res = await trainMesh(4, base)
  const ranks = res.statuses
  for (const r of ranks) t.is(r.role, 'done')
  t.deepEqual(ranks.map(r => r.rank).sort(), [0, 1, 2, 3])
  t.is(new Set(ranks.map(r => r.loss)).size, 1, 'every rank reports the same mean loss')
  t.log(`loss ${first.statuses[0]!.loss!.toFixed(3)} -> ${ranks[0]!.loss!.toFixed(3)} after ${base.steps} steps`)
  t.true(ranks[0]!.loss! < first.statuses[0]!.loss! * 0.7, 'the loss fell')
  t.true(ranks.every(r => r.bytes.zone + r.bytes.wan + r.bytes.host > 0), 'bytes are counted')
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
  t.log(`eval loss: no failure ${a.toFixed(4)}, shrunk to 3 ranks at step 8 ${b.toFixed(4)} (${(100 * Math.abs(b - a) / a).toFixed(2)}%)`)
  t.true(Math.abs(b - a) / a < 0.01)
})

test('decay segments cover a shard, merging neighbours with the same decay flag', t => {
  const layout = gptLayout(model)
  const all = decaySegments(layout, 0, layout.length)
  t.is(all.reduce((a, s) => a + s.length, 0), layout.length)
  t.true(all.every((s, i) => i === 0 || all[i - 1]!.decay !== s.decay), 'neighbours differ')
  const part = decaySegments(layout, 100, 1000)
  t.is(part[0]!.start, 100)
  t.is(part.reduce((a, s) => a + s.length, 0), 1000)
})
