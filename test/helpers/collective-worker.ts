// One process of the real-process collective tests (test/chaos/collective-processes.test.ts):
// a libp2p node on loopback (bulk channel on, as node/start.ts
// leaves it) that joins P-1 others and builds a collective over all of them. Started by
// test/helpers/collective-procs.ts with one argument, a JSON WorkerConfig; it prints `ADDR <multiaddr>`,
// then JSON lines (one event each). It exits when its stdin closes, so it never outlives the parent.
//
// mode 'check': runs all-gather, reduce-scatter and all-reduce on seeded data and prints one
// `result` line: checksums of its results (the parent checks them against serial references)
// and, with `rounds` (`npm run bench -- collective`), the throughput of that many timed rounds;
// then stays up until the parent ends it.
//
// mode 'fault': prepares one call (`op` at `step`), prints `ready`, waits for `{"cmd":"go"}` on
// stdin, runs the call, prints `sent` once it has written `reportAfterBytes` bytes to its
// collective streams (so the parent can kill a member mid-transfer), then one `outcome` line:
// resolved, or rejected with the error's class name, op, step, peer, reason and elapsed time.
// It does not exit on a rejection; the parent ends it.
import { readFileSync } from 'node:fs'
import { createInterface } from 'node:readline'
import { RealClock, Rng, shardRange, silentLogger } from '../../core/index.ts'
import { checksum64 } from '../../codec/index.ts'
import { createLibp2pPeerNet, loadOrCreateIdentity, type ByteStream, type PeerNet } from '../../mesh/index.ts'
import { CollectiveError, createCollective, type Collective, type CollectiveResult } from '../../mesh/collective/index.ts'

/** The one command-line argument (JSON). */
export interface WorkerConfig {
  index: number
  P: number
  secretFile: string
  dataDir: string
  elements: number
  seed: number
  bootstrap?: string
  mode: 'check' | 'fault'
  /** check: timed all-gather and reduce-scatter rounds after the checked ones (benchmarks; default 0). */
  rounds?: number
  /** fault: the call to make. */
  op?: FaultOp
  step?: number
  /** fault: collective options. */
  chunkBytes?: number
  timeoutMs?: number
  /** fault: print `sent` once this many bytes went out on collective streams. */
  reportAfterBytes?: number
}

/** The calls of fault mode: ring all-gather, ring reduce-scatter, hierarchical all-to-all reduce-scatter (qgZ int4). */
export type FaultOp = 'all-gather' | 'reduce-scatter' | 'all-to-all'

/** The int4 blockwise wire of qgZ (as test/collective/member-crash.test.ts uses it). */
const Q4 = { kind: 'quant', bits: 4, blockSize: 256 } as const

const cfg = JSON.parse(process.argv[2]!) as WorkerConfig
const emit = (e: Record<string, unknown>): void => {
  process.stdout.write(JSON.stringify(e) + '\n')
}
// The parent is gone (or done): leave at once.
const commands = createInterface({ input: process.stdin })
commands.on('close', () => process.exit(0))

const n = cfg.elements
const clock = new RealClock()
const inner = createLibp2pPeerNet(
  {
    runId: 'collective-procs',
    secret: readFileSync(cfg.secretFile),
    privateKey: await loadOrCreateIdentity(cfg.dataDir),
    labels: { zone: `z${cfg.index % 2}`, host: `h${cfg.index}` },
    listen: ['/ip4/127.0.0.1/tcp/0'],
    bootstrap: cfg.bootstrap === undefined ? [] : [cfg.bootstrap],
    announceIntervalMs: 300
  },
  { clock, log: silentLogger() }
)

