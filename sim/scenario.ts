import { readFileSync } from 'node:fs'
import { z } from 'zod'
import { ZeromeshError } from '../core/index.ts'
import { DEFAULT_TOPOLOGY, type LinkProfile, type Tier, type Topology } from './net.ts'
import { MembershipWorld } from './world.ts'

/**
 * Scenario files: JSON with a strict schema (unknown keys are errors, and errors name the
 * field). A scenario gives the topology, node count, membership settings, a fault schedule
 * and/or random fault rates, a duration, and assertions. `runScenario` plays it on the
 * membership workload and returns a report.
 */

/** A scenario file that does not validate: the message names the field and why. */
export class ScenarioError extends ZeromeshError {
  static override name = 'ScenarioError'
}

/** Caps of a scenario file (docs/LIMITS.md, sim). */
export const SCENARIO_LIMITS = Object.freeze({
  /** Random faults of one kind per simulated second. */
  maxFaultsPerS: 100,
  /** Random faults drawn for one run, all kinds together (checked while drawing). */
  maxRandomFaults: 100_000,
  /** A slow node's or a degraded link's factor. */
  maxFactor: 1e6,
  /** The membership heartbeat (ms). */
  minHeartbeatMs: 10,
  maxHeartbeatMs: 60_000,
  /** A convergence or detection bound (ms): past it a run that never converges would run on for that long. */
  maxAssertionMs: 3600_000
})

const nodeRef = z.string().regex(/^n\d{3}$/, 'node ids look like n000, n001, ...')
const linkProfile = z
  .strictObject({
    latencyMs: z.number().min(0).max(60_000),
    jitterMs: z.number().min(0).max(60_000),
    bandwidthBytesPerS: z.number().positive(),
    loss: z.number().min(0).max(1),
    duplicate: z.number().min(0).max(1),
    corrupt: z.number().min(0).max(1)
  })
  .partial()
const linkCapacity = z.strictObject({ egressBytesPerS: z.number().positive(), ingressBytesPerS: z.number().positive() }).partial()
/**
 * The network of a scenario (membership or training): a link profile per tier, the NIC of every
 * host and the uplink of every zone (bytes per second each way, shared by all traffic through
 * them), and per-zone overrides of both by zone name (`z0`, `z1`, ...). Anything left out takes
 * DEFAULT_TOPOLOGY's value.
 */
export const topologySchema = z
  .strictObject({
    host: linkProfile,
    zone: linkProfile,
    wan: linkProfile,
    nic: linkCapacity,
    uplink: linkCapacity,
    zones: z.record(
      z.string().regex(/^z(0|[1-9]\d*)$/, 'zone names look like z0, z1, ...'),
      z.strictObject({ nic: linkCapacity, uplink: linkCapacity }).partial()
    )
  })
  .partial()
const at = z.number().min(0)
const groups = z.array(z.array(z.string().min(1)).min(1)).min(2)

const fault = z.union([
  z.strictObject({ at, crash: nodeRef }),
  z.strictObject({ at, restart: nodeRef, state: z.enum(['fresh', 'kept']).default('fresh') }),
  z.strictObject({ at, pause: nodeRef, forMs: z.number().positive().optional() }),
  z.strictObject({ at, resume: nodeRef }),
  z.strictObject({ at, partition: groups }),
  z.strictObject({ at, heal: z.literal(true) }),
  z.strictObject({ at, slow: nodeRef, factor: z.number().min(1).max(SCENARIO_LIMITS.maxFactor) }),
  z.strictObject({ at, degrade: z.tuple([nodeRef, nodeRef]), factor: z.number().min(1).max(SCENARIO_LIMITS.maxFactor) }),
  z.strictObject({ at, tier: z.enum(['host', 'zone', 'wan']), profile: linkProfile }),
  z.strictObject({ at, crashZone: z.string().min(1) }),
  z.strictObject({ at, byzantine: nodeRef, forMs: z.number().positive() })
])

