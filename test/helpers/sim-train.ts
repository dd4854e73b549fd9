// The trainer on the simulator, for recovery tests that need faults at chosen moments: every
// node runs the real membership, snapshot service and trainer on SimNet under one virtual
// clock (sim/'s MembershipWorld), so a run is a pure function of its seed and hooks. Built
// like sim/'s training runner (trainRun), plus what the tests inject: kills at any step,
// partitions healed after a virtual delay, late joiners, per-node config and PeerNet wrappers.
import { createHash } from 'node:crypto'
import { silentLogger, type Clock } from '../../core/index.ts'
import { CpuBackend } from '../../gpu/index.ts'
import type { Membership, PeerNet } from '../../mesh/index.ts'
import { MembershipWorld } from '../../sim/index.ts'
import { createTrainingWorkload, type TrainConfig, type TrainingWorkload, type TrainStatus } from '../../node/index.ts'
import { corpus } from './train-mesh.ts'

/** One simulated node as a hook sees it. */
export interface SimTrainNode {
  readonly id: string
  readonly net: PeerNet
  readonly membership: Membership | undefined
  killed: boolean
}

/** What an onStep hook may do to the simulated mesh. */
export interface SimTrainControl {
  readonly nodes: readonly SimTrainNode[]
  /** Crashes these nodes (by index) at once. */
  kill(indexes: number[]): void
  /** Cuts the links between the two groups of node ids (every other link stays). */
  partition(a: readonly string[], b: readonly string[]): void
  /** Restores every link. */
  heal(): void
  /** Runs `fn` after `ms` of simulated time. */
  after(ms: number, fn: () => void): void
}

export interface SimTrainOptions {
  seed: number
  zones?: number
  /** Called on every committed step of every node (node index, status). */
  onStep?: (ctl: SimTrainControl, i: number, s: TrainStatus) => void
  /** Crashes the node of `rank` when it commits `atStep`. */
  kill?: { rank: number; atStep: number }
  /** Per-node trainer config changes. */
  configOf?: (i: number) => Partial<TrainConfig>
  /** What node i's trainer sees as its PeerNet (fault injection on one node's calls; `clock` is the node's simulated clock). */
  wrapNet?: (i: number, net: PeerNet, clock: Clock) => PeerNet
  /** The last `count` nodes boot only when some rank commits `atStep` (late joiners). */
  late?: { count: number; atStep: number }
  /** Modelled compute per step, in simulated ms (default 5). */
  computeMs?: number
  /** Simulated time after which the run is abandoned (default 10 min). */
  limitMs?: number
}

export interface SimTrainRun {
  /** Statuses of the nodes that were not killed and finished, in node order. */
  statuses: TrainStatus[]
  /** Errors of the nodes whose run rejected (not killed), in node order. */
  errors: Error[]
  /** Nodes still running when the simulated time limit passed. */
  unfinished: string[]
  /** sha256 of the final f32 shards of the ranks, in shard order. */
  weightsHash: string | undefined
  traceHash: string
  simMs: number
}

