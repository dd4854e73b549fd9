// Simulator throughput: the real membership code on N simulated nodes (heartbeats every
// 500 ms, gossip to every peer), formation, one crash and its view change. Prints events/s,
// simulated seconds per wall second, and the projected wall time of one simulated hour
// (the target: 1000 nodes x 1 simulated hour in under 60 s).
import { MembershipWorld } from '../sim/index.ts'

const sizes = (process.env['BENCH_SIM_NODES'] ?? '100,300,1000').split(',').map(Number)
for (const nodes of sizes) {
  // Keep each measurement to a few wall seconds: fewer simulated seconds for bigger meshes.
  const simSeconds = Number(process.env['BENCH_SIM_SECONDS'] ?? Math.max(1, Math.round(60_000 / (nodes * nodes) * 100) / 100))
  const w = new MembershipWorld({ seed: 1, nodes, zones: 10, membership: { heartbeatMs: 500 } })
  const t0 = performance.now()
  await w.bootAll()
  const formed = await w.sim.until(() => w.converged(), 60_000, 100)
  const tForm = performance.now()
  const e0 = w.sim.events
  const s0 = w.sim.now()
  w.crash('n001')
  await w.sim.run(simSeconds * 1000)
  const wall = (performance.now() - tForm) / 1000
  const simulated = (w.sim.now() - s0) / 1000
  const events = w.sim.events - e0
  const line = {
    bench: 'sim.membership',
    nodes,
    formation_sim_ms: formed ?? null,
    formation_wall_s: Number(((tForm - t0) / 1000).toPrecision(3)),
    simulated_s: simulated,
    wall_s: Number(wall.toPrecision(3)),
    events,
    events_per_s: Math.round(events / wall),
    sim_s_per_wall_s: Number((simulated / wall).toPrecision(3)),
    projected_wall_s_per_sim_hour: Math.round(3600 * wall / simulated),
    target_wall_s_per_sim_hour: nodes === 1000 ? 60 : null,
    heap_mib: Math.round(process.memoryUsage().heapUsed / 1024 / 1024)
  }
  process.stdout.write(JSON.stringify(line) + '\n')
}