export const scenarioSchema = z.strictObject({
  name: z.string().min(1).max(100),
  description: z.string().max(2000).optional(),
  seed: z.int().nonnegative().default(1),
  nodes: z.int().min(1).max(5000),
  zones: z.int().min(1).max(1000).default(3),
  durationMs: z
    .number()
    .positive()
    .max(24 * 3600_000),
  topology: topologySchema.optional(),
  membership: z
    .strictObject({
      heartbeatMs: z.number().min(SCENARIO_LIMITS.minHeartbeatMs).max(SCENARIO_LIMITS.maxHeartbeatMs).optional(),
      phiThreshold: z.number().min(1).max(100).optional(),
      expect: z.int().min(1).max(5000).optional()
    })
    .optional(),
  faults: z.array(fault).max(10_000).default([]),
  random: z
    .strictObject({
      /** Mean faults per simulated second, by kind. */
      crashPerS: z.number().min(0).max(SCENARIO_LIMITS.maxFaultsPerS).default(0),
      partitionPerS: z.number().min(0).max(SCENARIO_LIMITS.maxFaultsPerS).default(0),
      pausePerS: z.number().min(0).max(SCENARIO_LIMITS.maxFaultsPerS).default(0),
      /** How long random partitions and pauses last (ms). */
      faultMs: z
        .number()
        .positive()
        .max(24 * 3600_000)
        .default(2000),
      /** Most nodes down at once (default: a minority). */
      maxDown: z.int().min(0).optional()
    })
    .optional(),
  assertions: z
    .strictObject({
      safety: z.boolean().default(true),
      /** After the last fault is healed (or at the end), one view with every up node within this (ms). */
      convergeWithinMs: z.number().positive().max(SCENARIO_LIMITS.maxAssertionMs).optional(),
      /** Each crash must be out of every live node's view within this (ms). */
      detectWithinMs: z.number().positive().max(SCENARIO_LIMITS.maxAssertionMs).optional()
    })
    .default({ safety: true })
})

export type Scenario = z.output<typeof scenarioSchema>
export type Fault = z.output<typeof fault>

/** Parses and validates a scenario object; errors name the field. */
export function parseScenario(raw: unknown, source = 'scenario'): Scenario {
  // A workload other than the two there are is named as such (not as the membership schema's first missing field).
  const workload = typeof raw === 'object' && raw !== null ? (raw as { workload?: unknown }).workload : undefined
  if (workload !== undefined && workload !== 'train')
    throw new ScenarioError(`${source}: workload: must be "train" (a training scenario) or absent (a membership scenario), got ${JSON.stringify(workload)}`)
  const r = scenarioSchema.safeParse(raw)
  if (!r.success) {
    const issue = r.error.issues[0]!
    const where = issue.path.length === 0 ? '(top level)' : issue.path.join('.')
    throw new ScenarioError(`${source}: ${where}: ${issue.message}`)
  }
  const s = r.data
  checkTopologyZones(s.topology, s.zones, source)
  if (s.membership?.expect !== undefined && s.membership.expect > s.nodes)
    throw new ScenarioError(`${source}: membership.expect: ${s.membership.expect} is more than the ${s.nodes} nodes: the first view would never form`)
  if (s.membership?.expect !== undefined && s.membership.expect <= s.nodes / 2)
    throw new ScenarioError(
      `${source}: membership.expect: ${s.membership.expect} is not more than half of the ${s.nodes} nodes: two disjoint first views could form (genesis needs a majority of the nodes started)`
    )
  for (const [i, f] of s.faults.entries()) {
    for (const id of faultNodes(f)) {
      if (Number(id.slice(1)) >= s.nodes) throw new ScenarioError(`${source}: faults.${i}: node ${id} does not exist (nodes: ${s.nodes})`)
    }
    if (f.at > s.durationMs) throw new ScenarioError(`${source}: faults.${i}.at: ${f.at} is after durationMs ${s.durationMs}`)
  }
  return s
}

/** Throws ScenarioError naming `topology.zones.<name>` when it overrides a zone the scenario does not have. */
export function checkTopologyZones(t: z.output<typeof topologySchema> | undefined, zones: number, source: string): void {
  for (const name of Object.keys(t?.zones ?? {})) {
    if (Number(name.slice(1)) >= zones) throw new ScenarioError(`${source}: topology.zones.${name}: no such zone (zones: ${zones}, named z0 to z${zones - 1})`)
  }
}

/** A scenario's network: its topology over DEFAULT_TOPOLOGY (a fresh object: a `profile` fault may change its tiers). */
export function topologyOf(t: z.output<typeof topologySchema> | undefined): Topology {
  const out: Topology = { ...DEFAULT_TOPOLOGY }
  for (const tier of ['host', 'zone', 'wan'] as const) out[tier] = { ...DEFAULT_TOPOLOGY[tier], ...(t?.[tier] ?? {}) } as LinkProfile
  if (t?.nic !== undefined) out.nic = { ...DEFAULT_TOPOLOGY.nic, ...t.nic }
  if (t?.uplink !== undefined) out.uplink = { ...DEFAULT_TOPOLOGY.uplink, ...t.uplink }
  if (t?.zones !== undefined) out.zones = t.zones
  return out
}

