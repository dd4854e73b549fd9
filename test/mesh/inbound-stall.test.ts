// Stalled inbound libp2p connections (opened, never upgraded) from one address must not keep a
// correct joiner out: libp2p's defaults (10 pending upgrades in all, 10 s each) let ten of them
// refuse every other inbound connection (MESH_LIMITS.libp2pInbound).
import test from 'ava'
import { mkdtempSync, rmSync } from 'node:fs'
import { connect, type Socket } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { RealClock, silentLogger } from '../../core/index.ts'
import { createLibp2pPeerNet, loadOrCreateIdentity, MESH_LIMITS, type Libp2pPeerNet } from '../../mesh/index.ts'
import { waitFor } from '../helpers/wait.ts'

const clock = new RealClock()

async function node(bootstrap: string[] = []): Promise<{ net: Libp2pPeerNet; dir: string }> {
  const dir = mkdtempSync(join(tmpdir(), 'zm-stall-'))
  const net = createLibp2pPeerNet(
    {
      runId: 'stall-run',
      secret: new TextEncoder().encode('a run secret long enough'),
      privateKey: await loadOrCreateIdentity(dir),
      labels: { zone: 'z', host: 'h' },
      listen: ['/ip4/127.0.0.1/tcp/0'],
      bootstrap,
      authTimeoutMs: 5000,
      announceIntervalMs: 200
    },
    { clock, log: silentLogger() }
  )
  await net.start()
  return { net, dir }
}

/** Opens `n` TCP connections to `port` that never say a byte; resolves once they are connected. */
async function stall(port: number, n: number): Promise<Socket[]> {
  const out = Array.from({ length: n }, () => connect(port, '127.0.0.1').on('error', () => {}))
  await Promise.all(out.map(s => new Promise(resolve => s.once('connect', resolve).once('close', resolve))))
  return out
}

test('ten stalled inbound connections from one address do not keep a correct joiner out while they are pending', async t => {
  t.timeout(60_000)
  const a = await node()
  let b: { net: Libp2pPeerNet; dir: string } | undefined
  const sockets: Socket[] = []
  try {
    const addr = a.net.multiaddrs().find(x => x.startsWith('/ip4/127.0.0.1/tcp/'))!
    const port = Number(addr.split('/')[4])
    // Ten, paced under libp2p's per-host rate (MESH_LIMITS.libp2pInbound.perHostPerSecond) so
    // every one is taken as a pending upgrade: the attack.
    const per = MESH_LIMITS.libp2pInbound.perHostPerSecond
    const first = await stall(port, per)
    sockets.push(...first)
    await clock.sleep(1100)
    sockets.push(...(await stall(port, 10 - per)))
    await clock.sleep(1100)
    const closed = new Set<Socket>()
    for (const s of sockets) s.once('close', () => closed.add(s))
    t.is(closed.size, 0, 'the stalled connections are pending')
    // A correct joiner from the same address.
    b = await node([addr])
    const joiner = b.net.self.id
    await waitFor('the joiner to be admitted', 30_000, () => (a.net.peers().some(p => p.id === joiner) ? true : undefined))
    const stillOpen = first.filter(s => !closed.has(s)).length
    t.log(`admitted while ${stillOpen} of the first ${first.length} stalled connections were still pending`)
    t.is(stillOpen, first.length, 'the joiner got in before the stalled connections timed out')
  } finally {
    for (const s of sockets) s.destroy()
    await b?.net.stop()
    await a.net.stop()
    rmSync(a.dir, { recursive: true, force: true })
    if (b !== undefined) rmSync(b.dir, { recursive: true, force: true })
  }
})
