import test, { type ExecutionContext } from 'ava'
import { mkdtempSync, rmSync, readdirSync, unlinkSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { seedFromEnv, shardRange } from '../../core/index.ts'
import { gptLayout } from '../../gpu/index.ts'
import { adam8Runs } from '../../node/train/adam8.ts'
import { placeStripe } from '../../snapshot/index.ts'
import { TrainingError, type TrainConfig } from '../../node/index.ts'
import { runIdentity } from '../../node/train/config.ts'
import { ANCHOR_EVERY_SNAPSHOTS } from '../../node/train/persist.ts'
import { diskDir, loadDiskState } from '../../node/disk-tier.ts'
import { base, ok, trainMesh, type MeshControl } from '../helpers/train-mesh.ts'
import { simOk, simTrain, type SimTrainOptions } from '../helpers/sim-train.ts'
import type { ByteStream } from '../../mesh/index.ts'

// Recovery beyond one lost rank: m ranks at once, m+1 lost holders, a transient stall with no
// view change, a minority, late joiners, and the disk tier (restart from it, and resume under
// another world size). Faults that depend on timing (partitions healed after a delay, a
// minority's wait, late joiners) run on the simulator: real membership, snapshot service and
// trainer on SimNet under one virtual clock, deterministic in the seed; they run one at a time
// (each keeps a core busy). The disk-tier cases write real files and run on an in-memory mesh.

/** The seed of a simulated case (ZEROMESH_SEED overrides it), logged with the command that replays it. */
function seedOf(t: ExecutionContext, fallback: number): number {
  const seed = seedFromEnv(fallback)
  t.log(`seed ${seed}; replay: ZEROMESH_SEED=${seed} npx ava test/node/trainer-recovery.test.ts --match '${t.title}'`)
  return seed
}

/**
 * Fault injection on node `node`'s snapshot fetches: the first one goes through `first`
 * (given the real open), the others are untouched.
 */
function firstFetch(
  node: number,
  first: (open: () => Promise<ByteStream>) => Promise<ByteStream>
): { wrapNet: NonNullable<SimTrainOptions['wrapNet']>; count: () => number } {
  let n = 0
  return {
    count: () => n,
    wrapNet: (i, net) =>
      i !== node
        ? net
        : new Proxy(net, {
            get(target, prop, recv) {
              if (prop !== 'open') return Reflect.get(target, prop, recv) as unknown
              return async (peer: string, protocol: string, o: { signal?: AbortSignal } = {}) => {
                const open = (): Promise<ByteStream> => target.open(peer, protocol, o)
                if (!protocol.startsWith('/zeromesh/snapshot/fetch/') || n > 0) return await open()
                n++
                return await first(open)
              }
            }
          })
  }
}

const same = (a: Float32Array, b: Float32Array): boolean => Buffer.compare(Buffer.from(a.buffer), Buffer.from(b.buffer)) === 0

type SimRun = ReturnType<typeof simOk>

/** Snapshot bytes a run's ranks placed on holders, every tier. */
const placed = (r: SimRun): number =>
  r.statuses.reduce((a, s) => a + (s.snapshotBytes?.host ?? 0) + (s.snapshotBytes?.zone ?? 0) + (s.snapshotBytes?.wan ?? 0), 0)

/** Runs `cfg` on 5 simulated nodes, then again with rank 2 killed at `atStep`: a spare takes the rank and the final weights are the same bits. Returns the clean run. */
async function killReplacedBitIdentically(t: ExecutionContext, cfg: TrainConfig, seed: number, atStep: number): Promise<SimRun> {
  const clean = simOk(await simTrain(5, cfg, { seed }))
  const hurt = simOk(await simTrain(5, cfg, { seed, kill: { rank: 2, atStep } }))
  const ranks = hurt.statuses.filter(s => s.role === 'done')
  t.is(ranks.length, 4)
  t.true(
    ranks.flatMap(s => s.recoveries).some(r => r.mode === 'replace'),
    'a spare took the rank from the snapshots'
  )
  t.is(hurt.weightsHash, clean.weightsHash, 'final weights are bit-identical to the run without the kill')
  return clean
}

test.serial('kill m ranks at once (k=2, m=2): two spares take both ranks from the snapshots, bit-identically', async t => {
  const seed = seedOf(t, 5)
  const cfg: TrainConfig = { ...base, steps: 10, snapshot: { k: 2, m: 2 } }
  const clean = simOk(await simTrain(6, cfg, { seed }))
  const nodeOfRank = new Map<number, number>()
  const hurt = simOk(
    await simTrain(6, cfg, {
      seed,
      onStep: (ctl, i, s) => {
        if (s.rank !== undefined) nodeOfRank.set(s.rank, i)
        if (s.rank === 1 && s.step === 5 && !ctl.nodes.some(n => n.killed)) ctl.kill([i, nodeOfRank.get(2)!])
      }
    })
  )
  const ranks = hurt.statuses.filter(s => s.role === 'done')
  t.is(ranks.length, 4)
  const rec = ranks.flatMap(s => s.recoveries)
  t.true(rec.length > 0 && rec.every(r => r.mode === 'replace' && r.lost.length === 2), JSON.stringify(rec))
  t.log(`lost ranks ${rec[0]!.lost.join(', ')} at once; back to step ${rec[0]!.fromStep} in ${rec[0]!.ms} simulated ms`)
  t.is(hurt.weightsHash, clean.weightsHash, 'final weights are bit-identical to the run without the kills')
})

test('m+1 lost holders: every survivor fails with a clear unrecoverable error, and a restart with --resume finishes from the disk tier', async t => {
  const root = mkdtempSync(join(tmpdir(), 'zm-mplus1-'))
  try {
    // 7 ranks, k=2, m=1: kill rank 3's node and two of its three holders (4 of 7 stay: a majority).
    const cfg: TrainConfig = { ...base, worldSize: 7, steps: 8, snapshot: { k: 2, m: 1 }, minorityWaitMs: 5000 }
    const disk = (i: number): Partial<TrainConfig> => ({ disk: { dir: diskDir(join(root, `w${i}`)), every: 2, resume: false } })
    let victims: string[] = []
    const hurt = await trainMesh(7, cfg, {
      configOf: disk,
      onStep: (ctl: MeshControl, i, s) => {
        if (s.rank !== 3 || s.step !== 4 || victims.length > 0) return
        const view = ctl.nodes[i]!.membership.view()!
        const owner = view.members.findIndex(m => m.id === ctl.nodes[i]!.net.self.id)
        victims = [ctl.nodes[i]!.net.self.id, ...placeStripe(view, owner, 2, 1).slice(0, 2)]
        ctl.kill(victims.map(id => ctl.nodes.findIndex(n => n.net.self.id === id)))
      }
    })
    t.is(victims.length, 3)
    t.is(hurt.statuses.length, 0, 'no survivor claims success')
    t.is(hurt.errors.length, 4)
    for (const e of hurt.errors) {
      t.true(e instanceof TrainingError, String(e))
      t.regex(e.message, /unrecoverable/)
      t.regex(e.message, /--resume/)
    }
    t.log(hurt.errors[0]!.message)
    // The whole mesh restarts on the same data dirs (the killed nodes' disks survived).
    const resumed = ok(
      await trainMesh(7, { ...cfg, minorityWaitMs: undefined }, { configOf: i => ({ disk: { dir: diskDir(join(root, `w${i}`)), every: 2, resume: true } }) })
    )
    const done = resumed.statuses.filter(s => s.role === 'done')
    t.is(done.length, 7)
    t.true(
      done.every(s => s.resumedFrom !== undefined && s.resumedFrom >= 2 && s.step === 8),
      JSON.stringify(done.map(s => [s.resumedFrom, s.step]))
    )
    t.log(`resumed from step ${done[0]!.resumedFrom} of the disk tier, finished at step 8, loss ${done[0]!.loss!.toFixed(4)}`)
  } finally {
    rmSync(root, { recursive: true, force: true })
  }
})

test.serial('a transient stall with no view change: the ranks retry from the newest common snapshot, bit-identically', async t => {
  const seed = seedOf(t, 5)
  const cfg: TrainConfig = { ...base, steps: 10, snapshot: { k: 2, m: 1 } }
  const clean = simOk(await simTrain(4, cfg, { seed }))
  let cut = false
  const hurt = simOk(
    await simTrain(4, cfg, {
      seed,
      onStep: (ctl, _i, s) => {
        if (s.rank !== 0 || s.step !== 5 || cut) return
        cut = true
        // Two non-leader members lose each other for a moment: their collective streams break,
        // but every heartbeat still reaches the leader, so no view change follows.
        ctl.partition([ctl.nodes[2]!.id], [ctl.nodes[3]!.id])
        ctl.after(200, () => {
          ctl.heal()
        })
      }
    })
  )
  t.true(cut, 'the partition happened')
  const ranks = hurt.statuses.filter(s => s.role === 'done')
  t.is(ranks.length, 4)
  t.true(
    ranks.every(s => s.recoveries.length === 0 && s.epoch === clean.statuses[0]!.epoch),
    'no view change, no recovery'
  )
  t.true(
    ranks.some(s => s.retries > 0),
    `retries: ${ranks.map(s => s.retries).join(',')}`
  )
  // Positive control: the run without the stall did not retry.
  t.true(
    clean.statuses.every(s => s.retries === 0),
    `clean retries: ${clean.statuses.map(s => s.retries).join(',')}`
  )
  t.is(hurt.weightsHash, clean.weightsHash, 'final weights are bit-identical to the run without the stall')
})

/**
 * Fault injection: node i's snapshot fragment puts each wait `delayMs(i)` simulated ms before
 * they open (a slow uplink), so its placements lag its steps by its own amount.
 */
function slowPuts(delayMs: (i: number) => number): NonNullable<SimTrainOptions['wrapNet']> {
  return (i, net, clock) =>
    delayMs(i) === 0
      ? net
      : new Proxy(net, {
          get(target, prop, recv) {
            if (prop !== 'open') return Reflect.get(target, prop, recv) as unknown
            return async (peer: string, protocol: string, o: { signal?: AbortSignal } = {}) => {
              if (protocol.startsWith('/zeromesh/snapshot/put/')) await clock.sleep(delayMs(i))
              return await target.open(peer, protocol, o)
            }
          }
        })
}

test.serial(
  'placements lagging by a different amount on every rank (captures superseded at different steps): a kill is recovered from a kept anchor, bit-identically',
  async t => {
    const seed = seedOf(t, 5)
    const cfg: TrainConfig = { ...base, steps: 24, snapshot: { k: 2, m: 1 } }
    // Node i's fragment puts wait 0.5 + 0.4 i simulated s while a step takes ~0.5 s: every
    // rank's ordinary captures are superseded, each at its own steps (before kept anchors, this
    // run failed: "no snapshot step is known complete for every rank (newest per rank: 11, 9, 8, 5)").
    const wrapNet = slowPuts(i => 500 + 400 * i)
    const clean = simOk(await simTrain(5, cfg, { seed, wrapNet }))
    const hurt = simOk(await simTrain(5, cfg, { seed, wrapNet, kill: { rank: 1, atStep: 18 } }))
    const ranks = hurt.statuses.filter(s => s.role === 'done')
    t.is(ranks.length, 4)
    const rec = ranks.flatMap(s => s.recoveries)
    t.true(rec.length > 0 && rec.every(r => r.mode === 'replace'), JSON.stringify(rec))
    const from = rec[0]!.fromStep
    t.log(`recovered from step ${from}; ${(clean.simMs / cfg.steps).toFixed(0)} simulated ms per step`)
    t.true(from > 1 && from % ANCHOR_EVERY_SNAPSHOTS === 0, `rolled back to an anchor after the first step, not to step ${from}`)
    t.is(hurt.weightsHash, clean.weightsHash, 'final weights are bit-identical to the run without the kill')
  }
)

test.serial('a spare whose snapshot dial never completes (deaf to its signal) gives up on it, and the run goes on bit-identically', async t => {
  const seed = seedOf(t, 5)
  const cfg: TrainConfig = { ...base, steps: 8, snapshot: { k: 1, m: 1 } }
  const clean = simOk(await simTrain(5, cfg, { seed }))
  // The spare (node 4): its first dial for a snapshot fragment never completes, and does
  // not listen to its signal either (as a dial stuck in a transport's queue).
  const hook = firstFetch(4, async () => await new Promise<ByteStream>(() => {}))
  const hurt = simOk(await simTrain(5, cfg, { seed, kill: { rank: 1, atStep: 4 }, wrapNet: hook.wrapNet }))
  t.is(hook.count(), 1, 'the hanging dial was made')
  const ranks = hurt.statuses.filter(s => s.role === 'done')
  t.is(ranks.length, 4)
  // The dial is abandoned after the snapshot idle timeout and the fragment comes from its
  // parity holder; the other ranks wait (their first step after a recovery has the grace).
  const rec = ranks.flatMap(s => s.recoveries)
  t.true(rec.length > 0 && rec.every(r => r.mode === 'replace'), JSON.stringify(rec))
  t.log(`recovered from step ${rec[0]!.fromStep}; retries ${ranks.map(s => s.retries).join(',')}`)
  t.is(hurt.weightsHash, clean.weightsHash, 'final weights are bit-identical to the run without the kill')
})

test.serial(
  'a spare whose snapshot transfer wedges (a stream whose end never settles, deaf to aborts) is released when the others give up; all retry, bit-identically',
  async t => {
    const seed = seedOf(t, 5)
    const cfg: TrainConfig = { ...base, steps: 8, snapshot: { k: 1, m: 1 } }
    const clean = simOk(await simTrain(5, cfg, { seed }))
    // The spare's first fetch stream never finishes ending its write side, whatever happens to it.
    const hook = firstFetch(4, async open => {
      const stream = await open()
      return new Proxy(stream, {
        get(target, prop, recv) {
          if (prop === 'end') return async () => await new Promise(() => {})
          const v = Reflect.get(target, prop, recv) as unknown
          return typeof v === 'function' ? (v as (...a: unknown[]) => unknown).bind(target) : v
        }
      })
    })
    const hurt = simOk(await simTrain(5, cfg, { seed, kill: { rank: 1, atStep: 4 }, wrapNet: hook.wrapNet }))
    t.is(hook.count(), 1, 'the wedged transfer was made')
    const ranks = hurt.statuses.filter(s => s.role === 'done')
    t.is(ranks.length, 4)
    t.true(
      ranks.some(s => s.retries > 0),
      `retries: ${ranks.map(s => s.retries).join(',')}`
    )
    t.is(hurt.weightsHash, clean.weightsHash, 'final weights are bit-identical to the run without the kill')
  }
)

test.serial('a rank left in a minority fails with a clear error after minorityWaitMs instead of waiting forever', async t => {
  const seed = seedOf(t, 5)
  const cfg: TrainConfig = { ...base, steps: 30, snapshot: { k: 1, m: 1 }, minorityWaitMs: 2000 }
  const minority = (lose: number) => async () =>
    await simTrain(4, cfg, {
      seed,
      onStep: (ctl, i, s) => {
        if (s.rank === 0 && s.step === 3 && !ctl.nodes.some(n => n.killed)) ctl.kill([0, 1, 2, 3].filter(j => j !== i).slice(0, lose))
      }
    })
  const res = await minority(2)()
  t.is(res.errors.length, 2)
  for (const e of res.errors) {
    t.true(e instanceof TrainingError, String(e))
    t.regex(e.message, /minority/)
  }
  t.log(res.errors[0]!.message)
  // Positive control: losing one of four leaves a majority, and the same run recovers and finishes.
  const majority = simOk(await minority(1)())
  t.is(majority.statuses.filter(s => s.role === 'done').length, 3)
})

test('disk tier: a resumed run is bit-identical to an uninterrupted one, and can resume under another world size', async t => {
  const root = mkdtempSync(join(tmpdir(), 'zm-resume-'))
  try {
    const cfg: TrainConfig = { ...base, worldSize: 3, steps: 8 }
    const disk =
      (resume: boolean) =>
      (i: number): Partial<TrainConfig> => ({ disk: { dir: diskDir(join(root, `w${i}`)), every: 3, resume } })
    const full = ok(await trainMesh(3, cfg, { configOf: disk(false) }))
    for (let i = 0; i < 3; i++) t.deepEqual(readdirSync(diskDir(join(root, `w${i}`))).sort(), ['step-00000003.zms', 'step-00000006.zms'])
    // Drop step 6 on one node: the newest step every rank has is 3.
    unlinkSync(join(diskDir(join(root, 'w1')), 'step-00000006.zms'))
    const again = ok(await trainMesh(3, cfg, { configOf: disk(true) }))
    t.true(again.statuses.every(s => s.resumedFrom === 3))
    t.true(same(again.params, full.params), 'resumed from step 3: bit-identical final weights')
    // Four ranks (the fourth with an empty disk) resume the three ranks' state, re-partitioned.
    const four = ok(await trainMesh(4, { ...cfg, worldSize: 4, steps: 10 }, { configOf: disk(true) }))
    t.true(
      four.statuses.every(s => s.resumedFrom === 6 && s.step === 10),
      JSON.stringify(four.statuses.map(s => [s.resumedFrom, s.step]))
    )
    t.true(four.statuses[0]!.loss! < full.statuses[0]!.loss! * 1.05)
    // Nothing to resume: a clear error, not a fresh start.
    const empty = await trainMesh(2, { ...cfg, worldSize: 2 }, { configOf: i => ({ disk: { dir: join(root, 'none', `w${i}`), every: 3, resume: true } }) })
    t.is(empty.errors.length, 2)
    t.regex(empty.errors[0]!.message, /no disk tier files at all/)
  } finally {
    rmSync(root, { recursive: true, force: true })
  }
})

test.serial('snapshots that cannot be placed on this mesh are refused at the start with a clear error', async t => {
  const seed = seedOf(t, 5)
  const res = await simTrain(3, { ...base, worldSize: 3, steps: 3, snapshot: { k: 2, m: 1 } }, { seed })
  t.is(res.errors.length, 3)
  for (const e of res.errors) t.regex(e.message, /--snapshot 2\+1 places 3 fragments on as many other nodes, but the mesh has 3/)
  // Positive control: one more node makes room for the three fragments, and the same run trains.
  const roomy = simOk(await simTrain(4, { ...base, worldSize: 3, steps: 3, snapshot: { k: 2, m: 1 } }, { seed }))
  t.is(roomy.statuses.filter(s => s.role === 'done').length, 3)
})

test.serial('a rank cut off long enough to be dropped, then re-admitted, becomes a spare; its place is taken and the result is bit-identical', async t => {
  const seed = seedOf(t, 5)
  const cfg: TrainConfig = { ...base, steps: 10, snapshot: { k: 2, m: 1 } }
  const clean = simOk(await simTrain(5, cfg, { seed }))
  let cut = false
  const hurt = simOk(
    await simTrain(5, cfg, {
      seed,
      onStep: (ctl, i, s) => {
        if (s.rank !== 2 || s.step !== 4 || cut) return
        cut = true
        const me = ctl.nodes[i]!.id
        ctl.partition(
          [me],
          ctl.nodes.map(n => n.id).filter(id => id !== me)
        )
        ctl.after(4000, () => {
          ctl.heal()
        })
      }
    })
  )
  const done = hurt.statuses.filter(s => s.role === 'done')
  t.is(done.length, 4)
  t.true(
    hurt.statuses.some(s => s.role === 'spare'),
    JSON.stringify(hurt.statuses.map(s => s.role))
  )
  t.is(hurt.weightsHash, clean.weightsHash, 'final weights are bit-identical to the run without the cut')
})

test.serial(
  'late joiners grow the run at a step boundary (maxWorldSize): every node agrees on when, the new rank gets its shard, all finish together',
  async t => {
    const seed = seedOf(t, 5)
    const cfg: TrainConfig = { ...base, steps: 16, worldSize: 3, maxWorldSize: 4, snapshot: { k: 1, m: 1 } }
    // (computeMs: each step takes simulated time, so the joiner's heartbeats reach the leader mid-run.)
    const run = simOk(await simTrain(4, cfg, { seed, late: { count: 1, atStep: 3 }, computeMs: 30 }))
    const done = run.statuses.filter(s => s.role === 'done')
    t.is(done.length, 4, 'the late joiner trains too')
    t.true(
      done.every(s => s.worldSize === 4 && s.step === 16),
      done.map(s => `${s.worldSize}/${s.step}`).join(' ')
    )
    const growths = done.map(s => s.growths)
    t.true(
      growths.every(g => g.length === 1 && g[0]!.from === 3 && g[0]!.to === 4),
      JSON.stringify(growths)
    )
    const at = growths[0]![0]!.atStep
    t.true(
      growths.every(g => g[0]!.atStep === at),
      'every node grew after the same step'
    )
    t.true(new Set(done.map(s => s.evalLoss)).size === 1, 'every rank scores the same final weights')
    t.true(done[0]!.loss! < 4.5, `loss ${done[0]!.loss}`)
    t.log(`grew from 3 to 4 ranks after step ${at}; held-out loss ${done[0]!.evalLoss!.toFixed(4)}`)
    // With maxWorldSize at the world size (the default), the same late joiner stays a spare.
    const fixed = simOk(await simTrain(4, { ...cfg, maxWorldSize: undefined }, { seed, late: { count: 1, atStep: 3 }, computeMs: 30 }))
    t.deepEqual(fixed.statuses.map(s => s.role).sort(), ['done', 'done', 'done', 'spare'])
  }
)

test.serial('a node that joins after a rank was replaced adopts the roster rank 0 announces, and can replace the next lost rank, bit-identically', async t => {
  const seed = seedOf(t, 5)
  const cfg: TrainConfig = { ...base, steps: 14, snapshot: { k: 1, m: 1 } }
  const clean = simOk(await simTrain(5, cfg, { seed, computeMs: 30 }))
  const nodeOfRank = new Map<number, number>()
  const kills: number[] = []
  const hurt = simOk(
    await simTrain(6, cfg, {
      seed,
      computeMs: 30,
      late: { count: 1, atStep: 5 },
      onStep: (ctl, i, s) => {
        if (s.rank !== undefined) nodeOfRank.set(s.rank, i)
        // Rank 1 dies at step 3 (the first spare takes it); rank 2 dies at step 9, after the
        // late node joined: only it can take the place, with the roster the ranks have.
        const at = kills.length === 0 ? 3 : kills.length === 1 ? 9 : -1
        const victim = kills.length === 0 ? 1 : 2
        if (s.rank === victim && s.step === at) {
          kills.push(i)
          ctl.kill([i])
        }
      }
    })
  )
  t.is(kills.length, 2, 'both kills happened')
  const done = hurt.statuses.filter(s => s.role === 'done')
  t.is(done.length, 4)
  const rec = done.flatMap(s => s.recoveries)
  t.true(rec.some(r => r.lost.includes(2)) && rec.every(r => r.mode === 'replace'), JSON.stringify(rec))
  t.is(hurt.weightsHash, clean.weightsHash, 'final weights are bit-identical to the run without the kills')
})

test('--resume refuses a disk tier file of another run with the same shapes (another seed), naming the file, instead of mixing it in', async t => {
  const root = mkdtempSync(join(tmpdir(), 'zm-foreign-'))
  try {
    // Two nodes, both ranks (no spare without files of its own); the disk tier is what resumes.
    const cfg: TrainConfig = { ...base, worldSize: 2, steps: 2, snapshot: undefined }
    const disk =
      (resume: boolean) =>
      (i: number): Partial<TrainConfig> => ({ disk: { dir: diskDir(join(root, `w${i}`)), every: 1, resume } })
    const first = { ...cfg, identity: runIdentity('r', { ...cfg, seed: 1 }) }
    ok(await trainMesh(2, first, { configOf: disk(false) }))
    // Same run id and shapes, another seed: its identity differs, and the files are not its own.
    const other = { ...cfg, steps: 3, identity: runIdentity('r', { ...cfg, seed: 2 }) }
    const r = await trainMesh(2, other, { configOf: disk(true) })
    t.true(r.errors.length >= 1, 'a rank refuses to resume')
    // The rank that reads the foreign file says so; the run ends on the other with it.
    t.true(
      r.errors.some(e => /--resume: .*step-\d+\.zms \(rank \d, step \d+\) is another run's state/.test(e.message)),
      r.errors.map(e => e.message).join('\n')
    )
    t.is(r.statuses.filter(s => s.role === 'done').length, 0, 'nobody trained on from the foreign state')
    t.log(r.errors[0]!.message)
    // Its own identity resumes.
    const same = ok(await trainMesh(2, { ...first, steps: 3 }, { configOf: disk(true) }))
    t.true(same.statuses.some(s => s.role === 'done' && s.resumedFrom !== undefined))
  } finally {
    rmSync(root, { recursive: true, force: true })
  }
})

test('--resume refuses disk tier files of two launches of one run (same run id and settings, started twice), and a resumed run keeps its launch', async t => {
  const root = mkdtempSync(join(tmpdir(), 'zm-launch-'))
  try {
    const cfg: TrainConfig = { ...base, worldSize: 2, steps: 2, snapshot: undefined }
    const run = { ...cfg, identity: runIdentity('r', cfg) }
    const disk =
      (dir: string, resume: boolean) =>
      (i: number): Partial<TrainConfig> => ({ disk: { dir: diskDir(join(root, `${dir}${i}`)), every: 1, resume } })
    // Two launches of the same run, each into its own data dirs.
    ok(await trainMesh(2, run, { configOf: disk('a', false) }))
    ok(await trainMesh(2, run, { configOf: disk('b', false) }))
    const launch = async (dir: string): Promise<string> => Buffer.from((await loadDiskState(diskDir(join(root, dir)), 2))!.nonce!).toString('hex')
    t.is(await launch('a0'), await launch('a1'), 'the ranks of one launch agree on its nonce')
    t.not(await launch('a0'), await launch('b0'), 'two launches differ')
    // A resume from launch a's rank-0 dir and launch b's rank-1 dir: the files of step 2 mix launches.
    const mixed = await trainMesh(2, { ...run, steps: 3 }, { configOf: i => disk(i === 0 ? 'a' : 'b', true)(i) })
    t.is(mixed.statuses.filter(s => s.role === 'done').length, 0, 'nobody trained on from the mixed files')
    t.true(
      mixed.errors.some(e => /--resume: the disk tier files of step 2 come from different launches of this run/.test(e.message)),
      mixed.errors.map(e => e.message).join('\n')
    )
    // One launch resumes, and the files it writes carry that launch's nonce.
    const a0 = await launch('a0')
    ok(await trainMesh(2, { ...run, steps: 3 }, { configOf: disk('a', true) }))
    t.is(Buffer.from((await loadDiskState(diskDir(join(root, 'a0')), 3))!.nonce!).toString('hex'), a0)
  } finally {
    rmSync(root, { recursive: true, force: true })
  }
})

test.serial(
  'Lion: one moment, snapshots of 8 bytes per parameter; a killed rank is replaced bit-identically and the disk tier resumes under another world size',
  async t => {
    const seed = seedOf(t, 5)
    const cfg: TrainConfig = { ...base, steps: 10, lr: 1e-3, optimizer: 'lion', snapshot: { k: 2, m: 1 } }
    const clean = await killReplacedBitIdentically(t, cfg, seed, 6)
    const adamw = simOk(await simTrain(5, { ...cfg, optimizer: 'adamw', lr: base.lr }, { seed }))
    t.not(adamw.weightsHash, clean.weightsHash, 'Lion trains other weights than AdamW')
    // What each rank placed: weights and one moment against AdamW's two.
    t.log(`snapshot bytes placed: lion ${placed(clean)}, adamw ${placed(adamw)} (${(placed(clean) / placed(adamw)).toFixed(3)}x)`)
    t.true(placed(clean) < 0.7 * placed(adamw), `lion ${placed(clean)} vs adamw ${placed(adamw)}`)
    // The disk tier: three ranks write Lion state, four resume it (re-partitioned), two refuse it as AdamW.
    const root = mkdtempSync(join(tmpdir(), 'zm-lion-'))
    try {
      const disk =
        (resume: boolean) =>
        (i: number): Partial<TrainConfig> => ({ disk: { dir: diskDir(join(root, `w${i}`)), every: 3, resume } })
      const lion: TrainConfig = { ...base, worldSize: 3, steps: 6, lr: 1e-3, optimizer: 'lion', snapshot: undefined }
      ok(await trainMesh(3, lion, { configOf: disk(false) }))
      const st = (await loadDiskState(diskDir(join(root, 'w0')), 6))!
      t.is(st.optimizer, 'lion')
      t.is(st.adamV.length, 0)
      const four = ok(await trainMesh(4, { ...lion, worldSize: 4, steps: 8 }, { configOf: disk(true) }))
      t.true(four.statuses.every(s => s.resumedFrom === 6 && s.step === 8))
      const wrong = await trainMesh(2, { ...lion, worldSize: 2, steps: 8, optimizer: 'adamw' }, { configOf: disk(true) })
      t.true(
        wrong.errors.some(e => /--resume: .* holds lion state, but this node trains with adamw/.test(e.message)),
        wrong.errors.map(e => e.message).join('\n')
      )
    } finally {
      rmSync(root, { recursive: true, force: true })
    }
  }
)

/**
 * The 8-bit optimizers' recovery beyond a spare: a shrink and a grow re-block the codes; three
 * ranks write the disk tier, three resume it bit-identically, four re-blocked, and two running
 * `other` refuse it. `checkState` looks at rank 0's file (its codes and absmaxes).
 */
async function eightBitRecovery(
  t: ExecutionContext,
  cfg: TrainConfig,
  seed: number,
  other: TrainConfig['optimizer'],
  checkState: (st: NonNullable<Awaited<ReturnType<typeof loadDiskState>>>) => void
): Promise<void> {
  const name = cfg.optimizer!
  // No spare: the survivors rebuild the lost shard's codes in their new blocks and finish.
  const shrunk = simOk(await simTrain(4, cfg, { seed, kill: { rank: 1, atStep: 6 } }))
  const three = shrunk.statuses.filter(s => s.role === 'done')
  t.is(three.length, 3)
  t.true(three.every(s => s.recoveries.some(r => r.mode === 'shrink') && s.step === 10))
  // A late joiner grows the run from 3 to 4 ranks: the old ranks hand their codes over (stateSlot8), re-blocked.
  const grow = simOk(
    await simTrain(4, { ...cfg, worldSize: 3, maxWorldSize: 4, snapshot: { k: 1, m: 1 } }, { seed, late: { count: 1, atStep: 3 }, computeMs: 30 })
  )
  const grown = grow.statuses.filter(s => s.role === 'done')
  t.true(
    grown.length === 4 && grown.every(s => s.worldSize === 4 && s.step === 10 && s.growths.length === 1),
    grown.map(s => `${s.worldSize}/${s.step}`).join(' ')
  )
  t.true(new Set(grown.map(s => s.evalLoss)).size === 1, 'every rank scores the same final weights')
  const root = mkdtempSync(join(tmpdir(), `zm-${name}-`))
  try {
    const disk =
      (resume: boolean) =>
      (i: number): Partial<TrainConfig> => ({ disk: { dir: diskDir(join(root, `w${i}`)), every: 3, resume } })
    const eight: TrainConfig = { ...base, worldSize: 3, steps: 6, lr: cfg.lr, optimizer: name, snapshot: undefined }
    ok(await trainMesh(3, eight, { configOf: disk(false) }))
    const st = (await loadDiskState(diskDir(join(root, 'w0')), 6))!
    t.is(st.optimizer as string | undefined, name)
    t.is(st.adam8?.m.length, st.weights.length)
    t.true(
      st.adam8!.scales.some(x => x > 0),
      'the moments were saved, not zeros'
    )
    checkState(st)
    const straight = ok(await trainMesh(3, { ...eight, steps: 8 }))
    const again = ok(await trainMesh(3, { ...eight, steps: 8 }, { configOf: disk(true) }))
    t.true(again.statuses.every(s => s.resumedFrom === 6 && s.step === 8))
    t.true(same(again.params, straight.params), 'resumed on the same world size: bit-identical to the run that never stopped')
    const four = ok(await trainMesh(4, { ...eight, worldSize: 4, steps: 10 }, { configOf: disk(true) }))
    t.true(four.statuses.every(s => s.resumedFrom === 6 && s.step === 10))
    const wrong = await trainMesh(2, { ...eight, worldSize: 2, steps: 12, optimizer: other }, { configOf: disk(true) })
    t.true(
      wrong.errors.some(e => e.message.includes(`holds ${name} state, but this node trains with ${other}`)),
      wrong.errors.map(e => e.message).join('\n')
    )
  } finally {
    rmSync(root, { recursive: true, force: true })
  }
}

test.serial(
  '8-bit AdamW: moments as codes; a killed rank is replaced bit-identically, a shrink re-blocks them, the disk tier resumes bit-identically on the same world size and re-blocked on another',
  async t => {
    const seed = seedOf(t, 5)
    const cfg: TrainConfig = { ...base, steps: 10, lr: 3e-3, optimizer: 'adamw8bit', snapshot: { k: 2, m: 1 } }
    const clean = await killReplacedBitIdentically(t, cfg, seed, 6)
    const adamw = simOk(await simTrain(5, { ...cfg, optimizer: 'adamw' }, { seed }))
    t.not(adamw.weightsHash, clean.weightsHash, '8-bit AdamW trains other weights than AdamW')
    // What each rank placed: weights and two bytes of codes per parameter against AdamW's 12 bytes.
    t.log(`snapshot bytes placed: adamw8bit ${placed(clean)}, adamw ${placed(adamw)} (${(placed(clean) / placed(adamw)).toFixed(3)}x)`)
    t.true(placed(clean) < 0.6 * placed(adamw), `adamw8bit ${placed(clean)} vs adamw ${placed(adamw)}`)
    await eightBitRecovery(t, cfg, seed, 'adamw', st => t.is(st.adamM.length, 0))
  }
)

test.serial(
  '8-bit Lion: m as codes with one absmax a block; a killed rank is replaced bit-identically, a shrink and a grow re-block m, the disk tier resumes bit-identically on the same world size and re-blocked on another, and refuses it as 8-bit AdamW',
  async t => {
    const seed = seedOf(t, 5)
    const cfg: TrainConfig = { ...base, steps: 10, lr: 1e-3, optimizer: 'lion8bit', snapshot: { k: 2, m: 1 } }
    const clean = await killReplacedBitIdentically(t, cfg, seed, 6)
    const lion = simOk(await simTrain(5, { ...cfg, optimizer: 'lion' }, { seed }))
    const adamw = simOk(await simTrain(5, { ...cfg, optimizer: 'adamw', lr: base.lr }, { seed }))
    t.not(lion.weightsHash, clean.weightsHash, '8-bit Lion trains other weights than Lion')
    // What each rank placed: weights and a byte of codes per parameter against Lion's 8 bytes and AdamW's 12.
    t.log(
      `snapshot bytes placed: lion8bit ${placed(clean)}, lion ${placed(lion)}, adamw ${placed(adamw)} (${(placed(clean) / placed(adamw)).toFixed(3)}x AdamW)`
    )
    t.true(placed(clean) < 0.5 * placed(adamw), `lion8bit ${placed(clean)} vs adamw ${placed(adamw)}`)
    t.true(placed(clean) < 0.7 * placed(lion), `lion8bit ${placed(clean)} vs lion ${placed(lion)}`)
    await eightBitRecovery(t, cfg, seed, 'adamw8bit', st => {
      t.is(st.adamM.length + st.adamV.length, 0)
      t.is(st.adam8?.v.length, 0, 'no v codes')
      t.is(st.adam8!.scales.length, adam8Runs(gptLayout(base.model), shardRange(gptLayout(base.model).length, 3, 0)).blocks, 'one absmax a block')
    })
  }
)

test.serial(
  'zeroth-order (--zo): a step moves a few bytes per rank instead of the model; a killed rank is replaced bit-identically from snapshots of the weights alone; --resume continues bit-identically',
  async t => {
    const seed = seedOf(t, 5)
    const zo: TrainConfig = { ...base, steps: 12, lr: 1e-4, zo: { eps: 1e-3 }, snapshot: { k: 2, m: 1 } }
    const clean = await killReplacedBitIdentically(t, zo, seed, 7)
    const adamw = simOk(await simTrain(5, { ...base, steps: 12, snapshot: { k: 2, m: 1 } }, { seed }))
    t.not(adamw.weightsHash, clean.weightsHash, 'zeroth-order steps train other weights than AdamW')
    // Snapshots hold the weights alone: a third of AdamW's bytes.
    t.log(`snapshot bytes placed: zo ${placed(clean)}, adamw ${placed(adamw)} (${(placed(clean) / placed(adamw)).toFixed(3)}x)`)
    t.true(placed(clean) < 0.4 * placed(adamw), `zo ${placed(clean)} vs adamw ${placed(adamw)}`)
    // What a step sends: the difference between runs of 20 and 10 steps (the model's gathers at
    // the start and for the final evaluation are the same in both), per rank and step.
    const sent = (r: typeof clean): number => r.statuses.filter(s => s.role === 'done').reduce((a, s) => a + s.bytes.host + s.bytes.zone + s.bytes.wan, 0)
    const off = { ...zo, snapshot: undefined }
    const ten = simOk(await simTrain(4, { ...off, steps: 10 }, { seed }))
    const twenty = simOk(await simTrain(4, { ...off, steps: 20 }, { seed }))
    const perRankStep = (sent(twenty) - sent(ten)) / 10 / 4
    const firstOrder =
      (sent(simOk(await simTrain(4, { ...base, steps: 20 }, { seed }))) - sent(simOk(await simTrain(4, { ...base, steps: 10 }, { seed })))) / 10 / 4
    t.log(`bytes sent per rank per step: zo ${perRankStep.toFixed(0)}, AdamW ${firstOrder.toFixed(0)} (the mini model, ${base.model.C} wide)`)
    t.true(perRankStep > 0 && perRankStep <= 1024, `zo sends ${perRankStep} bytes per rank per step`)
    // A slope that is not finite (here: a learning rate that blows the weights up) ends the run
    // with a clear error, not eight recoveries that replay the same value (a rank whose last
    // gather the first to stop cut short reports that instead).
    const blown = await simTrain(4, { ...off, steps: 10, snapshot: { k: 2, m: 1 }, lr: 1e30 }, { seed })
    const why = blown.errors.map(e => e.message).join('\n')
    t.true(
      blown.errors.some(e => /step \d+: the zeroth-order projected gradient is not finite/.test(e.message)),
      why
    )
    t.true(blown.errors.length + blown.statuses.length >= 4 && blown.statuses.every(s => s.role !== 'done'), why)
    // The disk tier: a run stopped at step 6 and resumed is the run that never stopped.
    const root = mkdtempSync(join(tmpdir(), 'zm-zo-'))
    try {
      const disk =
        (resume: boolean) =>
        (i: number): Partial<TrainConfig> => ({ disk: { dir: diskDir(join(root, `w${i}`)), every: 3, resume } })
      const whole = ok(await trainMesh(3, { ...off, worldSize: 3, steps: 9 }, { configOf: () => ({}) }))
      ok(await trainMesh(3, { ...off, worldSize: 3, steps: 6 }, { configOf: disk(false) }))
      const st = (await loadDiskState(diskDir(join(root, 'w0')), 6))!
      t.is(st.optimizer, 'zo')
      t.is(st.adamM.length + st.adamV.length, 0)
      const resumed = ok(await trainMesh(3, { ...off, worldSize: 3, steps: 9 }, { configOf: disk(true) }))
      t.true(resumed.statuses.every(s => s.resumedFrom === 6 && s.step === 9))
      t.true(resumed.params.length > 0 && same(resumed.params, whole.params), 'resumed from the disk tier: bit-identical final weights')
    } finally {
      rmSync(root, { recursive: true, force: true })
    }
  }
)