/** Reads a scenario file. */
export function loadScenario(path: string): Scenario {
  let text: string
  try {
    text = readFileSync(path, 'utf8')
  } catch (err) {
    throw new ScenarioError(`cannot read scenario ${path}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`)
  }
  let raw: unknown
  try {
    raw = JSON.parse(text)
  } catch (err) {
    throw new ScenarioError(`${path} is not valid JSON: ${(err as Error).message}`)
  }
  return parseScenario(raw, path)
}

function faultNodes(f: Fault): string[] {
  // Partition groups name nodes too ('*' stands for every node not named).
  if ('partition' in f) return f.partition.flat().filter(id => id !== '*')
  if ('crash' in f) return [f.crash]
  if ('restart' in f) return [f.restart]
  if ('pause' in f) return [f.pause]
  if ('resume' in f) return [f.resume]
  if ('slow' in f) return [f.slow]
  if ('degrade' in f) return [...f.degrade]
  if ('byzantine' in f) return [f.byzantine]
  return []
}

/** What happened to one crash: when each live node's view dropped the crashed node. */
export interface FaultReport {
  at: number
  fault: string
  /** For crashes: simulated ms until the first view without the node was installed anywhere. */
  firstViewChangeMs?: number
  /** For crashes: ms until every node that stayed up had such a view. */
  allViewsChangedMs?: number
}

export interface ScenarioReport {
  scenario: string
  seed: number
  nodes: number
  durationMs: number
  traceHash: string
  events: number
  faults: FaultReport[]
  views: Array<{ at: number; node: string; epoch: number; members: number }>
  maxEpoch: number
  tiers: Record<Tier, { messages: number; bytes: number }>
  invariants: {
    safety: { ok: boolean; violations: string[] }
    liveness: { ok: boolean; convergedAfterMs: number | undefined; limitMs: number | undefined }
    detection: { ok: boolean; worstMs: number | undefined; limitMs: number | undefined }
  }
  ok: boolean
  /** Node states over time, for the timeline. */
  timeline: Array<{ at: number; node: string; state: 'up' | 'down' | 'paused' }>
}

function describeFault(f: Fault): string {
  const { at: _at, ...rest } = f
  return JSON.stringify(rest)
}

/** A fault at its time from the start of the run. */
interface Planned {
  at: number
  f: Fault
}

/** A crash whose detection is being timed. */
interface PendingCrash {
  report: FaultReport
  node: string
  at: number
}

/** What playing faults on a world needs and records. */
interface Play {
  w: MembershipWorld
  topology: Topology
  t0: number
  maxDown: number
  reports: FaultReport[]
  pendingCrashes: PendingCrash[]
  timeline: ScenarioReport['timeline']
}

const mark = (p: Play, node: string, state: 'up' | 'down' | 'paused'): void => {
  p.timeline.push({ at: p.w.sim.now(), node, state })
}

/** The schedule: listed faults plus random ones drawn from the seed, in time order. */
function planFaults(s: Scenario, w: MembershipWorld, nodes: number): Planned[] {
  const plan: Planned[] = s.faults.filter(f => faultNodes(f).every(id => Number(id.slice(1)) < nodes)).map(f => ({ at: f.at, f }))
  const random = s.random
  if (random !== undefined) {
    const rng = w.sim.rng.split('random-faults')
    // Random faults stop early enough for an asserted convergence window (and their heal) to be
    // quiet: a fault drawn inside it would fail the assertion without any protocol bug.
    const quietFrom = s.durationMs - (s.assertions.convergeWithinMs === undefined ? 0 : s.assertions.convergeWithinMs + random.faultMs)
    let drawn = 0
    const draw = (perS: number, make: (t: number) => Fault[]): void => {
      if (perS <= 0) return
      for (let t = 0; ; ) {
        t += (-Math.log(1 - rng.float()) / perS) * 1000
        if (t >= quietFrom) break
        if (++drawn > SCENARIO_LIMITS.maxRandomFaults)
          throw new ScenarioError(
            `${s.name}: random faults: more than ${SCENARIO_LIMITS.maxRandomFaults} in ${s.durationMs} ms; lower the rates or the duration`
          )
        plan.push(...make(t).map(f => ({ at: f.at, f })))
      }
    }
    const id = (): string => `n${String(rng.int(0, nodes)).padStart(3, '0')}`
    draw(random.crashPerS, t => {
      const n = id()
      const state = rng.bool(0.5) ? ('kept' as const) : ('fresh' as const)
      return [
        { at: t, crash: n },
        { at: Math.min(s.durationMs, t + random.faultMs), restart: n, state }
      ]
    })
    draw(random.pausePerS, t => {
      const n = id()
      return [{ at: t, pause: n, forMs: random.faultMs }]
    })
    draw(random.partitionPerS, t => {
      const ids = rng.shuffle(w.ids)
      const cut = rng.int(1, Math.max(2, Math.floor(nodes / 2) + 1))
      return [
        { at: t, partition: [ids.slice(0, cut), ids.slice(cut)] },
        { at: Math.min(s.durationMs, t + random.faultMs), heal: true as const }
      ]
    })
  }
  plan.sort((a, b) => a.at - b.at)
  return plan
}