/** Trains `n` simulated nodes with `cfg` from `o.seed`; deterministic in (n, cfg, o, code). */
export async function simTrain(n: number, cfg: TrainConfig, o: SimTrainOptions): Promise<SimTrainRun> {
  const late = o.late?.count ?? 0
  const w = new MembershipWorld({ seed: o.seed, nodes: n, zones: o.zones ?? 2, membership: { heartbeatMs: 100, expect: n - late } })
  const { sim } = w
  const c = corpus()
  const ctrls = w.nodes.map(() => new AbortController())
  const nodes: SimTrainNode[] = w.nodes.map(x => ({
    id: x.id,
    net: x.net,
    get membership() {
      return x.m
    },
    killed: false
  }))
  const ctl: SimTrainControl = {
    nodes,
    kill(indexes) {
      for (const i of indexes) {
        const x = nodes[i]!
        if (x.killed) continue
        x.killed = true
        sim.trace('test-kill', { node: x.id })
        w.crash(x.id)
        ctrls[i]!.abort()
      }
    },
    partition(a, b) {
      w.net.partition([a, b])
    },
    heal() {
      w.net.heal()
    },
    after(ms, fn) {
      sim.clock.setTimeout(fn, ms)
    }
  }
  const computeMs = o.computeMs ?? 5
  let killedOnce = false
  let lateBooting = false
  const settled = new Map<number, TrainStatus | Error>()
  const trainers: TrainingWorkload[] = []
  const start = async (i: number): Promise<void> => {
    const boot = w.boot(w.nodes[i]!)
    const x = w.nodes[i]!
    const trainer = createTrainingWorkload(
      {
        backend: new CpuBackend(),
        net: o.wrapNet?.(i, x.net, x.handle.clock) ?? x.net,
        membership: x.m!,
        clock: x.handle.clock,
        log: silentLogger(),
        corpus: c,
        computeMs: () => computeMs,
        onStep: s => {
          if (o.late !== undefined && s.rank !== undefined && s.step >= o.late.atStep && !lateBooting) {
            lateBooting = true
            void (async () => {
              for (let j = n - late; j < n; j++) await start(j)
            })()
          }
          if (o.kill !== undefined && s.rank === o.kill.rank && s.step === o.kill.atStep && !killedOnce) {
            killedOnce = true
            ctl.kill([i])
          }
          o.onStep?.(ctl, i, s)
        }
      },
      { ...cfg, ...o.configOf?.(i) }
    )
    trainers[i] = trainer
    await boot
    void trainer.run(ctrls[i]!.signal).then(
      s => {
        settled.set(i, s)
      },
      (err: unknown) => {
        settled.set(i, err instanceof Error ? err : new Error(String(err)))
      }
    )
  }
  // Trainers are built before membership starts, as `zeromesh start` does.
  for (let i = 0; i < n - late; i++) await start(i)
  const t0 = sim.now()
  const limit = o.limitMs ?? 10 * 60_000
  const live = (): number[] => trainers.flatMap((t, i) => (t === undefined || nodes[i]!.killed ? [] : [i]))
  const role = (i: number): string => trainers[i]!.status().role
  // Until no live node is a rank any more (done, failed, or a spare); then the spares are told
  // the run is over, as `zeromesh up` stops them.
  await sim.until(() => live().every(i => settled.has(i) || role(i) === 'spare') && live().some(i => settled.has(i)), limit, 50)
  for (const i of live()) if (!settled.has(i)) ctrls[i]!.abort()
  await sim.until(() => live().every(i => settled.has(i)), 60_000, 50)

  const statuses: TrainStatus[] = []
  const errors: Error[] = []
  const unfinished: string[] = []
  for (const i of live()) {
    const r = settled.get(i)
    if (r === undefined) unfinished.push(nodes[i]!.id)
    else if (r instanceof Error) errors.push(r)
    else statuses.push(r)
  }
  const shards = live()
    .map(i => trainers[i]!.finalShard)
    .filter(x => x !== undefined)
    .sort((a, b) => a.start - b.start)
  let weightsHash: string | undefined
  if (shards.length > 0) {
    const h = createHash('sha256')
    for (const s of shards) h.update(new Uint8Array(s.data.buffer, s.data.byteOffset, s.data.byteLength))
    weightsHash = h.digest('hex')
  }
  return { statuses, errors, unfinished, weightsHash, traceHash: sim.traceHash(), simMs: sim.now() - t0 }
}

/** The run, or a throw naming what went wrong (errors, unfinished nodes). */
export function simOk(r: SimTrainRun): SimTrainRun {
  if (r.errors.length > 0 || r.unfinished.length > 0) {
    throw new Error(
      `simulated run failed: ${r.errors.map(e => e.message).join('; ')}${r.unfinished.length > 0 ? `; unfinished: ${r.unfinished.join(', ')}` : ''}`
    )
  }
  return r
}
