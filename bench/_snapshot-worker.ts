// One process of `npm run bench -- snapshot-procs` (bench/snapshot-procs.ts): a libp2p node on
// loopback configured as `zeromesh start` configures one (TLS + yamux, bulk channel on for
// every protocol but the libp2p baseline's, membership with phi-accrual detection and Paxos
// views), with a snapshot service on the membership's views. It prints JSON event lines on
// stdout and takes JSON command lines on stdin; it exits when stdin closes (so it never outlives the parent).
// Usage:
//   node bench/_snapshot-worker.ts <index> <N> <secretFile> <dataDir> <k> <m> <heartbeatMs> [bootstrap]
import { readFileSync } from 'node:fs'
import { createInterface } from 'node:readline'
import { RealClock, Rng, silentLogger } from '../core/index.ts'
import { checksum64 } from '../codec/index.ts'
import { createLibp2pPeerNet, createMembership, loadOrCreateIdentity, type ByteStream, type View } from '../mesh/index.ts'
import { createSnapshotService, createThreadCoder, type RankState } from '../snapshot/index.ts'
import { stepLoop } from './_snapshot-step.ts'

/** The single-donor baseline: one stream carrying the whole state's bytes. */
const BLOB_LIBP2P = '/bench/blob-libp2p/1'
const BLOB_BULK = '/bench/blob-bulk/1'

const [index, N, secretFile, dataDir, kS, mS, hbS, bootstrap] = process.argv.slice(2)
const k = Number(kS)
const m = Number(mS)
const heartbeatMs = Number(hbS)
const MiB = 1024 * 1024
const clock = new RealClock()
const emit = (ev: Record<string, unknown>): void => {
  process.stdout.write(JSON.stringify({ ...ev, worker: Number(index), at: Date.now() }) + '\n')
}

const net = createLibp2pPeerNet(
  {
    runId: 'snapshot-procs',
    secret: readFileSync(secretFile!),
    privateKey: await loadOrCreateIdentity(dataDir!),
    labels: { zone: `z${Number(index) % 2}`, host: `h${index}` },
    listen: ['/ip4/127.0.0.1/tcp/0'],
    bootstrap: bootstrap === undefined ? [] : [bootstrap],
    announceIntervalMs: Math.max(200, heartbeatMs * 2),
    // Every stream rides the bulk channel, as in node/start.ts, except the libp2p baseline's.
    bulkProtocol: p => p !== BLOB_LIBP2P
  },
  { clock, log: silentLogger() }
)
await net.start()
const membership = createMembership({ heartbeatMs, expect: Number(N) }, { net, clock, rng: Rng.fromSeed(`snapshot-procs/${net.self.id}`), log: silentLogger() })
// Idle timeout as the trainer's (10 s) would abandon holders on a loaded 2-core box; 30 s as bench/snapshot.ts.
// Coding and decoding on worker threads, as node/start.ts runs them.
const coder = createThreadCoder()
coder.start()
const svc = createSnapshotService({ k, m, storeCapBytes: 8 * 1024 * MiB, idleTimeoutMs: 30_000 }, { net, clock, coder })
await svc.start()

// ---- the single-donor baseline: serve `n` bytes on one stream ----
const chunk = new Uint8Array(MiB).map((_, i) => (i * 131 + 7) & 0xff)
const serveBlob = async (s: ByteStream): Promise<void> => {
  try {
    const head: Uint8Array[] = []
    for await (const c of s) head.push(c)
    const req = Buffer.concat(head)
    let left = Number(req.readBigUInt64LE(0))
    while (left > 0) {
      const n = Math.min(left, chunk.length)
      await s.write(n === chunk.length ? chunk : chunk.subarray(0, n))
      left -= n
    }
    await s.end()
  } catch (err) {
    s.abort(err as Error)
  }
}
net.handle(BLOB_LIBP2P, serveBlob)
net.handle(BLOB_BULK, serveBlob)