/** Applies a fault that changes a node (crash, restart, pause, resume, byzantine, zone crash); false if `f` is of another kind. */
async function applyNodeFault(p: Play, f: Fault, report: FaultReport): Promise<boolean> {
  const { w } = p
  if ('crash' in f) {
    const n = w.node(f.crash)
    if (n.state === 'down' || w.nodes.filter(x => x.state === 'down').length >= p.maxDown) return true
    w.crash(f.crash)
    mark(p, f.crash, 'down')
    p.pendingCrashes.push({ report, node: f.crash, at: w.sim.now() })
  } else if ('restart' in f) {
    const n = w.node(f.restart)
    if (n.state !== 'down') return true
    await w.boot(n, { keepState: f.state === 'kept' })
    mark(p, f.restart, 'up')
  } else if ('pause' in f) {
    if (w.node(f.pause).state !== 'up') return true
    w.pause(f.pause)
    mark(p, f.pause, 'paused')
    if (f.forMs !== undefined) {
      const id = f.pause
      w.sim.clock.setTimeout(() => {
        if (w.node(id).state === 'paused') {
          w.resume(id)
          mark(p, id, 'up')
        }
      }, f.forMs)
    }
  } else if ('resume' in f) {
    if (w.node(f.resume).state !== 'paused') return true
    w.resume(f.resume)
    mark(p, f.resume, 'up')
  } else if ('byzantine' in f) {
    if (w.node(f.byzantine).state !== 'up') return true
    w.byzantine(f.byzantine, f.forMs)
  } else if ('crashZone' in f) {
    for (const n of w.nodes) {
      if (n.zone !== f.crashZone || n.state === 'down') continue
      w.crash(n.id)
      mark(p, n.id, 'down')
      p.pendingCrashes.push({ report: { ...report, fault: `crash ${n.id} (zone ${f.crashZone})` }, node: n.id, at: w.sim.now() })
    }
  } else {
    return false
  }
  // (A refused node fault returned above without a report.)
  p.reports.push(report)
  return true
}

/** Applies a fault to the network (partition, heal, slow, degrade, a tier's profile). */
function applyNetFault(p: Play, f: Fault): void {
  const { w } = p
  if ('partition' in f) {
    const expand = (g: string[]): string[] => g.flatMap(x => (x === '*' ? [] : w.nodes.filter(n => n.id === x || n.zone === x).map(n => n.id)))
    const listed = new Set(f.partition.flatMap(expand))
    const resolved = f.partition.map(g => (g.includes('*') ? [...expand(g), ...w.ids.filter(id => !listed.has(id))] : expand(g)))
    w.net.partition(resolved)
  } else if ('heal' in f) {
    w.net.heal()
  } else if ('slow' in f) {
    w.net.slow(f.slow, f.factor)
  } else if ('degrade' in f) {
    w.net.degrade(f.degrade[0], f.degrade[1], f.factor)
  } else if ('profile' in f) {
    Object.assign(p.topology[f.tier], f.profile)
  }
}

async function applyFault(p: Play, f: Fault): Promise<void> {
  const report: FaultReport = { at: p.w.sim.now() - p.t0, fault: describeFault(f) }
  if (await applyNodeFault(p, f, report)) return
  applyNetFault(p, f)
  p.reports.push(report)
}

/** Updates detection figures: has every up node dropped each crashed node yet? */
function checkDetections(p: Play): void {
  const { w } = p
  for (const c of p.pendingCrashes) {
    if (c.report.allViewsChangedMs !== undefined) continue
    const dropped = w.views.find(v => v.at >= c.at && !v.members.includes(c.node))
    if (dropped !== undefined && c.report.firstViewChangeMs === undefined) c.report.firstViewChangeMs = dropped.at - c.at
    const up = w.nodes.filter(n => n.state === 'up')
    if (w.node(c.node).state === 'down' && up.every(n => n.m?.view() !== undefined && !n.m.view()!.members.some(m => m.id === c.node))) {
      c.report.allViewsChangedMs = w.sim.now() - c.at
    }
  }
}

