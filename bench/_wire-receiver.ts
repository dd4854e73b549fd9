// The receiving side of bench/wire.ts, in its own process (its own core): a raw TCP sink and a
// libp2p PeerNet sink. Prints its addresses as one JSON line, then serves until killed.
import { createServer } from 'node:net'
import { generateKeyPair } from '@libp2p/crypto/keys'
import { RealClock, silentLogger } from '../core/index.ts'
import { createLibp2pPeerNet } from '../mesh/index.ts'

const encrypter = process.argv[2] === 'tls' ? 'tls' : 'noise'
const net = createLibp2pPeerNet(
  {
    runId: 'bench',
    secret: new TextEncoder().encode('benchmark secret, long enough'),
    privateKey: await generateKeyPair('Ed25519'),
    labels: { zone: 'z', host: 'receiver' },
    encrypters: [encrypter],
    listen: ['/ip4/127.0.0.1/tcp/0']
  },
  { clock: new RealClock(), log: silentLogger() }
)
net.handle('/sink/1', async s => {
  for await (const c of s) void c
  await s.write(Uint8Array.of(1))
  await s.end()
})
await net.start()

// Raw TCP: the first 8 bytes give the total; one byte goes back when it has all arrived.
const tcp = createServer(sock => {
  let want = -1
  let got = 0
  let head = Buffer.alloc(0)
  sock.on('data', (c: Buffer) => {
    if (want < 0) {
      head = Buffer.concat([head, c])
      if (head.length < 8) return
      want = Number(head.readBigUInt64LE(0))
      got = head.length - 8
    } else {
      got += c.length
    }
    if (got >= want) sock.write(Buffer.of(1))
  })
})
await new Promise<void>(resolve => tcp.listen(0, '127.0.0.1', resolve))
process.stdout.write(JSON.stringify({ multiaddr: net.multiaddrs()[0], tcpPort: (tcp.address() as { port: number }).port }) + '\n')
