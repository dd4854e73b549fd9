// Training across two zones joined by a shaped link: the zone harness (test/helpers/zones/,
// needs root and iproute2) builds zones a and b of BENCH_ZONES_HOSTS hosts each (default 2),
// every zone's uplink shaped to BENCH_ZONES_MBIT Mbit/s each way (default 50) by tbf, and runs
// one real `zeromesh start --train` process per host: 4 ranks, no spares, the `small` model
// (3.3 M parameters) on the CPU backend and the Brown Corpus.
//
// One JSON line per configuration (`zones.train`):
// - tokens_per_s: committed tokens per second over the run past the warm-up, from the workers'
//   step events: (end step - BENCH_ZONES_WARMUP) x tokens per step / the time between the first
//   arrivals of those two steps' events (every rank commits a step together). The counters are
//   read by processes spawned when an event arrives, tens of ms later, so the window's end is
//   the last read that was done before the last step's event arrived (they are read again at
//   each of the last END_READS steps' events, one read at a time): a read that ran after the last
//   step caught the final evaluation's bytes (about 70 KB across zones for the mini model, more
//   than 40 zeroth-order steps move). `window` names the two steps.
// - cross_zone_bytes_per_token: bytes that crossed the zone uplinks over the same steps (each
//   zone's uplink counts what left it; a byte between zones leaves exactly one zone), Ethernet
//   frames as the kernel counts them.
// - eval_loss: the held-out loss of the final weights (the `done` event of a rank that scored
//   them); steps; wall_s (spawn to the last rank's exit) and the ratios to flat ZeRO-3 of the
//   same run (tokens_per_s_ratio, bytes_per_token_ratio); cross_zone_bytes_per_step is the
//   same bytes per committed step (BENCH_ZONES_MODEL picks another model than `small`).
// - The same frames split by connection (nftables counters on the uplinks,
//   test/helpers/zones/counters.ts): bulk_bytes_per_step, the bulk channel's TCP connections
//   (the collectives, direct messages such as the membership heartbeats to its leader, and
//   snapshots when they are on); libp2p_bytes_per_s, the libp2p connections (gossip, identify,
//   ping), which tick with time, not steps; other_bytes_per_s, anything else (ARP);
//   split_of_total, their sum over the uplinks' counters (about 1). collective_bytes_per_step:
//   what the ranks' training collectives sent across zones per step by their own accounting
//   (the `sent` of their step events: headers and bodies, no TLS, TCP or Ethernet framing).
// Defaults (BENCH_ZONES_STEPS 12, BENCH_ZONES_WARMUP 2, BENCH_ZONES_BATCH 2, BENCH_ZONES_SEQ 32:
// 256 tokens a step) keep a configuration to 1-3 minutes on a 2-core machine: flat ZeRO-3 moves
// about 30 MB each way across the link per step (three ring collectives of the f32 model), about
// 5 s at 50 Mbit/s. Snapshots are off (`--snapshot off`), so the figures compare the training
// step alone; BENCH_ZONES_SNAPSHOT=2+1 (any `--snapshot` value) turns them on.
//
// CONFIGS is the table of configurations: a row is a name and the `zeromesh start` flags it
// adds, passed to every worker unchanged. A row whose flags `start` does not have yet (checked
// against node/config.ts) is skipped with a note on stderr. BENCH_ZONES_CONFIGS=name,name picks
// rows; the baseline (zero3) runs first whenever it is picked.
//
// Fidelity: rows marked `twin` (ZeRO++ and DiLoCo H=20) also run the same job on SimNet (same
// model, ranks, zones, steps, batch; uplinks at the same rate, shared by their flows; the
// compute the real ranks measured, their mean compute + optimizer ms per step from their
// `phases` events, as the cost model's) and print the simulated tokens/s and cross-zone bytes
// per token over the same steps, their ratios to the real ones and `sim_within_15pct`.
// The real bytes are Ethernet frames as the kernel counts them on the uplink; SimNet counts what
// the application wrote. The comparison puts the simulated bytes on the wire with FRAMING: per
// full 1448-byte TCP segment 66 bytes of Ethernet, IP and TCP headers (with timestamps), plus
// one 66-byte ACK per two segments flowing back (counted on the other zone's uplink).
import { loadavg } from 'node:os'
import { envNumber } from './harness.ts'
import { gptLayout } from '../gpu/index.ts'
import { TRAIN_MODELS, trainingModel, type TrainModelName } from '../node/index.ts'
import { trainRun, type Topology } from '../sim/index.ts'
import {
  countByPort,
  createZones,
  isStartFlag,
  startZoneNodes,
  trainFlags,
  type PortSplit,
  type StampedEvent,
  type Zones
} from '../test/helpers/zones/index.ts'