/**
 * Plays a scenario. `progress(fraction)` is called as simulated time advances. Overrides let
 * the CLI change the seed or the node count. `loseAcceptorRecords` is deliberately unsafe,
 * only for tests that prove the safety checker can fail (see WorldInit).
 */
export async function runScenario(
  s: Scenario,
  opts: { seed?: number; nodes?: number; progress?: (f: number) => void; loseAcceptorRecords?: boolean } = {}
): Promise<ScenarioReport> {
  const seed = opts.seed ?? s.seed
  const nodes = opts.nodes ?? s.nodes
  const topology = topologyOf(s.topology)
  const w = new MembershipWorld({
    seed,
    nodes,
    zones: s.zones,
    topology,
    membership: { ...s.membership, expect: s.membership?.expect ?? nodes },
    loseAcceptorRecords: opts.loseAcceptorRecords === true
  })
  const { sim } = w
  const p: Play = { w, topology, t0: 0, maxDown: 0, reports: [], pendingCrashes: [], timeline: [] }
  await w.bootAll()
  for (const id of w.ids) mark(p, id, 'up')
  p.t0 = sim.now()
  const plan = planFaults(s, w, nodes)
  p.maxDown = s.random?.maxDown ?? Math.floor((nodes - 1) / 2)
  const t0 = p.t0
  const step = Math.max(10, Math.min(500, s.durationMs / 200))
  let next = 0
  while (sim.now() - t0 < s.durationMs) {
    while (next < plan.length && plan[next]!.at <= sim.now() - t0) await applyFault(p, plan[next++]!.f)
    const until = Math.min(s.durationMs, next < plan.length ? plan[next]!.at : Infinity, sim.now() - t0 + step)
    await sim.run(Math.max(1, until - (sim.now() - t0)))
    checkDetections(p)
    opts.progress?.(Math.min(1, (sim.now() - t0) / s.durationMs))
    if (w.violations.length > 0) break
  }
  const convergedAfterMs = await sim.until(() => w.converged(), s.assertions.convergeWithinMs ?? 0, 10)
  checkDetections(p)
  return reportOf(s, p, seed, nodes, convergedAfterMs)
}

/** The report of a played scenario: what happened and whether its assertions held. */
function reportOf(s: Scenario, p: Play, seed: number, nodes: number, convergedAfterMs: number | undefined): ScenarioReport {
  const { w, pendingCrashes } = p
  const limit = s.assertions.convergeWithinMs
  const worst = pendingCrashes.reduce<number | undefined>(
    (a, c) => (c.report.allViewsChangedMs === undefined ? a : Math.max(a ?? 0, c.report.allViewsChangedMs)),
    undefined
  )
  const detectLimit = s.assertions.detectWithinMs
  const detectionOk =
    detectLimit === undefined ||
    pendingCrashes.every(c => w.node(c.node).state !== 'down' || (c.report.allViewsChangedMs !== undefined && c.report.allViewsChangedMs <= detectLimit))
  const safetyOk = !s.assertions.safety || w.violations.length === 0
  const livenessOk = limit === undefined || convergedAfterMs !== undefined
  return {
    scenario: s.name,
    seed,
    nodes,
    durationMs: s.durationMs,
    traceHash: w.sim.traceHash(),
    events: w.sim.events,
    faults: p.reports,
    views: dedupeViews(w.views),
    maxEpoch: w.maxEpoch,
    tiers: w.net.stats(),
    invariants: {
      safety: { ok: w.violations.length === 0, violations: w.violations },
      liveness: { ok: livenessOk, convergedAfterMs, limitMs: limit },
      detection: { ok: detectionOk, worstMs: worst, limitMs: detectLimit }
    },
    ok: safetyOk && livenessOk && detectionOk,
    timeline: p.timeline
  }
}

/** The first installation of each epoch (others install the same view later). */
function dedupeViews(views: ReadonlyArray<{ at: number; node: string; epoch: number; members: string[] }>): ScenarioReport['views'] {
  const seen = new Set<number>()
  const out: ScenarioReport['views'] = []
  for (const v of views) {
    if (seen.has(v.epoch)) continue
    seen.add(v.epoch)
    out.push({ at: v.at, node: v.node, epoch: v.epoch, members: v.members.length })
  }
  return out
}
