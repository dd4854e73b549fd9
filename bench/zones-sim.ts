// Training across zones, simulated with the compute cost model: the GPT-2 124M shape, 3 zones
// x 4 ranks (H200-class by the cost model), one BENCH_ZONES_WAN_GBIT (default 1) Gbit/s uplink
// per zone that all its ranks' cross-zone flows share (SimNet's shared links), BENCH_ZONES_WAN_MS
// (default 50) ms between zones. Inside a zone (BENCH_ZONES_LAYOUT): `node` (default), the four
// ranks are the GPUs of one host (an HGX-style machine per site) joined by an NVLink-class
// 400 GB/s; `hosts`, four hosts with 100 Gbit/s NICs.
// Compute utilization = compute time / wall time of the run, per configuration:
//
// - `zero++ per step`: every step is one ZeRO++ step over all 12 ranks (qwZ int8 forward
//   gather, hpZ backward gather inside each zone, qgZ int4 gradient all-to-all across zones);
// - `diloco`: zone groups of 4 run ZeRO++ inside their zone, and every H inner steps the real
//   outer exchange (node/train/outer.ts: quantized pseudo-gradients all-gathered by the ranks at
//   one place in every zone group, all four groups at once over the shared uplinks);
// - `diloco streaming`: four fragments, each exchange overlapping the next H/4 inner steps.
//
// Simulated pieces, each timed on SimNet with the real collective code and full-size buffers:
// one ZeRO++ step inside a zone (w_zone), one across all zones (w_wan), one outer exchange of
// a whole shard and of a quarter of it (x, x_f). Compute per inner step c = 6 x parameters x
// tokens / BENCH_ZONES_FLOPS (default 3.5e14, H200 bf16 at ~35% of peak: 35 ms for 16 x 1024
// tokens). A step's communication is counted in full (no overlap with compute assumed: a
// lower bound for every row alike). Wall time of H inner steps:
//   zero++ per step:   H (c + w_wan)
//   diloco:            H (c + w_zone) + x
//   diloco streaming:  H (c + w_zone) + F max(0, x_f - (H/F)(c + w_zone))
import { gptLayout } from '../gpu/index.ts'
import { createCollective, createZeroComm, type Collective, type PeerNet, type View } from '../mesh/index.ts'
import { freshOuter, outerExchange, outerQuant, trainingModel, type OuterConfig } from '../node/index.ts'
import { Simulation, createSimNetwork, type NodeClock, type Topology } from '../sim/index.ts'

const ZONES = 3
const PER_ZONE = 4
const WAN_GBIT = Number(process.env['BENCH_ZONES_WAN_GBIT'] ?? 1)
const WAN_MS = Number(process.env['BENCH_ZONES_WAN_MS'] ?? 50)
const FLOPS = Number(process.env['BENCH_ZONES_FLOPS'] ?? 3.5e14)
const TOKENS = Number(process.env['BENCH_ZONES_TOKENS'] ?? 16 * 1024)
const HS = (process.env['BENCH_ZONES_H'] ?? '50,100').split(',').map(Number)
const N = Number(process.env['BENCH_ZONES_ELEMENTS'] ?? gptLayout(trainingModel('gpt2-124m', 50257)).length)
const CHUNK = 1 << 20
const LAYOUT = process.env['BENCH_ZONES_LAYOUT'] ?? 'node'
if (LAYOUT !== 'node' && LAYOUT !== 'hosts') throw new Error(`BENCH_ZONES_LAYOUT must be node or hosts, got ${LAYOUT}`)

const topology: Topology = {
  host: { latencyMs: 0.005, jitterMs: 0, bandwidthBytesPerS: 400e9, loss: 0, duplicate: 0, corrupt: 0 },
  zone: { latencyMs: 0.05, jitterMs: 0, bandwidthBytesPerS: 12.5e9, loss: 0, duplicate: 0, corrupt: 0 },
  wan: { latencyMs: WAN_MS, jitterMs: 0, bandwidthBytesPerS: (WAN_GBIT * 1e9) / 8, loss: 0, duplicate: 0, corrupt: 0 },
  // 100 Gbit/s NICs; one uplink per zone that all of its ranks' cross-zone flows share.
  nic: { egressBytesPerS: 12.5e9, ingressBytesPerS: 12.5e9 },
  uplink: { egressBytesPerS: (WAN_GBIT * 1e9) / 8, ingressBytesPerS: (WAN_GBIT * 1e9) / 8 }
}