interface Config {
  name: string
  /** Flags added to every worker's command line. */
  flags: string[]
  /** Fewer steps than this make the row meaningless (a DiLoCo row must reach its outer steps). */
  minSteps?: number
  /** Run the same job on SimNet beside it (the fidelity check; BENCH_ZONES_SIM=0 turns every twin off). */
  twin?: boolean
}

const CONFIGS: Config[] = [
  { name: 'zero3', flags: [] },
  { name: 'zero++', flags: ['--zeropp'], twin: true },
  // DiLoCo (zone groups of 2 ranks, an outer exchange every n steps): run with
  // BENCH_ZONES_STEPS above minSteps.
  { name: 'diloco-20', flags: ['--outer-every', '20'], minSteps: 40, twin: true },
  { name: 'diloco-50', flags: ['--outer-every', '50'], minSteps: 100 },
  // Zeroth-order training (MeZO): a step moves one (projected gradient, loss) pair per rank;
  // the model crosses only when the roster forms and for the final evaluation (outside the
  // measured steps). Meant for slow links: BENCH_ZONES_MBIT=1 BENCH_ZONES_CONFIGS=zo.
  { name: 'zo', flags: ['--zo'] }
]
const BASELINE = 'zero3'

const env = envNumber
const HOSTS = env('BENCH_ZONES_HOSTS', 2)
const RANKS = 2 * HOSTS
const MBIT = env('BENCH_ZONES_MBIT', 50)
const STEPS = env('BENCH_ZONES_STEPS', 12)
const WARMUP = env('BENCH_ZONES_WARMUP', 2)
const BATCH = env('BENCH_ZONES_BATCH', 2)
const SEQ = env('BENCH_ZONES_SEQ', 32)
const TIMEOUT_S = env('BENCH_ZONES_TIMEOUT_S', 900)
const SNAPSHOT = process.env['BENCH_ZONES_SNAPSHOT'] ?? 'off'
const MODEL = ((): TrainModelName => {
  const m = process.env['BENCH_ZONES_MODEL'] ?? 'small'
  if (!(TRAIN_MODELS as readonly string[]).includes(m)) throw new Error(`BENCH_ZONES_MODEL must be one of ${TRAIN_MODELS.join(', ')}, got ${m}`)
  return m as TrainModelName
})()
if (WARMUP + 2 > STEPS) throw new Error(`BENCH_ZONES_STEPS (${STEPS}) must exceed BENCH_ZONES_WARMUP (${WARMUP}) by at least 2`)
const TOKENS_PER_STEP = RANKS * BATCH * SEQ

const pick = process.env['BENCH_ZONES_CONFIGS']
  ?.split(',')
  .map(s => s.trim())
  .filter(s => s.length > 0)
const chosen = CONFIGS.filter(c => pick === undefined || pick.includes(c.name))
const runnable = chosen.filter(c => {
  const missing = c.flags.filter(f => f.startsWith('--') && !isStartFlag(f))
  if (missing.length > 0) process.stderr.write(`bench zones: skipping ${c.name}: zeromesh start has no ${missing.join(', ')} yet (node/config.ts)\n`)
  else if (c.minSteps !== undefined && STEPS < c.minSteps)
    process.stderr.write(`bench zones: ${c.name} needs BENCH_ZONES_STEPS >= ${c.minSteps} to mean anything (running ${STEPS})\n`)
  return missing.length === 0
})

const load1 = (): number => Number(loadavg()[0]!.toFixed(2))
const r4 = (x: number): number => Number(x.toPrecision(4))

/** Bytes that left every zone so far (a byte between zones leaves exactly one). */
async function crossZoneBytes(z: Zones, zones: readonly string[]): Promise<number> {
  const counts = await Promise.all(zones.map(name => z.uplinkBytes(name)))
  return counts.reduce((a, c) => a + c.out, 0)
}

