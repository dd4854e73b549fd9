// Snapshot benchmarks on the in-memory PeerNet (loopback in one process, so the figures are
// the CPU cost of capture, checksums, Reed-Solomon and the stream protocol, not of a network):
//   snapshot.capture   the synchronous copy the trainer waits for
//   snapshot.place     capture + checksum + encode + push of k+m fragments, per rank
//   snapshot.recover   fetch k fragments in parallel (data fragment 0 lost, so parity decodes) + decode + verify
//   snapshot.memory    bytes held by peers per snapshot vs 2x replication
//   snapshot.step      step time of a CPU AdamW-like loop with a snapshot after every step vs none
// Sizes: BENCH_SNAPSHOT_MIB (default "256,1024"); k, m: BENCH_SNAPSHOT_K / _M (default 4, 2).
import { RealClock, Rng } from '../core/index.ts'
import { createMemoryNetwork, type View } from '../mesh/index.ts'
import { createSnapshotService, placeStripe, type RankState, type SnapshotService } from '../snapshot/index.ts'
import { report } from './harness.ts'
import { stepLoop } from './_snapshot-step.ts'

const MiB = 1024 * 1024
const sizes = (process.env['BENCH_SNAPSHOT_MIB'] ?? '256,1024').split(',').map(Number)
const k = Number(process.env['BENCH_SNAPSHOT_K'] ?? 4)
const m = Number(process.env['BENCH_SNAPSHOT_M'] ?? 2)
const P = k + m + 2

function stateOf(bytes: number, step: number): RankState {
  const n = Math.floor((bytes - 64 - 32) / 12)
  const fill = (seed: number): Float32Array => {
    const a = new Float32Array(n)
    const rng = Rng.fromSeed(seed)
    for (let i = 0; i < n; i += 1024) a[i] = rng.float()
    return a
  }
  return { rank: 0, worldSize: P, epoch: 1, step, dataCursor: step, weights: fill(1), adamM: fill(2), adamV: fill(3), rng: new Uint8Array(32) }
}

async function mesh(): Promise<{ services: SnapshotService[]; kill: (id: string) => void; view: View; close: () => Promise<void> }> {
  const hub = createMemoryNetwork()
  const clock = new RealClock()
  const members = Array.from({ length: P }, (_, i) => ({ id: `p${i}`, zone: `z${i % 2}`, host: `h${i}` }))
  const nets = members.map(x => hub.createPeer({ id: x.id, labels: { zone: x.zone, host: x.host } }))
  const services = nets.map(net => createSnapshotService({ k, m, storeCapBytes: 8 * 1024 * MiB, idleTimeoutMs: 30_000 }, { net, clock }))
  await Promise.all(nets.map(x => x.start()))
  await Promise.all(services.map(s => s.start()))
  const view = { epoch: 1, members }
  for (const s of services) s.setView(view)
  return {
    services,
    kill: id => hub.kill(id),
    view,
    close: async () => {
      await Promise.all(services.map(s => s.stop()))
      await Promise.all(nets.map(x => x.stop()))
    }
  }
}

for (const mib of sizes) {
  const bytes = mib * MiB
  const state = stateOf(bytes, 1)
  const { services, kill, view, close } = await mesh()
  const owner = services[0]!
  const t0 = performance.now()
  const ticket = owner.capture(state)
  const t1 = performance.now()
  const out = await ticket.done
  const t2 = performance.now()
  if (out.status !== 'placed') throw new Error(`placement failed: ${out.status === 'failed' ? out.error.message : out.status}`)
  report({ bench: 'snapshot.capture', impl: 'memcpy into buffer', k, m, bytes, seconds: (t1 - t0) / 1000 })
  report({ bench: 'snapshot.place', impl: 'memory-net', k, m, bytes, seconds: (t2 - t0) / 1000 })
  const held = services.reduce((a, s) => a + s.store.stats().usedBytes, 0)
  process.stdout.write(
    JSON.stringify({
      bench: 'snapshot.memory',
      k,
      m,
      bytes,
      heldBytes: held,
      overhead: Number((held / bytes).toPrecision(4)),
      replication2x: 2,
      ratio: Number((2 / (held / bytes)).toPrecision(4))
    }) + '\n'
  )
  // Lose the owner and the holder of data fragment 0 (so a parity fragment must be decoded).
  kill('p0')
  kill(placeStripe(view, 0, k, m)[0]!)
  const recoverer = services[P - 1]!
  const r0 = performance.now()
  const rec = await recoverer.recover({ owner: 'p0' })
  const r1 = performance.now()
  if (rec.report.used.some(x => x.index === 0)) throw new Error('fragment 0 should have been lost')
  report({ bench: 'snapshot.recover', impl: 'memory-net', k, m, lost: 1, bytes, seconds: (r1 - r0) / 1000 })
  await close()
}

// Step-time overhead: a CPU loop updating 4M f32 parameters with AdamW-like arithmetic, an
// await between steps (where a real trainer awaits its collectives), with and without a
// capture() after every step.
{
  const n = Number(process.env['BENCH_SNAPSHOT_STEP_ELEMENTS'] ?? 4 * 1024 * 1024)
  const steps = Number(process.env['BENCH_SNAPSHOT_STEPS'] ?? 30)
  const { services, close } = await mesh()
  const svc = services[0]!
  const st: RankState = {
    rank: 0,
    worldSize: P,
    epoch: 1,
    step: 0,
    dataCursor: 0,
    weights: new Float32Array(n),
    adamM: new Float32Array(n),
    adamV: new Float32Array(n),
    rng: new Uint8Array(32)
  }
  const run = stepLoop(svc, st, steps)
  await run(0)
  const base = await run(0)
  const stateB = 12 * n + 96
  for (const every of [1, 10]) {
    const withSnap = await run(every)
    process.stdout.write(
      JSON.stringify({
        bench: 'snapshot.step',
        impl: `capture every ${every} step(s)`,
        k,
        m,
        stateBytes: stateB,
        steps,
        baselineSecondsPerStep: Number(base.toPrecision(4)),
        secondsPerStep: Number(withSnap.toPrecision(4)),
        overhead: Number((withSnap / base - 1).toPrecision(3))
      }) + '\n'
    )
  }
  await close()
}
