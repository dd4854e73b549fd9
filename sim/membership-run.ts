import { silentLogger } from '../core/index.ts'
import { createMembership, type Membership, type MembershipInit, type PeerNet, type View } from '../mesh/index.ts'
import { Simulation } from './engine.ts'
import { createSimNetwork, DEFAULT_TOPOLOGY, type SimNetwork, type Topology } from './net.ts'

/**
 * A membership workload on SimNet with random faults, and the invariant checks that judge it:
 *
 * - safety: no two different views are ever installed with the same epoch (by any nodes, at
 *   any times);
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

interface Node { id: string, net: PeerNet, m: Membership | undefined }

/** Runs one seeded random-fault run; deterministic in (seed, options, code). */
export async function randomMembershipRun (seed: number, opts: RandomRunOptions): Promise<RunResult> {
  const sim = new Simulation({ seed, keepTrace: opts.keepTrace })
  const simnet: SimNetwork = createSimNetwork(sim, opts.topology ?? DEFAULT_TOPOLOGY)
  const rng = sim.rng.split('faults')
  const init: MembershipInit = { heartbeatMs: 100, expect: opts.nodes, ...opts.membership }
  const installed = new Map<number, string>()
  const violations: string[] = []
  const faults: string[] = []
  let maxEpoch = 0
  const nodes: Node[] = []
  const zones = Math.max(1, Math.min(3, Math.floor(opts.nodes / 3)))

  const boot = async (n: Node, created: { net: PeerNet, clock: import('./engine.ts').NodeClock }): Promise<void> => {
    const m = createMembership(init, { net: created.net, clock: created.clock, rng: sim.rng.split(`m/${n.id}/${faults.length}`), log: silentLogger() })
    m.on('view', (v: View) => {
      const key = v.members.map(x => x.id).join(',')
      sim.trace('view', { node: n.id, epoch: v.epoch, members: key })
      maxEpoch = Math.max(maxEpoch, v.epoch)
      const prev = installed.get(v.epoch)
      if (prev === undefined) installed.set(v.epoch, key)
      else if (prev !== key) violations.push(`epoch ${v.epoch}: [${prev}] and [${key}] (seed ${seed})`)
    })
    n.m = m
    await created.net.start()
    await m.start()
  }

  const handles = new Map<string, ReturnType<SimNetwork['createPeer']>>()
  for (let i = 0; i < opts.nodes; i++) {
    const id = `n${String(i).padStart(3, '0')}`
    const h = simnet.createPeer({ id, labels: { zone: `z${i % zones}`, host: `h${i}` } })
    handles.set(id, h)
    const n: Node = { id, net: h.net, m: undefined }
    nodes.push(n)
  }
  for (const n of nodes) await boot(n, handles.get(n.id)!)
  const all = nodes.map(n => n.id)
  const agree = (): boolean => {
    const want = all.join(',')
    return nodes.every(n => n.m?.view()?.members.map(x => x.id).sort().join(',') === want)
  }
  await sim.until(agree, 10_000)

  const down = new Set<string>()
  const paused = new Set<string>()
  const maxDown = opts.maxDown ?? Math.floor((opts.nodes - 1) / 2)
  const maxGap = opts.maxGapMs ?? 1500
  for (let f = 0; f < opts.faults; f++) {
    const action = rng.int(0, 6)
    const up = all.filter(id => !down.has(id))
    if (action === 0 && down.size < maxDown) {
      const id = rng.pick(up)
      simnet.crash(id)
      down.add(id)
      paused.delete(id)
      faults.push(`crash ${id}`)
    } else if (action === 1 && down.size > 0) {
      const id = rng.pick([...down].sort())
      down.delete(id)
      await boot(nodes.find(n => n.id === id)!, handles.get(id)!)
      faults.push(`restart ${id}`)
    } else if (action === 2) {
      const shuffled = rng.shuffle([...all])
      const cut = rng.int(1, Math.max(2, Math.floor(all.length / 2) + 1))
      simnet.partition([shuffled.slice(0, cut), shuffled.slice(cut)])
      faults.push(`partition ${cut}|${all.length - cut}`)
    } else if (action === 3) {
      simnet.heal()
      faults.push('heal')
    } else if (action === 4 && up.length > 0) {
      const id = rng.pick(up)
      if (paused.has(id)) {
        simnet.resume(id)
        paused.delete(id)
        faults.push(`resume ${id}`)
      } else {
        simnet.pause(id)
        paused.add(id)
        faults.push(`pause ${id}`)
      }
    } else {
      faults.push('quiet')
    }
    await sim.run(rng.int(10, maxGap))
    if (violations.length > 0) break
  }
  // Heal everything, then give liveness its chance.
  simnet.heal()
  for (const id of [...paused].sort()) simnet.resume(id)
  for (const id of [...down].sort()) await boot(nodes.find(n => n.id === id)!, handles.get(id)!)
  const convergedMs = await sim.until(agree, opts.convergeLimitMs ?? 20_000)
  return { seed, traceHash: sim.traceHash(), events: sim.events, violations, convergedMs, maxEpoch, faults, trace: sim.traceLines() }
}