interface Measured {
  tokensPerS: number
  bytesPerToken: number
  /** The steps between the two reads of the counters. */
  window: [number, number]
  /**
   * The same frames by connection, per step (bulk) and per second (libp2p, other), and the
   * bytes the ranks' training collectives sent across zones per step (their own accounting).
   */
  split: { bulkPerStep: number; libp2pPerS: number; otherPerS: number; ofTotal: number; collectivePerStep: number }
  evalLoss: number | null
  steps: number
  wallS: number
  /** The ranks' mean compute + optimizer ms per step (their `phases` events). */
  computeMs: number | undefined
}

/** One read of the counters, started when the first event of `step` arrived and done at `doneMs` (the harness's clock). */
interface Mark {
  step: number
  total: number
  split: PortSplit
  doneMs: number
}

/** Steps before the last at whose events the counters are read again (one read at a time), for the window's end. */
const END_READS = 8

/** One configuration on a fresh topology; throws when the run fails. */
async function runConfig(c: Config): Promise<Measured> {
  const zoneNames = ['a', 'b']
  const z = await createZones({ zones: zoneNames.map(name => ({ name, hosts: HOSTS })), uplinkBitsPerS: MBIT * 1_000_000 })
  const split = await countByPort(z)
  const ports: Array<Promise<void>> = []
  // When each step's first event arrived, and what each rank's training collectives had sent across zones by then.
  const arrived = new Map<number, number>()
  const sentWan = new Map<string, number>()
  const marks: Mark[] = []
  let reading = false
  const read = (step: number): void => {
    reading = true
    void Promise.all([crossZoneBytes(z, zoneNames), split.read()]).then(
      ([total, kinds]) => {
        marks.push({ step, total, split: kinds, doneMs: nodes?.now() ?? Number.POSITIVE_INFINITY })
        reading = false
      },
      (err: unknown) => {
        process.stderr.write(`bench zones: reading the counters failed: ${(err as Error).message}\n`)
        reading = false
      }
    )
  }
  const onEvent = (s: StampedEvent): void => {
    const e = s.event
    // A node's libp2p listen ports: every libp2p connection has an end on one of them.
    if (e.type === 'started') ports.push(split.add(e.multiaddrs.flatMap(a => /\/tcp\/(\d+)/.exec(a)?.[1] ?? []).map(Number)))
    if (e.type !== 'step') return
    if (e.sent !== undefined) sentWan.set(`${s.node}/${e.step}`, e.sent.wan)
    // Every rank commits a step together: the first of its events marks the commit.
    if (arrived.has(e.step)) return
    arrived.set(e.step, s.ms)
    process.stderr.write(`  [${c.name}] step ${e.step}/${e.steps} loss ${e.loss?.toFixed(4)} at ${(s.ms / 1000).toFixed(1)} s\n`)
    if (!reading && (e.step === WARMUP || (marks.length > 0 && e.step >= STEPS - END_READS))) read(e.step)
  }
  let nodes: Awaited<ReturnType<typeof startZoneNodes>> | undefined
  let ok = false
  try {
    nodes = await startZoneNodes({
      zones: z,
      args: trainFlags({ worldSize: RANKS, steps: STEPS, model: MODEL, batch: BATCH, seq: SEQ, snapshot: SNAPSHOT, extra: c.flags }),
      onEvent
    })
    const n = nodes
    await n.until(`${c.name}: every rank to exit`, TIMEOUT_S * 1000, () => (n.nodes.every(x => x.worker.exited) ? true : undefined))
    const failed = n.nodes.filter(x => x.worker.proc.exitCode !== 0)
    if (failed.length > 0)
      throw new Error(`${failed.map(x => `${x.name} exited ${x.worker.proc.exitCode ?? x.worker.proc.signalCode}: ${x.worker.tail.at(-1) ?? ''}`).join('; ')}`)
    await Promise.all(ports)
    // The window ends at the last read that was done before the last step's event arrived, so
    // it holds no byte of the final evaluation.
    const a = marks[0]
    const end = arrived.get(STEPS)
    const b = marks.findLast(m => end !== undefined && m.doneMs < end && a !== undefined && m.step > a.step)
    if (a === undefined || b === undefined || a.step !== WARMUP) throw new Error(`no counters read at step ${WARMUP} and before step ${STEPS}`)
    const steps = b.step - a.step
    const tokens = steps * TOKENS_PER_STEP
    const seconds = (arrived.get(b.step)! - arrived.get(a.step)!) / 1000
    const total = b.total - a.total
    const d = (k: keyof PortSplit): number => b.split[k] - a.split[k]
    const collective = n.nodes.reduce(
      (acc, x) => acc + (sentWan.get(`${x.name}/${b.step}`) ?? Number.NaN) - (sentWan.get(`${x.name}/${a.step}`) ?? Number.NaN),
      0
    )
    const done = n.events.flatMap(s => (s.event.type === 'done' ? [s.event] : []))
    const phases = n.events.flatMap(s => (s.event.type === 'phases' ? [s.event.compute + s.event.optimizer] : []))
    ok = true
    return {
      tokensPerS: tokens / seconds,
      bytesPerToken: total / tokens,
      window: [a.step, b.step],
      split: {
        bulkPerStep: d('otherTcp') / steps,
        libp2pPerS: d('listed') / seconds,
        otherPerS: d('rest') / seconds,
        ofTotal: (d('listed') + d('otherTcp') + d('rest')) / total,
        collectivePerStep: collective / steps
      },
      evalLoss: done.map(d => d.evalLoss).find(x => x !== null && x !== undefined) ?? null,
      steps: Math.max(0, ...done.map(d => d.step)),
      wallS: n.now() / 1000,
      computeMs: phases.length === 0 ? undefined : phases.reduce((a, x) => a + x, 0) / phases.length
    }
  } finally {
    await nodes?.stop({ keep: !ok })
    await z.stop()
  }
}

