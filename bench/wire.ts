// Loopback throughput of one peer pair: PeerNet streams over libp2p (noise or TLS + yamux) and
// over the bulk channel (native TLS-PSK), 1-4 streams, against a raw Node TCP socket in the
// same run. Sender here, receiver in a child process so
// each side has its own core. Bytes per measurement: BENCH_WIRE_MIB (default 512).
import { generateKeyPair } from '@libp2p/crypto/keys'
import { RealClock, silentLogger } from '../core/index.ts'
import { createLibp2pPeerNet } from '../mesh/index.ts'
import { rawTcpSeconds, startWireReceiver } from './_wire-raw.ts'

const MiB = 1024 * 1024
const total = Number(process.env['BENCH_WIRE_MIB'] ?? 512) * MiB
const chunk = new Uint8Array(MiB).map((_, i) => i * 7)

function line(r: Record<string, unknown>): void {
  process.stdout.write(JSON.stringify(r) + '\n')
}

const results: Array<{ impl: string; seconds: number }> = []
let rawSeconds = Infinity
const configs = [
  { encrypter: 'noise' as const, bulk: false },
  { encrypter: 'tls' as const, bulk: false },
  { encrypter: 'tls' as const, bulk: true }
]
for (const { encrypter, bulk } of configs) {
  const rx = await startWireReceiver(encrypter)
  try {
    // Raw TCP is measured against each receiver process, and the best of the runs is the baseline.
    for (let i = 0; i < 3; i++) rawSeconds = Math.min(rawSeconds, await rawTcpSeconds(rx.info.tcpPort, total, chunk))
    const net = createLibp2pPeerNet(
      {
        runId: 'bench',
        secret: new TextEncoder().encode('benchmark secret, long enough'),
        privateKey: await generateKeyPair('Ed25519'),
        labels: { zone: 'z', host: 'sender' },
        encrypters: [encrypter],
        bootstrap: [rx.info.multiaddr],
        bulk
      },
      { clock: new RealClock(), log: silentLogger() }
    )
    await net.start()
    const deadline = performance.now() + 15_000
    while (net.peers().length === 0 && performance.now() < deadline) await new Promise(resolve => setTimeout(resolve, 20))
    const peer = net.peers()[0]?.id
    if (peer === undefined) throw new Error('the sender never authenticated to the receiver')
    for (const streams of [1, 2, 4]) {
      const per = total / streams
      const t0 = performance.now()
      await Promise.all(
        Array.from({ length: streams }, async () => {
          const s = await net.open(peer, '/sink/1')
          const ack = (async () => {
            for await (const c of s) void c
          })()
          for (let sent = 0; sent < per; sent += chunk.length) await s.write(chunk)
          await s.end()
          await ack
        })
      )
      const via = bulk ? 'bulk channel (native TLS 1.3-PSK, AES-128-GCM)' : `libp2p ${encrypter} + yamux`
      results.push({ impl: `PeerNet over ${via}, ${streams} stream${streams > 1 ? 's' : ''}`, seconds: (performance.now() - t0) / 1000 })
    }
    await net.stop()
  } finally {
    rx.kill()
  }
}
line({
  bench: 'wire',
  impl: 'raw Node TCP (baseline)',
  bytes: total,
  seconds: Number(rawSeconds.toPrecision(4)),
  gbit_s: Number(((total * 8) / rawSeconds / 1e9).toPrecision(4))
})
for (const r of results) {
  line({
    bench: 'wire',
    impl: r.impl,
    bytes: total,
    seconds: Number(r.seconds.toPrecision(4)),
    gbit_s: Number(((total * 8) / r.seconds / 1e9).toPrecision(4)),
    baseline: 'raw Node TCP',
    ratio: Number((rawSeconds / r.seconds).toPrecision(3))
  })
}