/** Fetches `bytes` from `donor` over one stream into one buffer, then checksums it. */
const fetchBlob = async (donor: string, bytes: number, protocol: string): Promise<{ transferMs: number; checksumMs: number }> => {
  const t0 = performance.now()
  const s = await net.open(donor, protocol)
  const req = Buffer.alloc(8)
  req.writeBigUInt64LE(BigInt(bytes))
  await s.write(req)
  await s.end()
  const out = new Uint8Array(bytes)
  let off = 0
  for await (const c of s) {
    out.set(c, off)
    off += c.length
  }
  if (off !== bytes) throw new Error(`baseline got ${off} of ${bytes} bytes`)
  const t1 = performance.now()
  checksum64(out)
  return { transferMs: t1 - t0, checksumMs: performance.now() - t1 }
}

// ---- synthetic rank state (as bench/snapshot.ts), filled in slices so that building it never
// blocks this process's heartbeats for long (the bench must not cause the stalls it measures) ----
async function stateOf(bytes: number, step: number, worldSize: number): Promise<RankState> {
  const n = Math.floor((bytes - 64 - 32) / 12)
  const fill = async (seed: number): Promise<Float32Array> => {
    const a = new Float32Array(n)
    const rng = Rng.fromSeed(seed)
    const slice = 4 * MiB
    for (let o = 0; o < n; o += slice) {
      for (let i = o; i < Math.min(n, o + slice); i += 1024) a[i] = rng.float()
      await new Promise(resolve => setImmediate(resolve))
    }
    return a
  }
  return { rank: 1, worldSize, epoch: 1, step, dataCursor: step, weights: await fill(1), adamM: await fill(2), adamV: await fill(3), rng: new Uint8Array(32) }
}

// Longest event-loop stall (ms) since the last reset: while it exceeds the failure detector's
// bound, this process sends no heartbeats and its peers may evict it.
let lagMax = 0
let lagLast = performance.now()
setInterval(() => {
  const t = performance.now()
  lagMax = Math.max(lagMax, t - lagLast - 20)
  lagLast = t
}, 20).unref()
const lag = {
  reset: (): void => {
    lagMax = 0
  }
}
const maxLagMs = (): number => Math.round(lagMax)