process.stderr.write(
  `bench zones: 2 zones x ${HOSTS} hosts, uplinks ${MBIT} Mbit/s each way (tbf), ${RANKS} ranks, ${MODEL} model, batch ${BATCH} x seq ${SEQ} ` +
    `(${TOKENS_PER_STEP} tokens/step), ${STEPS} steps (first ${WARMUP} not measured), snapshots ${SNAPSHOT}, configs ${runnable.map(c => c.name).join(', ')}; ` +
    `load ${loadavg()
      .map(x => x.toFixed(2))
      .join(' ')}\n`
)

/**
 * The same job on SimNet (the fidelity check): the same model, ranks, zones, steps and batch,
 * the uplinks at the same rate shared by their flows, and the compute the real ranks measured
 * (their mean compute + optimizer ms per step) as the cost model's. Returns the simulated step
 * time and cross-zone bytes per token over the same steps as the real figures.
 */
function simModel(m: TrainModelName): 'mini' | 'small' {
  if (m === 'gpt2-124m') throw new Error('the simulated twin has no gpt2-124m model: run with BENCH_ZONES_SIM=0')
  return m
}

async function simTwin(c: Config, computeMs: number, window: [number, number]): Promise<{ tokensPerS: number; bytesPerToken: number }> {
  const rate = (MBIT * 1e6) / 8
  const link = { jitterMs: 0, loss: 0, duplicate: 0, corrupt: 0 }
  const topology: Topology = {
    host: { ...link, latencyMs: 0.02, bandwidthBytesPerS: 10e9 },
    zone: { ...link, latencyMs: 0.05, bandwidthBytesPerS: 1.25e9 },
    wan: { ...link, latencyMs: 0.05, bandwidthBytesPerS: rate },
    uplink: { egressBytesPerS: rate, ingressBytesPerS: rate }
  }
  const params = gptLayout(trainingModel(MODEL, 256)).length
  const tokens = BATCH * SEQ
  const every = c.flags.includes('--outer-every') ? Number(c.flags[c.flags.indexOf('--outer-every') + 1]) : undefined
  const r = await trainRun({
    seed: 1,
    nodes: RANKS,
    worldSize: RANKS,
    zones: 2,
    steps: STEPS,
    batch: BATCH,
    seq: SEQ,
    model: simModel(MODEL),
    zeroPP: c.flags.includes('--zeropp'),
    ...(every === undefined ? {} : { outer: { every } }),
    snapshot: null,
    topology,
    flopsPerS: (6 * params * tokens) / (computeMs / 1000),
    membership: { heartbeatMs: 300 },
    limitMs: 6 * 3600_000
  })
  if (r.violations.length > 0) throw new Error(`the simulated twin failed: ${r.violations[0]}`)
  const a = r.commits?.find(x => x.step === window[0])
  const b = r.commits?.find(x => x.step === window[1])
  if (a === undefined || b === undefined) throw new Error('the simulated twin has no commits of the measured steps')
  const t = (window[1] - window[0]) * TOKENS_PER_STEP
  return { tokensPerS: t / ((b.ms - a.ms) / 1000), bytesPerToken: ((b.wanBytes - a.wanBytes) * FRAMING) / t }
}
const FIDELITY = process.env['BENCH_ZONES_SIM'] !== '0'
const FRAMING = 1 + (66 + 33) / 1448