interface World {
  sim: Simulation
  nets: PeerNet[]
  peers: Array<{ net: PeerNet; clock: NodeClock }>
  stop(): Promise<void>
}

async function world(): Promise<World> {
  const sim = new Simulation({ seed: 1 })
  const simnet = createSimNetwork(sim, topology)
  const peers = Array.from({ length: ZONES * PER_ZONE }, (_, i) =>
    simnet.createPeer({
      id: `r${String(i).padStart(2, '0')}`,
      labels: { zone: `z${Math.floor(i / PER_ZONE)}`, host: LAYOUT === 'node' ? `h${Math.floor(i / PER_ZONE)}` : `h${i}` }
    })
  )
  const nets = peers.map(p => p.net)
  await Promise.all(nets.map(x => x.start()))
  await sim.run(100)
  return {
    sim,
    nets,
    peers,
    stop: async () => {
      await Promise.all(nets.map(x => x.stop()))
    }
  }
}

const viewOf = (nets: PeerNet[]): View => ({ epoch: 1, members: nets.map(n => ({ id: n.self.id, zone: n.self.labels.zone, host: n.self.labels.host })) })

/** Simulated ms until every promise settled. */
async function timed(sim: Simulation, ps: Array<Promise<unknown>>): Promise<number> {
  const t0 = sim.now()
  let done = false
  const all = Promise.all(ps).finally(() => {
    done = true
  })
  await sim.until(() => done, 3_600_000, 1)
  await all
  return sim.now() - t0
}

/** One ZeRO++ step's communication (forward gather, backward gather, gradient reduction) over each group at once; the second of two. */
async function zeroStep(w: World, groups: number[][]): Promise<number> {
  const colls: Array<{ c: Collective; r: number }> = []
  for (const [g, members] of groups.entries()) {
    const view = viewOf(members.map(r => w.nets[r]!))
    for (const r of members)
      colls.push({ c: createCollective({ net: w.nets[r]!, view, clock: w.peers[r]!.clock, name: `z${g}`, timeoutMs: 3_600_000, chunkBytes: CHUNK }), r })
  }
  await Promise.all(colls.map(x => x.c.start()))
  const zs = colls.map(x => createZeroComm(x.c, { qwZ: true, hpZ: true, qgZ: true }))
  const grads = new Float32Array(N).fill(0.001)
  const shards = zs.map(z => new Float32Array(z.shardOf(N).length).fill(0.01))
  // Every rank gathers into one shared array (12 full copies of 124M f32 would not fit; the
  // bytes written are the same on every rank), and reduces into its own part.
  const gathered = new Float32Array(N)
  const reduced = shards.map(x => new Float32Array(x.length))
  let ms = 0
  for (let s = 1; s <= 2; s++) {
    const into = { step: s, into: gathered }
    ms = await timed(
      w.sim,
      zs.map((z, i) => z.gatherWeights('model', shards[i]!, N, 'forward', into))
    )
    ms += await timed(
      w.sim,
      zs.map((z, i) => z.gatherWeights('model', shards[i]!, N, 'backward', into))
    )
    ms += await timed(
      w.sim,
      zs.map((z, i) => z.reduceGradients('model', grads, { step: s, into: reduced[i]! }))
    )
  }
  await Promise.all(colls.map(x => x.c.stop()))
  return ms
}

