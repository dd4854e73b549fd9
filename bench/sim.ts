// Simulator throughput: the real membership code on N simulated nodes for a simulated span
// with a few faults (a member crash, a leader crash, restarts with and without state, a
// zone cut off and healed). Prints events/s, simulated seconds per wall second and the wall
// time of the whole span. The target: 1000 nodes x 1 simulated hour in under 60 s,
// counted from the world's construction: formation (every node connecting to every other and
// agreeing on the first view) is part of the run, so `total_wall_s_per_sim_hour` (formation
// plus the span, the span scaled to an hour when it is shorter) is the figure the target
// compares; `span_wall_s_per_sim_hour` leaves formation out.
//
// Knobs: BENCH_SIM_NODES (default 1000; a comma list runs several), BENCH_SIM_SECONDS
// (default 3600), BENCH_SIM_HB_MS (heartbeat period, default 1000). The line also carries the
// process's CPU seconds over the measured span and the 1-minute load average at its end, for
// runs on a machine that other jobs share.
import { loadavg } from 'node:os'
import { MembershipWorld } from '../sim/index.ts'

const sizes = (process.env['BENCH_SIM_NODES'] ?? '1000').split(',').map(Number)
const simSeconds = Number(process.env['BENCH_SIM_SECONDS'] ?? 3600)
const heartbeatMs = Number(process.env['BENCH_SIM_HB_MS'] ?? 1000)
for (const nodes of sizes) {
  const zones = 10
  const t0 = performance.now()
  const cpuStart = process.cpuUsage()
  const w = new MembershipWorld({ seed: 1, nodes, zones, membership: { heartbeatMs } })
  await w.bootAll()
  const formed = await w.sim.until(() => w.converged(), 60_000, 100)
  const tForm = performance.now()
  const cpu0 = process.cpuUsage()
  const formCpu = process.cpuUsage(cpuStart)
  const e0 = w.sim.events
  const s0 = w.sim.now()
  const span = simSeconds * 1000
  const leader = (): string => w.nodes.find(n => n.state === 'up')?.m?.status().leader ?? 'n000'
  const member = w.ids[Math.floor(nodes / 2)]!
  const faults: Array<[number, () => Promise<void> | void, string]> = [
    [0.1, () => w.crash(member), `crash ${member}`],
    [0.2, () => w.crash(leader()), 'crash the leader'],
    [
      0.3,
      async () => {
        for (const n of w.nodes.filter(x => x.state === 'down')) await w.boot(n, { keepState: n.id === member })
      },
      'restart both (one with state)'
    ],
    [0.5, () => w.net.partition([w.nodes.filter(n => n.zone === 'z3').map(n => n.id), w.nodes.filter(n => n.zone !== 'z3').map(n => n.id)]), 'cut zone z3 off'],
    [0.5 + 60_000 / span, () => w.net.heal(), 'heal']
  ]
  const applied: string[] = []
  for (const [frac, act, what] of faults) {
    const at = s0 + Math.min(span, frac * span)
    if (at > w.sim.now()) await w.sim.run(at - w.sim.now())
    await act()
    applied.push(what)
  }
  await w.sim.run(s0 + span - w.sim.now())
  const wall = (performance.now() - tForm) / 1000
  const cpu = process.cpuUsage(cpu0)
  const formWall = (tForm - t0) / 1000
  const simulated = (w.sim.now() - s0) / 1000
  const events = w.sim.events - e0
  const line = {
    bench: 'sim.membership',
    nodes,
    heartbeat_ms: heartbeatMs,
    faults: applied,
    formation_sim_ms: formed ?? null,
    formation_wall_s: Number(formWall.toPrecision(3)),
    formation_cpu_s: Number(((formCpu.user + formCpu.system) / 1e6).toPrecision(3)),
    simulated_s: simulated,
    wall_s: Number(wall.toPrecision(3)),
    // CPU time of this process over the same span (user + system, all its threads): the wall
    // time on a machine shared with other work is this or more.
    cpu_s: Number(((cpu.user + cpu.system) / 1e6).toPrecision(3)),
    load_avg_1m: Number(loadavg()[0]!.toFixed(2)),
    total_wall_s: Number(((performance.now() - t0) / 1000).toPrecision(3)),
    total_cpu_s: Number(((formCpu.user + formCpu.system + cpu.user + cpu.system) / 1e6).toPrecision(3)),
    events,
    events_per_s: Math.round(events / wall),
    sim_s_per_wall_s: Number((simulated / wall).toPrecision(3)),
    span_wall_s_per_sim_hour: Math.round((3600 * wall) / simulated),
    total_wall_s_per_sim_hour: Math.round(formWall + (3600 * wall) / simulated),
    target_wall_s_per_sim_hour: nodes === 1000 ? 60 : null,
    meets_target: nodes === 1000 ? formWall + (3600 * wall) / simulated < 60 : null,
    converged_at_end: w.converged(),
    violations: w.violations.length,
    // (Same seed and code, same hash: a change that should alter no ordering can be checked.)
    trace_hash: w.sim.traceHash().slice(0, 16),
    heap_mib: Math.round(process.memoryUsage().heapUsed / 1024 / 1024)
  }
  process.stdout.write(JSON.stringify(line) + '\n')
}
