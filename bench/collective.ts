// Collectives: flat ZeRO-3 against ZeRO++ (qwZ + hpZ + qgZ) over the same collective code.
//
// (a) `collective.bytes`: exact bytes per training step (forward weight gather, backward
//     weight gather, gradient reduce-scatter) crossing zones (wan tier), summed over all ranks,
//     for a model of BENCH_COLL_ELEMENTS parameters (default 4M), 8 ranks in 2 and in 4 zones.
//     Flat ZeRO-3 is measured with 16-bit weights and gradients on the wire (bf16, the paper's
//     3M per rank) and with f32 gradients (what this trainer's f32 gradients would move).
//     Required: ratio >= 4.0 against the 16-bit baseline.
// (b) `collective.step_time`: the same step on SimNet, 2 zones x 4 ranks (one host each),
//     10 Gbit/s NICs and 0.1 ms inside a zone, 20 ms between zones through one 1 Gbit/s uplink
//     per zone (each way) that all of a zone's cross-zone traffic shares (BENCH_COLL_SIM_ELEMENTS,
//     default 8M): simulated communication time per step (compute not modelled). Goal: >= 2.5x.
//     The step after a warm-up step is reported (streams already open). One pair alone may use
//     a whole NIC or uplink (per-pair caps 10 and 1 Gbit/s). Chunk size
//     BENCH_COLL_CHUNK_BYTES (default 256 KiB, so 1-4 MB shards pipeline across hops).
import { RealClock } from '../core/index.ts'
import {
  createMemoryNetwork,
  createCollective,
  createZeroComm,
  type PeerNet,
  type View,
  type Collective,
  type ZeroOptions,
  type TierBytes
} from '../mesh/index.ts'
import { Simulation, createSimNetwork, type Topology } from '../sim/index.ts'

const M = Number(process.env['BENCH_COLL_ELEMENTS'] ?? 4_000_000)
const SIM_M = Number(process.env['BENCH_COLL_SIM_ELEMENTS'] ?? 8_000_000)
const SIM_CHUNK = Number(process.env['BENCH_COLL_CHUNK_BYTES'] ?? 256 * 1024)

const REQUIRED_BYTES_RATIO = 4.0
const GOAL_SPEEDUP = 2.5

const CONFIGS: Record<string, ZeroOptions> = {
  'zero3-bf16': { weightWire: 'bf16', gradWire: 'bf16' },
  'zero3-bf16w-f32g': { weightWire: 'bf16', gradWire: 'f32' },
  'zero++': { qwZ: true, hpZ: true, qgZ: true }
}

function viewOf(nets: PeerNet[]): View {
  return { epoch: 1, members: nets.map(n => ({ id: n.self.id, zone: n.self.labels.zone, host: n.self.labels.host })) }
}

/** One training step's communication on every rank; returns bytes per tier summed over ranks. */
async function step(
  colls: Collective[],
  options: ZeroOptions,
  n: number,
  drive?: (p: Promise<unknown>) => Promise<number>
): Promise<{ bytes: TierBytes; perOp: Record<string, TierBytes>; phaseMs: number[] }> {
  const zs = colls.map(c => createZeroComm(c, options))
  const shards = zs.map(z => {
    const s = z.shardOf(n)
    return new Float32Array(s.length).fill(0.01)
  })
  const grads = new Float32Array(n).fill(0.001)
  const phaseMs: number[] = []
  const run = async (p: Promise<unknown>): Promise<void> => {
    if (drive !== undefined) phaseMs.push(await drive(p))
    else await p
  }
  await run(Promise.all(zs.map((z, r) => z.gatherWeights('model', shards[r]!, n, 'forward', { step: 1 }))))
  await run(Promise.all(zs.map((z, r) => z.gatherWeights('model', shards[r]!, n, 'backward', { step: 1 }))))
  await run(Promise.all(zs.map(z => z.reduceGradients('model', grads, { step: 1 }))))
  const bytes: TierBytes = { host: 0, zone: 0, wan: 0 }
  const perOp: Record<string, TierBytes> = {}
  for (const z of zs) {
    for (const [op, b] of Object.entries(z.bytes())) {
      const t = (perOp[op] ??= { host: 0, zone: 0, wan: 0 })
      for (const k of ['host', 'zone', 'wan'] as const) {
        t[k] += b[k]
        bytes[k] += b[k]
      }
    }
  }
  return { bytes, perOp, phaseMs }
}