// Counts the bytes this node writes to its collective streams (fault mode's progress report)
// and remembers which transport carried each stream; everything else goes straight through.
let sentBytes = 0
let onSent = (): void => {}
const transports = new Set<string>()
const counting = (s: ByteStream): ByteStream => ({
  remote: s.remote,
  protocol: s.protocol,
  [Symbol.asyncIterator]: () => s[Symbol.asyncIterator](),
  async write(chunk, options) {
    await s.write(chunk, options)
    sentBytes += chunk.length
    onSent()
  },
  // Passed on only where the stream has it, as the collective checks for it.
  ...(s.writev === undefined
    ? {}
    : {
        async writev(parts: readonly Uint8Array[], options?: { signal?: AbortSignal; onReleased?: () => void }) {
          await s.writev!(parts, options)
          for (const p of parts) sentBytes += p.length
          onSent()
        }
      }),
  end: options => s.end(options),
  abort: reason => {
    s.abort(reason)
  }
})
const net: PeerNet = {
  get self() {
    return inner.self
  },
  start: () => inner.start(),
  stop: () => inner.stop(),
  peers: () => inner.peers(),
  on: (event, listener) => inner.on(event, listener),
  subscribe: (topic, handler) => inner.subscribe(topic, handler),
  publish: (topic, data) => inner.publish(topic, data),
  send: (peer, topic, data) => inner.send(peer, topic, data),
  handle: (protocol, handler) => {
    inner.handle(protocol, handler)
  },
  unhandle: protocol => {
    inner.unhandle(protocol)
  },
  async open(peer, protocol, options) {
    const s = await inner.open(peer, protocol, options)
    // SocketByteStream: the bulk channel (mesh/bulk.ts); Libp2pByteStream: the libp2p fallback.
    transports.add(s.constructor.name === 'SocketByteStream' ? 'bulk' : s.constructor.name)
    return counting(s)
  },
  rejectedFrom: peer => inner.rejectedFrom(peer)
}

await inner.start()
process.stdout.write(`ADDR ${inner.multiaddrs()[0]}\n`)
// Polls the condition (every other worker authenticated and connected): a peer that reconnects
// after a dropped connection is not announced again, so the connect event alone could miss it.
while (inner.peers().length < cfg.P - 1) await clock.sleep(50)
const members = [inner.self, ...inner.peers()].map(p => ({ id: p.id, zone: p.labels.zone, host: p.labels.host })).sort((a, b) => (a.id < b.id ? -1 : 1))
const coll = createCollective({
  net,
  view: { epoch: 1, members },
  clock,
  timeoutMs: cfg.timeoutMs ?? 60_000,
  ...(cfg.chunkBytes === undefined ? {} : { chunkBytes: cfg.chunkBytes })
})
await coll.start()
const rank = coll.rank
// Every process derives every rank's vector, so the parent and the test can check results.
const vec = (r: number, length = n): Float32Array => {
  const rng = Rng.fromSeed(cfg.seed).split(`x${r}`)
  const out = new Float32Array(length)
  for (let i = 0; i < length; i++) out[i] = rng.float() * 2 - 1
  return out
}
const hex = (a: Float32Array): string => checksum64(new Uint8Array(a.buffer, a.byteOffset, a.byteLength)).toString(16)

if (cfg.mode === 'check') await check()
else await fault(cfg.op!, cfg.step ?? 1)

