// One process of the real-process collective runs (test/chaos/collective-processes.test.ts and
// `npm run bench -- collective`): a libp2p node on loopback that joins P-1 others, then runs
// all-gather, all-reduce and reduce-scatter on seeded data and prints one JSON line:
// checksums of its results (the parent checks them against serial references) and the
// throughput per rank. Usage:
//   node bench/_collective-worker.ts <index> <P> <secretFile> <dataDir> <elements> <rounds> <seed> [bootstrap]
import { readFileSync } from 'node:fs'
import { RealClock, Rng, silentLogger } from '../core/index.ts'
import { checksum64 } from '../codec/index.ts'
import { createLibp2pPeerNet, loadOrCreateIdentity } from '../mesh/index.ts'
import { createCollective, shardRange } from '../mesh/collective/index.ts'

const [index, P, secretFile, dataDir, elements, rounds, seed, bootstrap] = process.argv.slice(2)
const n = Number(elements)
const clock = new RealClock()
const net = createLibp2pPeerNet({
  runId: 'collective-procs',
  secret: readFileSync(secretFile!),
  privateKey: await loadOrCreateIdentity(dataDir!),
  labels: { zone: `z${Number(index) % 2}`, host: `h${index}` },
  listen: ['/ip4/127.0.0.1/tcp/0'],
  bootstrap: bootstrap === undefined ? [] : [bootstrap],
  announceIntervalMs: 300
}, { clock, log: silentLogger() })
await net.start()
process.stdout.write(`ADDR ${net.multiaddrs()[0]}\n`)
while (net.peers().length < Number(P) - 1) await clock.sleep(50)
const members = [net.self, ...net.peers()].map(p => ({ id: p.id, zone: p.labels.zone, host: p.labels.host })).sort((a, b) => (a.id < b.id ? -1 : 1))
const coll = createCollective({ net, view: { epoch: 1, members }, clock, timeoutMs: 60_000 })
await coll.start()
const rank = coll.rank
// Every process derives every rank's vector, so the parent and the test can check results.
const vec = (r: number): Float32Array => {
  const rng = Rng.fromSeed(Number(seed)).split(`x${r}`)
  const out = new Float32Array(n)
  for (let i = 0; i < n; i++) out[i] = rng.float() * 2 - 1
  return out
}
const mine = vec(rank)
const s = shardRange(n, coll.size, rank)
const hex = (a: Float32Array): string => checksum64(new Uint8Array(a.buffer, a.byteOffset, a.byteLength)).toString(16)
const time = async (fn: (step: number) => Promise<unknown>): Promise<number> => {
  await fn(0)
  const t0 = performance.now()
  for (let i = 1; i <= Number(rounds); i++) await fn(i)
  return (performance.now() - t0) / 1000 / Number(rounds)
}
let ag: Float32Array | undefined
let rs: Float32Array | undefined
let ar: Float32Array | undefined
const agS = await time(async step => { ag = (await coll.allGather(vec(0).slice(s.start, s.start + s.length), n, { step })).data })
const rsS = await time(async step => { rs = (await coll.reduceScatter(mine, { step: 1000 + step })).data })
ar = (await coll.allReduce(mine, { step: 5000 })).data
const bytes = n * 4
process.stdout.write(JSON.stringify({
  rank,
  ring: coll.ring,
  allGather: hex(ag!),
  reduceScatter: hex(rs!),
  allReduce: hex(ar),
  // Bytes of the whole vector per second per rank: a ring moves (P-1)/P of it through each rank.
  allGatherMBps: Math.round(bytes / agS / 1e6),
  reduceScatterMBps: Math.round(bytes / rsS / 1e6)
}) + '\n')
// Our last messages may still be on their way to slower ranks: linger before leaving.
await clock.sleep(2000)
await coll.stop()
await Promise.race([net.stop(), clock.sleep(3000)])
process.exit(0)