// BENCH_COLLECTIVE_PARTS picks parts (default 'abc'), e.g. 'c' for the real processes alone.
const PARTS = process.env['BENCH_COLLECTIVE_PARTS'] ?? 'abc'

// (a) exact cross-zone bytes
for (const zones of PARTS.includes('a') ? [2, 4] : []) {
  const P = 8
  const results: Record<string, { bytes: TierBytes; perOp: Record<string, TierBytes>; phaseMs: number[] }> = {}
  for (const [name, options] of Object.entries(CONFIGS)) {
    const hub = createMemoryNetwork()
    const nets = Array.from({ length: P }, (_, i) => hub.createPeer({ id: `n${i}`, labels: { zone: `z${Math.floor((i * zones) / P)}`, host: `h${i}` } }))
    await Promise.all(nets.map(x => x.start()))
    const view = viewOf(nets)
    const clock = new RealClock()
    const colls = nets.map(net => createCollective({ net, view, clock }))
    await Promise.all(colls.map(c => c.start()))
    results[name] = await step(colls, options, M)
    await Promise.all(colls.map(c => c.stop()))
    await Promise.all(nets.map(x => x.stop()))
  }
  const pp = results['zero++']!.bytes.wan
  for (const [name, r] of Object.entries(results)) {
    process.stdout.write(
      JSON.stringify({
        bench: 'collective.bytes',
        impl: name,
        ranks: P,
        zones,
        elements: M,
        wan_bytes_per_step: r.bytes.wan,
        wan_bytes_per_rank_per_step: Math.round(r.bytes.wan / P),
        wan_bytes_per_step_per_op: Object.fromEntries(Object.entries(r.perOp).map(([k, v]) => [k, v.wan])),
        zone_bytes_per_step: r.bytes.zone + r.bytes.host,
        ...(name === 'zero++' ? {} : { baseline_for: 'zero++', ratio: Number((r.bytes.wan / pp).toFixed(3)) }),
        // The required ratio is stated against the 16-bit ZeRO-3 baseline.
        ...(name === 'zero3-bf16' ? { required_ratio: REQUIRED_BYTES_RATIO, meets_required: r.bytes.wan / pp >= REQUIRED_BYTES_RATIO } : {})
      }) + '\n'
    )
  }
}

