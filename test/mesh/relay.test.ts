// Circuit Relay v2 inside a run (mesh/libp2p/node.ts relayGate, relays.ts): a member behind NAT
// holds a reservation on a public member; a stranger without the run secret can neither reserve
// a slot nor be relayed to a member.
import test from 'ava'
import { mkdtempSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { createLibp2p } from 'libp2p'
import { tcp } from '@libp2p/tcp'
import { noise } from '@chainsafe/libp2p-noise'
import { yamux } from '@chainsafe/libp2p-yamux'
import { identify } from '@libp2p/identify'
import { circuitRelayTransport } from '@libp2p/circuit-relay-v2'
import { multiaddr } from '@multiformats/multiaddr'
import { RealClock, silentLogger } from '../../core/index.ts'
import { createLibp2pPeerNet, loadOrCreateIdentity, type Libp2pPeerNet } from '../../mesh/index.ts'
import { internals, type MeshNode } from '../../mesh/libp2p/node.ts'
import { waitFor } from '../helpers/wait.ts'

const SECRET = new TextEncoder().encode('the run secret, long enough')

async function member(o: { bootstrap?: string[]; natted?: boolean }): Promise<Libp2pPeerNet> {
  const dir = mkdtempSync(join(tmpdir(), 'zm-relay-'))
  const net = createLibp2pPeerNet(
    {
      runId: 'relay-run',
      secret: SECRET,
      privateKey: await loadOrCreateIdentity(dir),
      labels: { zone: 'z', host: dir.slice(-6) },
      bootstrap: o.bootstrap ?? [],
      authTimeoutMs: 2000,
      announceIntervalMs: 200,
      // A NATed member on loopback: every address a peer sees it at is "not its own".
      ...(o.natted === true ? { localIps: () => new Set<string>() } : {})
    },
    { clock: new RealClock(), log: silentLogger() }
  )
  await net.start()
  return net
}

/** A bare libp2p node that speaks the relay protocol but not the run handshake. */
async function stranger(): Promise<MeshNode> {
  const n = await createLibp2p({
    addresses: { listen: ['/ip4/127.0.0.1/tcp/0'] },
    transports: [tcp(), circuitRelayTransport()],
    connectionEncrypters: [noise()],
    streamMuxers: [yamux()],
    services: { identify: identify() }
  })
  return n as unknown as MeshNode
}

test.serial('a NATed member holds a slot on a public one; a stranger can neither reserve nor be relayed', async t => {
  t.timeout(60_000)
  const relay = await member({})
  const natted = await member({ bootstrap: relay.multiaddrs(), natted: true })
  const strangers: MeshNode[] = []
  try {
    // The positive control: the member reserves, and its relayed address is announced.
    await waitFor('the NATed member to hold a reservation on the relay', 20_000, () =>
      natted.connectivity?.().relays.includes(relay.self.id) === true ? true : undefined
    )
    t.is(natted.connectivity?.().reach, 'nat')
    t.is(relay.connectivity?.().reach, 'public')
    t.is(relay.connectivity?.().relayServing, 1)
    t.true(natted.multiaddrs().some(a => a.includes(`/p2p/${relay.self.id}/p2p-circuit/p2p/${natted.self.id}`)))

    const relayAddr = relay.multiaddrs().find(a => a.startsWith('/ip4/127.0.0.1/'))!
    // A stranger asks the same relay for a slot: refused.
    const s1 = await stranger()
    strangers.push(s1)
    await t.throwsAsync(internals(s1).transportManager.listen([multiaddr(`${relayAddr}/p2p-circuit`)]))
    t.false(
      s1.getMultiaddrs().some(a => a.toString().includes('/p2p-circuit')),
      'the stranger got no relayed address'
    )
    t.is(relay.connectivity?.().relayServing, 1, 'the relay still serves only the member')
    // Another stranger dials the member through the relay: refused before the member sees it.
    const s2 = await stranger()
    strangers.push(s2)
    await t.throwsAsync(s2.dial(multiaddr(`${relayAddr}/p2p-circuit/p2p/${natted.self.id}`), { signal: AbortSignal.timeout(15_000) }))
    t.false(
      natted.peers().some(p => p.id === s2.peerId.toString()),
      'the member never admitted the stranger'
    )
  } finally {
    for (const s of strangers) await s.stop()
    await natted.stop()
    await relay.stop()
  }
})
