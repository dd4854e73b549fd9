import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { RealClock, silentLogger } from '../../core/index.ts'
import { createLibp2pPeerNet, loadOrCreateIdentity, type Libp2pPeerNet, type PeerNet } from '../../mesh/index.ts'
import { waitFor } from './wait.ts'

const SECRET = new TextEncoder().encode('a test secret that is long enough')

export interface Libp2pNets {
  nets: Libp2pPeerNet[]
  dirs: string[]
  /** Stops every net and removes the identity directories. */
  close(): Promise<void>
}

/**
 * Starts n real libp2p PeerNets in this process on loopback, all bootstrapping from the first,
 * zones z0 z1 z0 ... and one host each. The bulk channel is on unless `bulk: false`.
 */
export async function startLibp2pNets(n: number, opts: { secret?: Uint8Array; runId?: string; bulk?: boolean } = {}): Promise<Libp2pNets> {
  const clock = new RealClock()
  const log = silentLogger()
  const nets: Libp2pPeerNet[] = []
  const dirs: string[] = []
  for (let i = 0; i < n; i++) {
    const dir = mkdtempSync(join(tmpdir(), 'zm-net-'))
    dirs.push(dir)
    const net = createLibp2pPeerNet(
      {
        runId: opts.runId ?? 'test-run',
        secret: opts.secret ?? SECRET,
        privateKey: await loadOrCreateIdentity(dir),
        labels: { zone: `z${i % 2}`, host: `h${i}` },
        bootstrap: i === 0 ? [] : nets[0]!.multiaddrs().slice(0, 1),
        authTimeoutMs: 3000,
        announceIntervalMs: 300,
        bulk: opts.bulk ?? true
      },
      { clock, log }
    )
    await net.start()
    nets.push(net)
  }
  return {
    nets,
    dirs,
    async close() {
      await Promise.all(nets.map(x => x.stop()))
      for (const d of dirs) rmSync(d, { recursive: true, force: true })
    }
  }
}

/** Resolves once every net sees every other one. */
export async function allConnected(nets: PeerNet[], timeoutMs = 15_000): Promise<void> {
  try {
    await waitFor('every net to see every other one', timeoutMs, () => (nets.every(x => x.peers().length === nets.length - 1) ? true : undefined), 50)
  } catch (err) {
    throw new Error(`nets did not connect: ${nets.map(x => x.peers().length).join(',')} peers`, { cause: err })
  }
}
