import { RealClock, Rng, createLogger, silentLogger, type Logger } from '../../core/index.ts'
import { createMemoryNetwork, createMembership, type Membership, type MemoryNetwork, type PeerNet } from '../../mesh/index.ts'
import { type Backend, CpuBackend, gptLayout } from '../../gpu/index.ts'
import { Trainer, trainingModel, type TrainConfig, type TrainStatus } from '../../node/index.ts'
import type { Corpus } from '../../node/index.ts'

// A small repetitive corpus, so a tiny model learns visibly in a few dozen steps.
export function corpus(): Corpus {
  const text = Buffer.from('the quick brown fox jumps over the lazy dog. '.repeat(400))
  const ids = new Uint16Array(text.length)
  ids.set(text)
  return { source: 'test', vocabSize: 256, train: ids, val: ids.subarray(0, 100) }
}

export const model = trainingModel('mini', 256)
export const base: TrainConfig = {
  model: { ...model, maxT: 16 },
  B: 2,
  T: 16,
  steps: 30,
  lr: 1e-2,
  weightDecay: 0,
  seed: 5,
  worldSize: 4,
  zeroPP: false,
  dtype: 'f32',
  snapshot: undefined
}

/** ZEROMESH_TEST_LOG=info (or debug) shows the trainers' structured logs on stderr. */
const logFor = (i: number): Logger => {
  const level = process.env['ZEROMESH_TEST_LOG']
  return level === undefined ? silentLogger() : createLogger({ level: level as 'info', name: `w${i}` })
}

export interface MeshNode {
  net: PeerNet
  membership: Membership
  ctrl: AbortController
  killed: boolean
}

/** What a run's onStep hook may do to the mesh. */
export interface MeshControl {
  hub: MemoryNetwork
  nodes: MeshNode[]
  /** Crashes these nodes at once (by index). */
  kill(indexes: number[]): void
}

export interface MeshRun {
  /** Statuses of the nodes that were not killed, in node order. */
  statuses: TrainStatus[]
  /** Errors of the nodes whose run rejected (not killed), in node order. */
  errors: Error[]
  params: Float32Array
}

export interface MeshOptions {
  zones?: number
  /** Crashes the node of `rank` when it commits `atStep`. */
  kill?: { rank: number; atStep: number }
  /** Called on every committed step of every node (node index, status). */
  onStep?: (ctl: MeshControl, i: number, s: TrainStatus) => void
  /** Per-node trainer config changes (e.g. a disk dir). */
  configOf?: (i: number) => Partial<TrainConfig>
  /** What node i's trainer sees as its PeerNet (fault injection on one node's calls). */
  wrapNet?: (i: number, net: PeerNet) => PeerNet
  /** Node i's backend (default: a fresh CpuBackend). */
  backendOf?: (i: number) => Backend
  /** The last `count` nodes start only when some rank commits `atStep` (late joiners). */
  late?: { count: number; atStep: number }
  /**
   * Modelled compute per step (ms, slept on the clock). The memory network delivers in
   * microtasks, so without it a run never yields to timers and heartbeats wait until it ends.
   */
  computeMs?: number
}