// (b) simulated step time on a WAN profile
if (PARTS.includes('b')) {
  const P = 8
  const topology: Topology = {
    host: { latencyMs: 0.1, jitterMs: 0, bandwidthBytesPerS: 1.25e9, loss: 0, duplicate: 0, corrupt: 0 },
    zone: { latencyMs: 0.1, jitterMs: 0, bandwidthBytesPerS: 1.25e9, loss: 0, duplicate: 0, corrupt: 0 },
    wan: { latencyMs: 20, jitterMs: 0, bandwidthBytesPerS: 125e6, loss: 0, duplicate: 0, corrupt: 0 },
    nic: { egressBytesPerS: 1.25e9, ingressBytesPerS: 1.25e9 },
    uplink: { egressBytesPerS: 125e6, ingressBytesPerS: 125e6 }
  }
  const times: Record<string, number> = {}
  for (const name of ['zero3-bf16', 'zero3-bf16w-f32g', 'zero++']) {
    const sim = new Simulation({ seed: 1 })
    const simnet = createSimNetwork(sim, topology)
    const peers = Array.from({ length: P }, (_, i) => simnet.createPeer({ id: `s${i}`, labels: { zone: `z${Math.floor((i * 2) / P)}`, host: `h${i}` } }))
    const nets = peers.map(p => p.net)
    await Promise.all(nets.map(x => x.start()))
    await sim.run(100)
    const view = viewOf(nets)
    const colls = nets.map((net, i) => createCollective({ net, view, clock: peers[i]!.clock, timeoutMs: 60_000, chunkBytes: SIM_CHUNK }))
    await Promise.all(colls.map(c => c.start()))
    const w0 = performance.now()
    const drive = async (p: Promise<unknown>): Promise<number> => {
      let done = false
      const start = sim.now()
      let end = start
      p.then(
        () => {
          done = true
          end = sim.now()
        },
        () => {
          done = true
        }
      )
      await sim.until(() => done, 600_000, 1)
      await p
      return end - start
    }
    // A warm-up step opens the streams (one round trip per peer pair); the second step is
    // the steady state that is reported.
    await step(colls, CONFIGS[name]!, SIM_M, drive)
    const t0 = sim.now()
    const r = await step(colls, CONFIGS[name]!, SIM_M, drive)
    const simMs = sim.now() - t0
    times[name] = simMs
    process.stdout.write(
      JSON.stringify({
        bench: 'collective.step_time',
        impl: name,
        ranks: P,
        zones: 2,
        elements: SIM_M,
        inside_gbit_s: 10,
        between_gbit_s: 1,
        between: 'one uplink per zone, shared',
        between_latency_ms: 20,
        chunk_bytes: SIM_CHUNK,
        sim_step_ms: Number(simMs.toFixed(1)),
        sim_ms_forward_gather_backward_gather_grad_reduce: r.phaseMs.map(x => Number(x.toFixed(1))),
        wan_bytes_per_step: r.bytes.wan,
        wall_s: Number(((performance.now() - w0) / 1000).toFixed(2)),
        ...(name !== 'zero++'
          ? {}
          : {
              speedup_vs_zero3_bf16: Number((times['zero3-bf16']! / simMs).toFixed(2)),
              speedup_vs_zero3_f32_grads: Number((times['zero3-bf16w-f32g']! / simMs).toFixed(2)),
              goal_speedup: GOAL_SPEEDUP,
              meets_goal: times['zero3-bf16']! / simMs >= GOAL_SPEEDUP
            })
      }) + '\n'
    )
    await Promise.all(colls.map(c => c.stop()))
    await Promise.all(nets.map(x => x.stop()))
  }
}