// ---- step-time overhead: a CPU AdamW-like loop with and without a capture every step ----
async function stepOverhead(n: number, steps: number): Promise<Record<string, number>> {
  const st: RankState = {
    rank: 1,
    worldSize: Number(N),
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
  const every1 = await run(1)
  const every10 = await run(10)
  return { stateBytes: 12 * n + 96, steps, baseSecondsPerStep: base, every1SecondsPerStep: every1, every10SecondsPerStep: every10, lastStep: st.step }
}

// ---- recovery, armed by the parent and started by the first view without the victim ----
let armed: { owner: string; victim: string; afterEpoch: number; bytes: number; version: number; tag: string } | undefined
let recovering = false
const onView = (v: View): void => {
  svc.setView(v)
  emit({ ev: 'view', epoch: v.epoch, members: v.members })
  const a = armed
  if (a === undefined || recovering || v.epoch <= a.afterEpoch || v.members.some(x => x.id === a.victim)) return
  armed = undefined
  recovering = true
  const viewAt = Date.now()
  void (async () => {
    try {
      lag.reset()
      const t0 = performance.now()
      let rec: Awaited<ReturnType<typeof svc.recover>> | undefined = await svc.recover({ owner: a.owner })
      const ms = performance.now() - t0
      const r = rec.report
      const ok = rec.bytes.length === a.bytes && r.version === a.version && rec.state.step === a.version
      const used = r.used.map(x => x.index)
      const missing = r.missing.map(x => x.index)
      rec = undefined
      emit({
        ev: 'recovered',
        tag: a.tag,
        epoch: v.epoch,
        viewAt,
        recoverMs: ms,
        maxLagMs: maxLagMs(),
        viewAfter: membership.view()?.epoch,
        memberAfter: membership.status().member,
        ok,
        used,
        missing,
        corrupt: r.corrupt.length,
        source: r.source
      })
    } catch (err) {
      emit({ ev: 'error', tag: a.tag, message: `recover: ${(err as Error).name}: ${(err as Error).message}` })
    } finally {
      recovering = false
    }
  })()
}
membership.on('view', onView)
net.on('peer:disconnect', id => emit({ ev: 'disconnect', peer: id }))
await membership.start()
emit({ ev: 'ready', id: net.self.id, addr: net.multiaddrs()[0] })

// ---- commands from the parent, one JSON object per line ----
interface Command {
  cmd: string
  [k: string]: unknown
}
const handle = async (c: Command): Promise<void> => {
  switch (c.cmd) {
    case 'steps': {
      emit({ ev: 'steps', ...(await stepOverhead(Number(c['elements']), Number(c['steps']))) })
      return
    }
    case 'capture': {
      // A placement can fail on a loaded machine (libp2p dial timeouts); the trainer would place
      // the next step's capture. Here the same state is captured again, up to 3 times.
      const bytes = Number(c['bytes'])
      let state: RankState | undefined = await stateOf(bytes, Number(c['step']), svc.view()?.members.length ?? Number(N))
      const failures: string[] = []
      for (let attempt = 1; ; attempt++) {
        lag.reset()
        const t0 = performance.now()
        const ticket = svc.capture(state)
        const t1 = performance.now()
        const out = await ticket.done
        const t2 = performance.now()
        if (out.status === 'placed') {
          state = undefined
          emit({
            ev: 'placed',
            attempts: attempt,
            failures,
            maxLagMs: maxLagMs(),
            detectionBoundMs: membership.status().detectionBoundMs,
            captureMs: t1 - t0,
            placeMs: t2 - t0,
            stateBytes: out.result.manifest.stateBytes,
            holders: out.result.manifest.holders,
            epoch: out.result.manifest.epoch,
            version: out.result.manifest.version,
            heldBytes: svc.store.stats().usedBytes
          })
          return
        }
        failures.push(
          `${out.status === 'failed' ? out.error.message.slice(0, 300) : out.status} (longest stall ${maxLagMs()} ms, view ${membership.view()?.epoch})`
        )
        if (attempt >= 4) throw new Error(`placement failed ${attempt} times: ${failures.join(' | ')}`)
        // Before trying again, wait (up to 30 s) until this node is a member of the current view
        // and connected to every other member again.
        const until = performance.now() + 30_000
        const ready = (): boolean => {
          const v = membership.view()
          const connected = new Set(net.peers().map(p => p.id))
          return v !== undefined && membership.status().member && v.members.every(x => x.id === net.self.id || connected.has(x.id))
        }
        while (!ready() && performance.now() < until) await clock.sleep(100)
      }
    }
    case 'baseline': {
      const protocol = c['via'] === 'bulk' ? BLOB_BULK : BLOB_LIBP2P
      emit({ ev: 'baseline', via: c['via'], ...(await fetchBlob(String(c['donor']), Number(c['bytes']), protocol)) })
      return
    }
    case 'arm': {
      const owner = String(c['owner'])
      // Wait for the owner's manifest (gossip), as a spare would have it before any failure.
      const deadline = performance.now() + 20_000
      while (svc.manifests(owner).length === 0 && performance.now() < deadline) await clock.sleep(50)
      armed = {
        owner,
        victim: String(c['victim'] ?? owner),
        afterEpoch: membership.view()?.epoch ?? 0,
        bytes: Number(c['bytes']),
        version: Number(c['version']),
        tag: String(c['tag'])
      }
      emit({ ev: 'armed', manifests: svc.manifests(owner).length, held: svc.store.stats().usedBytes })
      return
    }
    case 'stats': {
      emit({
        ev: 'stats',
        heldBytes: svc.store.stats().usedBytes,
        rss: process.memoryUsage().rss,
        epoch: membership.view()?.epoch,
        detectionBoundMs: membership.status().detectionBoundMs
      })
      return
    }
    default:
      throw new Error(`unknown command ${c.cmd}`)
  }
}
const rl = createInterface({ input: process.stdin })
rl.on('line', line => {
  if (line.trim() === '') return
  handle(JSON.parse(line) as Command).catch((err: unknown) => emit({ ev: 'error', message: `${(err as Error).name}: ${(err as Error).message}` }))
})
// The parent is gone (or done): leave at once, without a graceful membership leave.
rl.on('close', () => process.exit(0))