/** n in-process workers on a memory network, each with real membership and a Trainer. */
export async function trainMesh(n: number, cfg: TrainConfig, opts: MeshOptions = {}): Promise<MeshRun> {
  const zones = opts.zones ?? 2
  const late = opts.late?.count ?? 0
  const hub = createMemoryNetwork()
  const clock = new RealClock()
  const nodes: MeshNode[] = Array.from({ length: n }, (_, i) => {
    const net = hub.createPeer({ id: `w${i}`, labels: { zone: `z${i % zones}`, host: `h${i}` } })
    const membership = createMembership({ heartbeatMs: 200, expect: n - late }, { net, clock, rng: Rng.fromSeed(i), log: silentLogger() })
    return { net, membership, ctrl: new AbortController(), killed: false }
  })
  const isLate = (i: number): boolean => i >= n - late
  for (const x of nodes.filter((_, i) => !isLate(i))) {
    await x.net.start()
    await x.membership.start()
  }
  let joined: () => void = () => {}
  const joining = new Promise<void>(resolve => {
    joined = resolve
  })
  let lateStarted = false
  const startLate = (): void => {
    if (lateStarted) return
    lateStarted = true
    void (async () => {
      for (const x of nodes.filter((_, i) => isLate(i))) {
        await x.net.start()
        await x.membership.start()
      }
      joined()
    })()
  }
  const ctl: MeshControl = {
    hub,
    nodes,
    kill(indexes) {
      for (const i of indexes) {
        const x = nodes[i]!
        if (x.killed) continue
        x.killed = true
        hub.kill(x.net.self.id)
        x.ctrl.abort()
        void x.membership.stop()
      }
    }
  }
  const c = corpus()
  let killedOnce = false
  const trainers = nodes.map(
    (x, i) =>
      new Trainer(
        {
          backend: opts.backendOf?.(i) ?? new CpuBackend(),
          net: opts.wrapNet?.(i, x.net) ?? x.net,
          membership: x.membership,
          clock,
          log: logFor(i),
          corpus: c,
          ...(opts.computeMs === undefined ? {} : { computeMs: () => opts.computeMs! }),
          onStep: s => {
            if (opts.late !== undefined && s.rank !== undefined && s.step >= opts.late.atStep) startLate()
            if (opts.kill !== undefined && s.rank === opts.kill.rank && s.step === opts.kill.atStep && !killedOnce) {
              killedOnce = true
              ctl.kill([i])
            }
            opts.onStep?.(ctl, i, s)
          }
        },
        { ...cfg, ...opts.configOf?.(i) }
      )
  )
  const runs = trainers.map((t, i) => (isLate(i) ? joining.then(() => t.run(nodes[i]!.ctrl.signal)) : t.run(nodes[i]!.ctrl.signal)))
  // Once no live node is a rank any more, the spares are told the run is over (as `zeromesh
  // up` stops them): a spare that missed the ranks' done message would otherwise wait on.
  const reaper = setInterval(() => {
    const roles = trainers.filter((_, j) => !nodes[j]!.killed).map(t => t.status().role)
    if (roles.includes('done') && roles.every(r => r === 'done' || r === 'spare' || r === 'failed')) {
      for (const [j, x] of nodes.entries()) if (trainers[j]!.status().role === 'spare') x.ctrl.abort()
    }
  }, 100)
  try {
    const settled = await Promise.allSettled(
      runs.map((r, i) =>
        r.then(
          s => {
            // Once every live rank is done, the spares are told to stop.
            if (s.role === 'done' && trainers.every((t, j) => nodes[j]!.killed || t.status().role !== 'rank')) for (const x of nodes) x.ctrl.abort()
            return s
          },
          (err: unknown) => {
            // A live rank that fails ends the run for the spares too.
            if (!nodes[i]!.killed) for (const [j, x] of nodes.entries()) if (trainers[j]!.status().role === 'spare') x.ctrl.abort()
            throw err
          }
        )
      )
    )
    const statuses: TrainStatus[] = []
    const errors: Error[] = []
    settled.forEach((r, i) => {
      if (nodes[i]!.killed) return
      if (r.status === 'fulfilled') statuses.push(r.value)
      else errors.push(r.reason as Error)
    })
    const N = gptLayout(cfg.model).length
    const params = new Float32Array(N)
    trainers.forEach((t, i) => {
      if (!nodes[i]!.killed && t.finalShard !== undefined) params.set(t.finalShard.data, t.finalShard.start)
    })
    return { statuses, errors, params }
  } finally {
    clearInterval(reaper)
    for (const [i, x] of nodes.entries()) {
      if (isLate(i) && !lateStarted) continue
      if (!x.killed) await x.membership.stop()
      await x.net.stop()
    }
  }
}

/** Throws the first error of a run that should have succeeded. */
export function ok(run: MeshRun): MeshRun {
  if (run.errors.length > 0) throw run.errors[0]
  return run
}