// (c) Real processes on loopback: 3 worker processes (libp2p nodes, bulk channel on), ring
// all-gather and reduce-scatter of a BENCH_COLLECTIVE_PROC_ELEMENTS f32 vector (default 16 Mi
// elements, 64 MiB); throughput per rank in bytes of the whole vector per second, against raw
// Node TCP on the same loopback in the same run (the baseline of `npm run bench -- wire`: one
// socket to a receiver process, best of 3 sends of 256 MiB, before and after the workers).
// Timed rounds write results into arrays the worker owns (the `into` option), then into a
// fresh array per call. Results are checked against each other (every rank's all-gather must
// be the same bytes, with and without `into`). BENCH_COLLECTIVE_PROCS=0 skips it.
if (process.env['BENCH_COLLECTIVE_PROCS'] !== '0' && PARTS.includes('c')) {
  const { runWorkers } = await import('../test/helpers/collective-procs.ts')
  const { rawTcpSeconds, startWireReceiver } = await import('./_wire-raw.ts')
  const rawBytes = 256 * 2 ** 20
  // Best of 3 sends, measured before and again after the workers (the box is shared and its
  // load drifts); the best of all is the baseline, which makes the ratios conservative.
  const rawMBps = async (): Promise<number> => {
    const rx = await startWireReceiver('noise')
    let rawS = Infinity
    try {
      const chunk = new Uint8Array(2 ** 20).map((_, i) => i * 7)
      for (let i = 0; i < 3; i++) rawS = Math.min(rawS, await rawTcpSeconds(rx.info.tcpPort, rawBytes, chunk))
    } finally {
      rx.kill()
    }
    return rawBytes / rawS / 1e6
  }
  const before = await rawMBps()
  const elements = Number(process.env['BENCH_COLLECTIVE_PROC_ELEMENTS'] ?? 16 * 1024 * 1024)
  const res = await runWorkers(3, elements, 1, { rounds: 3 })
  const after = await rawMBps()
  const raw = Math.max(before, after)
  process.stdout.write(
    JSON.stringify({
      bench: 'collective.processes',
      impl: 'raw Node TCP, one socket (baseline)',
      bytes: rawBytes,
      mb_s: Number(raw.toFixed(1)),
      mb_s_before_after: [Number(before.toFixed(1)), Number(after.toFixed(1))]
    }) + '\n'
  )
  // The ceiling of a ring on this box: 3 processes that only move the bytes a ring all-gather
  // moves per link ((P-1)/P of the vector), over raw TCP and over TLS as the bulk channel;
  // MB/s of the whole vector as for the collectives, best of 2.
  const { ringRawSeconds } = await import('./_ring-raw.ts')
  const perLink = Math.floor((2 / 3) * elements * 4)
  const ring: Record<string, number> = {}
  for (const mode of ['tcp', 'tls'] as const) {
    const secs = Math.min(await ringRawSeconds(3, mode, perLink), await ringRawSeconds(3, mode, perLink))
    ring[mode] = (elements * 4) / secs / 1e6
    process.stdout.write(
      JSON.stringify({
        bench: 'collective.processes',
        impl: `ring of 3 processes moving bytes only, ${mode === 'tcp' ? 'raw TCP' : 'TLS 1.3-PSK AES-128-GCM'} (ceiling)`,
        bytes_per_link: perLink,
        mb_s: Number(ring[mode]!.toFixed(1)),
        ratio: Number((ring[mode]! / raw).toFixed(3))
      }) + '\n'
    )
  }
  const same = res.every(r => r.allGather === res[0]!.allGather && r.allGatherInto === r.allGather)
  const ratio = (x: number | undefined): number => Number(((x ?? 0) / raw).toFixed(3))
  for (const r of res) {
    process.stdout.write(
      JSON.stringify({
        bench: 'collective.processes',
        ranks: 3,
        rank: r.rank,
        elements,
        vector_mib: (elements * 4) / 2 ** 20,
        result: "into the caller's array (reused)",
        all_gather_mb_s: r.allGatherMBps,
        reduce_scatter_mb_s: r.reduceScatterMBps,
        all_gather_ratio: ratio(r.allGatherMBps),
        reduce_scatter_ratio: ratio(r.reduceScatterMBps),
        all_gather_cpu_ms_per_round: r.allGatherCpuMs,
        reduce_scatter_cpu_ms_per_round: r.reduceScatterCpuMs,
        fresh_result_all_gather_mb_s: r.allGatherFreshMBps,
        fresh_result_reduce_scatter_mb_s: r.reduceScatterFreshMBps,
        fresh_result_all_gather_ratio: ratio(r.allGatherFreshMBps),
        fresh_result_reduce_scatter_ratio: ratio(r.reduceScatterFreshMBps),
        all_gather_results_identical: same,
        baseline: 'raw Node TCP',
        all_gather_of_tls_ring: Number(((r.allGatherMBps ?? 0) / ring['tls']!).toFixed(3)),
        reduce_scatter_of_tls_ring: Number(((r.reduceScatterMBps ?? 0) / ring['tls']!).toFixed(3))
      }) + '\n'
    )
  }
}