/** One outer exchange of `fraction` of every shard: the ranks at each place in the zone groups, all places at once; returns ms and wan bytes. */
async function timeOuterExchange(w: World, cfg: Pick<OuterConfig, 'quant'>, fraction: number): Promise<{ ms: number; wan: number }> {
  const colls: Collective[][] = []
  for (let place = 0; place < PER_ZONE; place++) {
    const members = Array.from({ length: ZONES }, (_, z) => z * PER_ZONE + place)
    const view = viewOf(members.map(r => w.nets[r]!))
    colls.push(
      members.map(r => createCollective({ net: w.nets[r]!, view, clock: w.peers[r]!.clock, name: `o${place}`, timeoutMs: 3_600_000, chunkBytes: CHUNK }))
    )
  }
  await Promise.all(colls.flat().map(c => c.start()))
  const shard = Math.ceil(N / PER_ZONE)
  const L = Math.ceil(shard * fraction)
  const quant = outerQuant(cfg)
  const start = new Float32Array(L).map((_, i) => Math.sin(i))
  const state = freshOuter(start)
  for (let i = 0; i < L; i++) state.sentInner[i] = start[i]! - 1e-3 * Math.cos(i)
  let ms = 0
  let wan = 0
  for (let s = 1; s <= 2; s++) {
    const runs = colls.flat().map(c => outerExchange(c, state, { start: 0, length: L }, quant, { step: s }))
    ms = await timed(w.sim, runs)
    wan = (await Promise.all(runs)).reduce((a, r) => a + r.bytes.wan, 0)
  }
  await Promise.all(colls.flat().map(c => c.stop()))
  return { ms, wan }
}

const w = await world()
const c = ((6 * N * TOKENS) / FLOPS) * 1000
const all = Array.from({ length: ZONES * PER_ZONE }, (_, i) => i)
const zoneGroups = Array.from({ length: ZONES }, (_, z) => Array.from({ length: PER_ZONE }, (_, i) => z * PER_ZONE + i))
process.stderr.write(`zones-sim: ${N} parameters, ${ZONES} zones x ${PER_ZONE} ranks, compute ${c.toFixed(1)} ms per inner step\n`)
const wWan = await zeroStep(w, [all])
const wZone = await zeroStep(w, zoneGroups)
process.stderr.write(`zones-sim: ZeRO++ step ${wWan.toFixed(0)} ms across zones, ${wZone.toFixed(1)} ms inside a zone\n`)
const base = {
  bench: 'zones.sim',
  parameters: N,
  zones: ZONES,
  ranks_per_zone: PER_ZONE,
  wan_gbit_s: WAN_GBIT,
  wan_latency_ms: WAN_MS,
  compute_ms_per_step: Number(c.toFixed(2)),
  zone_layout: LAYOUT === 'node' ? 'one host of 4 GPUs, 400 GB/s' : '4 hosts, 100 Gbit/s NICs'
}
const line = (x: Record<string, unknown>): void => {
  process.stdout.write(JSON.stringify({ ...base, ...x }) + '\n')
}
const perStep = c / (c + wWan)
line({ impl: 'zero++ per step', step_comm_ms: Number(wWan.toFixed(1)), utilization: Number(perStep.toFixed(4)) })
for (const quant of ['int8', 'int4'] as const) {
  const whole = await timeOuterExchange(w, { quant }, 1)
  const frag = await timeOuterExchange(w, { quant }, 1 / 4)
  process.stderr.write(`zones-sim: outer exchange ${quant}: ${whole.ms.toFixed(0)} ms whole, ${frag.ms.toFixed(0)} ms a quarter\n`)
  for (const H of HS) {
    const inner = H * (c + wZone)
    const blocking = (H * c) / (inner + whole.ms)
    const delay = Math.floor(H / 4)
    const stall = 4 * Math.max(0, frag.ms - delay * (c + wZone))
    const streaming = (H * c) / (inner + stall)
    const bytesPerToken = whole.wan / (H * ZONES * PER_ZONE * TOKENS)
    line({
      impl: 'diloco',
      quant,
      H,
      zone_step_comm_ms: Number(wZone.toFixed(2)),
      outer_exchange_ms: Number(whole.ms.toFixed(1)),
      wan_bytes_per_token: Number(bytesPerToken.toFixed(3)),
      utilization: Number(blocking.toFixed(4)),
      baseline: 'zero++ per step',
      ratio: Number((blocking / perStep).toFixed(2))
    })
    line({
      impl: 'diloco streaming',
      quant,
      H,
      fragments: 4,
      overlap_steps: delay,
      fragment_exchange_ms: Number(frag.ms.toFixed(1)),
      stall_ms_per_round: Number(stall.toFixed(1)),
      utilization: Number(streaming.toFixed(4)),
      goal: 0.9,
      meets_goal: streaming >= 0.9,
      baseline: 'zero++ per step',
      ratio: Number((streaming / perStep).toFixed(2))
    })
  }
}
await w.stop()
