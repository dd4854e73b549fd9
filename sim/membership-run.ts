import type { MembershipInit } from '../mesh/index.ts'
import type { Topology } from './net.ts'
import { MembershipWorld } from './world.ts'

/**
 * Seeded random faults on the membership workload, judged by two invariants:
 *
 * - safety: no two different views are ever installed with the same epoch (by any nodes, at
 *   any times), checked by MembershipWorld on every installation;
 * - liveness: once every fault has healed (partitions healed, crashed nodes restarted,
 *   paused nodes resumed), all nodes install one view holding all of them within
 *   `convergeLimitMs` of simulated time.
 */
export interface RandomRunOptions {
  nodes: number
  /** Faults injected one after another, each followed by a random quiet time. */
  faults: number
  /** Longest quiet time between faults (ms). */
  maxGapMs?: number
  /** Most nodes down at once. Default floor((nodes - 1) / 2). */
  maxDown?: number
  convergeLimitMs?: number
  membership?: MembershipInit
  topology?: Topology
  keepTrace?: boolean
}

export interface RunResult {
  seed: number
  traceHash: string
  events: number
  /** Human-readable safety violations (empty when safe). */
  violations: string[]
  /** Simulated ms from the last heal to one view with everyone, or undefined if it did not happen. */
  convergedMs: number | undefined
  /** Highest epoch installed anywhere. */
  maxEpoch: number
  faults: string[]
  trace: readonly string[]
}

/** Runs one seeded random-fault run; deterministic in (seed, options, code). */
export async function randomMembershipRun(seed: number, opts: RandomRunOptions): Promise<RunResult> {
  const w = new MembershipWorld({
    seed,
    nodes: opts.nodes,
    ...(opts.topology === undefined ? {} : { topology: opts.topology }),
    ...(opts.membership === undefined ? {} : { membership: opts.membership }),
    ...(opts.keepTrace === undefined ? {} : { keepTrace: opts.keepTrace })
  })
  const { sim, net } = w
  const rng = sim.rng.split('faults')
  const faults: string[] = []
  await w.bootAll()
  await sim.until(() => w.converged(), 10_000)

  const maxDown = opts.maxDown ?? Math.floor((opts.nodes - 1) / 2)
  const maxGap = opts.maxGapMs ?? 1500
  const all = w.ids
  for (let f = 0; f < opts.faults; f++) {
    const action = rng.int(0, 6)
    const down = w.nodes.filter(n => n.state === 'down').map(n => n.id)
    const up = w.nodes.filter(n => n.state !== 'down').map(n => n.id)
    if (action === 0 && down.length < maxDown) {
      const id = rng.pick(up)
      w.crash(id)
      faults.push(`crash ${id}`)
    } else if (action === 1 && down.length > 0) {
      const id = rng.pick(down)
      const keepState = rng.bool(0.5)
      await w.boot(w.node(id), { keepState })
      faults.push(`restart ${id} ${keepState ? 'with' : 'without'} state`)
    } else if (action === 2) {
      const shuffled = rng.shuffle([...all])
      const cut = rng.int(1, Math.max(2, Math.floor(all.length / 2) + 1))
      net.partition([shuffled.slice(0, cut), shuffled.slice(cut)])
      faults.push(`partition ${cut}|${all.length - cut}`)
    } else if (action === 3) {
      net.heal()
      faults.push('heal')
    } else if (action === 4 && up.length > 0) {
      const id = rng.pick(up)
      if (w.node(id).state === 'paused') {
        w.resume(id)
        faults.push(`resume ${id}`)
      } else {
        w.pause(id)
        faults.push(`pause ${id}`)
      }
    } else {
      faults.push('quiet')
    }
    await sim.run(rng.int(10, maxGap))
    if (w.violations.length > 0) break
  }
  // Heal everything, then give liveness its chance.
  net.heal()
  for (const n of w.nodes) if (n.state === 'paused') w.resume(n.id)
  for (const n of w.nodes) if (n.state === 'down') await w.boot(n)
  const convergedMs = await sim.until(() => w.converged(), opts.convergeLimitMs ?? 20_000)
  return { seed, traceHash: sim.traceHash(), events: sim.events, violations: w.violations, convergedMs, maxEpoch: w.maxEpoch, faults, trace: sim.traceLines() }
}