async function check(): Promise<void> {
  const mine = vec(rank)
  const s = shardRange(n, coll.size, rank)
  // Built once: the timed rounds measure the collective, not the generation of a 64 MiB input.
  const shard = vec(0).slice(s.start, s.start + s.length)
  const gather = async (step: number, into?: Float32Array): Promise<Float32Array> => (await coll.allGather(shard, n, { step, into })).data
  const scatter = async (step: number, into?: Float32Array): Promise<Float32Array> => (await coll.reduceScatter(mine, { step: 1000 + step, into })).data
  const ag = await gather(0)
  const rs = await scatter(0)
  const ar = (await coll.allReduce(mine, { step: 5000 })).data
  // The same calls into arrays this process owns, which the timed rounds reuse.
  const agInto = await gather(0, new Float32Array(n))
  const rsInto = await scatter(0, new Float32Array(s.length))
  const checks = { allGather: hex(ag), reduceScatter: hex(rs), allReduce: hex(ar), allGatherInto: hex(agInto), reduceScatterInto: hex(rsInto) }
  const rounds = cfg.rounds ?? 0
  const speed: Record<string, number> = {}
  if (rounds > 0) {
    // Bytes of the whole vector per second per rank: a ring moves (P-1)/P of it through each rank.
    // Also this process's CPU time per round (user + system), which other load on the box
    // disturbs much less than the wall clock.
    const timed = async (name: string, op: (step: number) => Promise<unknown>): Promise<void> => {
      const t0 = performance.now()
      const c0 = process.cpuUsage()
      for (let i = 1; i <= rounds; i++) await op(i)
      const cpu = process.cpuUsage(c0)
      speed[`${name}MBps`] = Math.round((n * 4) / ((performance.now() - t0) / 1000 / rounds) / 1e6)
      speed[`${name}CpuMs`] = Math.round((cpu.user + cpu.system) / 1000 / rounds)
    }
    // Results into the caller's arrays (as a training loop keeps its buffers), then into a
    // fresh array per call (each call pays the first touch of its result).
    await timed('allGather', step => gather(step, agInto))
    await timed('reduceScatter', step => scatter(step, rsInto))
    await timed('allGatherFresh', step => gather(100 + step))
    await timed('reduceScatterFresh', step => scatter(100 + step))
  }
  emit({ ev: 'result', rank, ring: coll.ring, transports: [...transports], ...checks, ...speed })
  // Slower ranks may still need our bytes: stay up until the parent, which has every result, closes our stdin.
}

async function fault(op: FaultOp, step: number): Promise<void> {
  const call = prepare(coll, op, step)
  const threshold = cfg.reportAfterBytes ?? 0
  emit({ ev: 'ready', index: cfg.index, rank, id: inner.self.id, ring: coll.ring })
  await new Promise<void>(resolve => {
    commands.on('line', line => {
      if ((JSON.parse(line) as { cmd?: string }).cmd === 'go') resolve()
    })
  })
  onSent = () => {
    if (sentBytes < threshold) return
    onSent = () => {}
    emit({ ev: 'sent', rank, bytes: sentBytes, elapsedMs: Math.round(performance.now() - t0) })
  }
  const t0 = performance.now()
  try {
    const r = await call()
    emit({
      ev: 'outcome',
      rank,
      outcome: 'resolved',
      elapsedMs: Math.round(performance.now() - t0),
      sentBytes,
      elements: r.data.length,
      transports: [...transports]
    })
  } catch (err) {
    const e = err as Error
    const c = err instanceof CollectiveError ? err : undefined
    emit({
      ev: 'outcome',
      rank,
      outcome: 'rejected',
      name: e.name,
      collectiveError: c !== undefined,
      op: c?.op,
      step: c?.step,
      peer: c?.peer,
      reason: c?.reason,
      message: e.message,
      elapsedMs: Math.round(performance.now() - t0),
      // Wall-clock time of the rejection (the processes share the clock): the parent compares it with the kill.
      atMs: performance.timeOrigin + performance.now(),
      sentBytes,
      transports: [...transports]
    })
  }
}

/** Builds the inputs of the call before `ready`, so the call itself starts at `go`. */
function prepare(c: Collective, op: FaultOp, step: number): () => Promise<CollectiveResult<Float32Array>> {
  if (op === 'all-gather') {
    const s = c.shardOf(n)
    const mine = vec(rank, s.length)
    return () => c.allGather(mine, n, { step })
  }
  const x = vec(rank)
  if (op === 'reduce-scatter') return () => c.reduceScatter(x, { step })
  return () => c.hierReduceScatter(x, { step, wire: Q4 })
}