let failed = false
let baseline: Measured | undefined
// The baseline first, so every other row has its ratio.
for (const c of [...runnable.filter(x => x.name === BASELINE), ...runnable.filter(x => x.name !== BASELINE)]) {
  const before = load1()
  const common = { bench: 'zones.train', impl: c.name, flags: c.flags.join(' '), zones: 2, hosts_per_zone: HOSTS, ranks: RANKS, uplink_mbit: MBIT }
  let m: Measured
  try {
    m = await runConfig(c)
  } catch (err) {
    failed = true
    process.stdout.write(JSON.stringify({ ...common, error: (err as Error).message.split('\n')[0] }) + '\n')
    continue
  }
  if (c.name === BASELINE) baseline = m
  let sim: { tokensPerS: number; bytesPerToken: number } | undefined
  if (FIDELITY && c.twin === true && m.computeMs !== undefined) {
    try {
      sim = await simTwin(c, m.computeMs, m.window)
    } catch (err) {
      process.stderr.write(`bench zones: ${c.name}: ${(err as Error).message}\n`)
    }
  }
  process.stdout.write(
    JSON.stringify({
      ...common,
      model: MODEL,
      batch: BATCH,
      seq: SEQ,
      snapshot: SNAPSHOT,
      steps: m.steps,
      warmup: WARMUP,
      tokens_per_s: r4(m.tokensPerS),
      cross_zone_bytes_per_token: Math.round(m.bytesPerToken),
      cross_zone_bytes_per_step: Math.round(m.bytesPerToken * TOKENS_PER_STEP),
      window: m.window,
      collective_bytes_per_step: Math.round(m.split.collectivePerStep),
      bulk_bytes_per_step: Math.round(m.split.bulkPerStep),
      libp2p_bytes_per_s: Math.round(m.split.libp2pPerS),
      other_bytes_per_s: Math.round(m.split.otherPerS),
      step_s: r4(TOKENS_PER_STEP / m.tokensPerS),
      split_of_total: r4(m.split.ofTotal),
      eval_loss: m.evalLoss === null ? null : r4(m.evalLoss),
      wall_s: r4(m.wallS),
      ...(baseline === undefined || c.name === BASELINE
        ? {}
        : {
            baseline: BASELINE,
            tokens_per_s_ratio: r4(m.tokensPerS / baseline.tokensPerS),
            bytes_per_token_ratio: r4(m.bytesPerToken / baseline.bytesPerToken)
          }),
      ...(sim === undefined
        ? {}
        : {
            compute_ms_per_step: r4(m.computeMs!),
            sim_tokens_per_s: r4(sim.tokensPerS),
            sim_cross_zone_bytes_per_token: Math.round(sim.bytesPerToken),
            sim_over_real_step_time: r4(m.tokensPerS / sim.tokensPerS),
            sim_over_real_bytes: r4(sim.bytesPerToken / m.bytesPerToken),
            sim_within_15pct: Math.abs(m.tokensPerS / sim.tokensPerS - 1) <= 0.15 && Math.abs(sim.bytesPerToken / m.bytesPerToken - 1) <= 0.15
          }),
      load_before: before,
      load_after: load1()
    }) + '\n'
  )
}
if (failed) process.exitCode = 1
