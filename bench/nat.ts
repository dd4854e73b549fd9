// Bulk-stream throughput through NAT on the NAT harness (test/helpers/zones/nat.ts; root,
// iproute2 and nftables): one PeerNet per host (bench/_nat-peer.ts), a public relay host, and a
// sender that moves BENCH_NAT_MIB MiB (default 64) on one `open()` stream, four times (the first,
// which pays for the hole punch or the fallback, is reported but not counted), to:
// - `public`: another public host (no NAT: the baseline),
// - `punched`: a host in another cone-NAT home (the sender in a cone home too),
// - `relayed`: a host in a symmetric-NAT home (no punch works: libp2p streams through the relay).
// Every host link is shaped to BENCH_NAT_MBIT Mbit/s each way (default 200; 0 = unshaped, which
// measures CPU more than paths on a 2-core box). One JSON line per path (`nat.throughput`):
// median MB/s of the counted transfers, the path the route took, and the ratio to `public`.
import { spawn } from 'node:child_process'
import { createInterface } from 'node:readline'
import { envNumber } from './harness.ts'
import { createNat, type NatHost, type NatTopology } from '../test/helpers/zones/index.ts'

const mbit = envNumber('BENCH_NAT_MBIT', 200)
const topo: NatTopology = await createNat({
  publicHosts: 3,
  homes: [
    { nat: 'cone', hosts: 1 },
    { nat: 'cone', hosts: 1 },
    { nat: 'symmetric', hosts: 1 }
  ],
  ...(mbit > 0 ? { linkBitsPerS: mbit * 1_000_000 } : {})
})
const host = (name: string): NatHost => topo.hosts.find(h => h.name === name)!
const procs: Array<ReturnType<typeof spawn>> = []

/** Starts a peer on `h`; resolves with its first line ({addr, id}) and a line iterator. */
async function peer(h: NatHost, args: string[]): Promise<{ first: { addr: string; id: string }; lines: AsyncIterator<string> }> {
  const { command, args: argv } = topo.exec(h, [process.execPath, new URL('./_nat-peer.ts', import.meta.url).pathname, h.ip, ...args])
  const p = spawn(command, argv, { stdio: ['ignore', 'pipe', 'inherit'] })
  procs.push(p)
  const lines = createInterface({ input: p.stdout! })[Symbol.asyncIterator]()
  const first = JSON.parse((await lines.next()).value as string) as { addr: string; id: string }
  return { first, lines }
}

async function measure(path: string, from: NatHost, to: NatHost, relay: string): Promise<{ mbps: number; last: Record<string, unknown> }> {
  const sink = await peer(to, [relay])
  const src = await peer(from, [relay, sink.first.id])
  const samples: number[] = []
  let last: Record<string, unknown> = {}
  for (;;) {
    const r = await src.lines.next()
    if (r.done === true) break
    const o = JSON.parse(r.value as string) as Record<string, unknown>
    if (o['done'] === true) break
    process.stderr.write(`nat ${path}: ${r.value}\n`)
    if ((o['run'] as number) > 0) samples.push(o['mb_per_s'] as number)
    last = o
  }
  samples.sort((a, b) => a - b)
  return { mbps: samples[Math.floor(samples.length / 2)] ?? Number.NaN, last }
}

try {
  const relay = await peer(host('public-0'), ['-'])
  const results: Record<string, { mbps: number; last: Record<string, unknown> }> = {}
  for (const [path, from, to] of [
    ['public', 'public-1', 'public-2'],
    ['punched', 'home0-0', 'home1-0'],
    ['relayed', 'home0-0', 'home2-0']
  ] as const) {
    results[path] = await measure(path, host(from), host(to), relay.first.addr)
    for (const p of procs.slice(1)) p.kill('SIGKILL')
    procs.splice(1)
  }
  for (const [path, r] of Object.entries(results)) {
    process.stdout.write(
      `${JSON.stringify({
        bench: 'nat.throughput',
        path,
        link_mbit: mbit,
        mib: envNumber('BENCH_NAT_MIB', 64),
        mb_per_s: Number(r.mbps.toFixed(2)),
        ratio_to_public: Number((r.mbps / results['public']!.mbps).toFixed(3)),
        link: r.last['link'],
        bulk: r.last['bulk']
      })}\n`
    )
  }
} finally {
  for (const p of procs) p.kill('SIGKILL')
  await topo.stop()
}
