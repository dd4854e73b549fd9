// One PeerNet of bench/nat.ts, run inside a namespace of the NAT harness: listens on argv[2]
// (an IP), bootstraps from argv[3] (or none), serves /sink/1 (reads everything, answers one
// byte) and, with argv[4] = a peer id, waits until that peer is admitted, sends it
// BENCH_NAT_MIB MiB on one stream three times and prints each transfer as a JSON line, with
// the bulk path its route took. Prints its address first ({"addr": ...}); serves until killed.
import { generateKeyPair } from '@libp2p/crypto/keys'
import { RealClock, silentLogger } from '../core/index.ts'
import { createLibp2pPeerNet } from '../mesh/index.ts'

const [ip, bootstrap, target] = process.argv.slice(2)
const clock = new RealClock()
const net = createLibp2pPeerNet(
  {
    runId: 'bench-nat',
    secret: new TextEncoder().encode('benchmark secret, long enough'),
    privateKey: await generateKeyPair('Ed25519'),
    labels: { zone: 'z', host: ip ?? 'h' },
    listen: [`/ip4/${ip}/tcp/0`],
    bootstrap: bootstrap === undefined || bootstrap === '-' ? [] : [bootstrap],
    announceIntervalMs: 500
  },
  { clock, log: silentLogger() }
)
net.handle('/sink/1', async s => {
  for await (const c of s) void c
  await s.write(Uint8Array.of(1))
  await s.end()
})
await net.start()
const out = (o: unknown): void => void process.stdout.write(`${JSON.stringify(o)}\n`)
out({ addr: net.multiaddrs().find(a => a.startsWith(`/ip4/${ip}/`)), id: net.self.id })
if (target !== undefined) {
  const mib = Number(process.env['BENCH_NAT_MIB'] ?? 64)
  const chunk = new Uint8Array(1 << 20).fill(7)
  while (!net.peers().some(p => p.id === target)) await clock.sleep(100)
  // Let the relay reservation and the path settle (a punch happens on the first open).
  await clock.sleep(2000)
  for (let run = 0; run < 4; run++) {
    const t0 = clock.monotonic()
    const s = await net.open(target, '/sink/1')
    for (let i = 0; i < mib; i++) await s.write(chunk)
    await s.end()
    for await (const c of s) void c
    const s_ = (clock.monotonic() - t0) / 1000
    const c = net.connectivity?.()
    const p = c?.peers.find(x => x.id === target)
    // The first transfer pays the punch (or the fallback); it is reported but not a sample.
    out({ run, seconds: s_, mb_per_s: (mib * 1.048576) / s_, link: p?.link, bulk: p?.bulk, punches: c?.punches })
  }
  out({ done: true })
}
