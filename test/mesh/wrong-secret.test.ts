import test from 'ava'
import { Writable } from 'node:stream'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { RealClock, createLogger, silentLogger } from '../../core/index.ts'
import {
  createLibp2pPeerNet,
  loadOrCreateIdentity,
  deriveRunKeys,
  authProof,
  sealGossip,
  openGossip,
  gossipTopicName,
  type Libp2pPeerNet
} from '../../mesh/index.ts'
import { waitFor } from '../helpers/wait.ts'

const enc = new TextEncoder()

async function node(opts: { secret: string; runId?: string; bootstrap?: string[]; lines?: string[] }): Promise<{ net: Libp2pPeerNet; dir: string }> {
  const dir = mkdtempSync(join(tmpdir(), 'zm-auth-'))
  const log =
    opts.lines === undefined
      ? silentLogger()
      : createLogger({
          level: 'debug',
          destination: new Writable({
            write(c, _e, cb) {
              opts.lines!.push(String(c))
              cb()
            }
          })
        })
  const net = createLibp2pPeerNet(
    {
      runId: opts.runId ?? 'iso-run',
      secret: enc.encode(opts.secret),
      privateKey: await loadOrCreateIdentity(dir),
      labels: { zone: 'z', host: 'h' },
      bootstrap: opts.bootstrap ?? [],
      // Long enough for a right secret's handshake on a loaded machine; the tests wait for the
      // outcome (a connect, a logged refusal), not for this timeout.
      authTimeoutMs: 5000,
      announceIntervalMs: 200
    },
    { clock: new RealClock(), log }
  )
  await net.start()
  return { net, dir }
}

interface LogLine {
  msg: string
  peer?: string
  why?: string
  level: number
}

/** The refusals `lines` (a node's debug log) records for `peer`. */
const refusals = (lines: string[], peer: string): LogLine[] =>
  lines.map(l => JSON.parse(l) as LogLine).filter(l => l.msg.includes('failed run authentication') && l.peer === peer)

test.serial('a node with the wrong secret cannot join; the run logs why at debug and keeps working', async t => {
  const lines: string[] = []
  const good = await node({ secret: 'the right secret, long enough', lines })
  // The positive control: a node with the right secret, started the same way at the same time.
  const friend = await node({ secret: 'the right secret, long enough', bootstrap: good.net.multiaddrs() })
  const intruder = await node({ secret: 'a wrong secret that is long too', bootstrap: good.net.multiaddrs() })
  try {
    // Wait for both outcomes: the friend admitted, and the intruder tried and refused.
    await waitFor('the friend to connect', 20_000, () => (good.net.peers().some(p => p.id === friend.net.self.id) ? true : undefined), 50)
    const why = await waitFor(
      'the intruder to be refused',
      20_000,
      () => {
        const r = refusals(lines, intruder.net.self.id)
        return r.length > 0 ? r : undefined
      },
      50
    )
    t.deepEqual(
      good.net.peers().map(p => p.id),
      [friend.net.self.id],
      'only the friend is a peer'
    )
    t.deepEqual(
      friend.net.peers().map(p => p.id),
      [good.net.self.id],
      'the friend sees the node it bootstrapped from'
    )
    t.deepEqual(intruder.net.peers(), [], 'the intruder sees no one')
    t.false(friend.net.peers().some(p => p.id === intruder.net.self.id))
    t.is(why[0]!.level, 20, 'the refusal is logged at debug level')
    t.regex(why[0]!.why ?? '', /secret|authentication|closed/)
    t.deepEqual(refusals(lines, friend.net.self.id), [], 'the friend was never refused')
    t.false(
      lines.some(l => l.includes('the right secret')),
      'the secret never reaches a log'
    )
    // Streams: the friend's open succeeds, the intruder's fails (it is not connected).
    good.net.handle('/x/1', async s => {
      await s.end()
    })
    const ok = await friend.net.open(good.net.self.id, '/x/1')
    await ok.end()
    await t.throwsAsync(intruder.net.open(good.net.self.id, '/x/1'), { name: 'PeerGoneError' })
  } finally {
    await Promise.all([good.net.stop(), friend.net.stop(), intruder.net.stop()])
    for (const d of [good.dir, friend.dir, intruder.dir]) rmSync(d, { recursive: true, force: true })
  }
})

test.serial('the same secret under another run id does not authenticate', async t => {
  const lines: string[] = []
  const a = await node({ secret: 'shared secret for two runs', runId: 'run-a', lines })
  // The positive control: the same secret under the same run id, started the same way.
  const same = await node({ secret: 'shared secret for two runs', runId: 'run-a', bootstrap: a.net.multiaddrs() })
  const b = await node({ secret: 'shared secret for two runs', runId: 'run-b', bootstrap: a.net.multiaddrs() })
  try {
    await waitFor('the node of the same run to connect', 20_000, () => (a.net.peers().some(p => p.id === same.net.self.id) ? true : undefined), 50)
    await waitFor('the node of the other run to be refused', 20_000, () => (refusals(lines, b.net.self.id).length > 0 ? true : undefined), 50)
    t.deepEqual(
      a.net.peers().map(p => p.id),
      [same.net.self.id]
    )
    t.deepEqual(b.net.peers(), [])
  } finally {
    await Promise.all([a.net.stop(), same.net.stop(), b.net.stop()])
    for (const d of [a.dir, same.dir, b.dir]) rmSync(d, { recursive: true, force: true })
  }
})

test('proofs bind role, run, both ids and both nonces; secrets must be long enough', t => {
  const k = deriveRunKeys('r', enc.encode('0123456789abcdef'))
  const n1 = new Uint8Array(32).fill(1)
  const n2 = new Uint8Array(32).fill(2)
  const base = authProof(k.auth, 'dialer', 'r', 'A', 'B', n1, n2)
  const variants = [
    authProof(k.auth, 'listener', 'r', 'A', 'B', n1, n2),
    authProof(k.auth, 'dialer', 'r2', 'A', 'B', n1, n2),
    authProof(k.auth, 'dialer', 'r', 'B', 'A', n1, n2),
    authProof(k.auth, 'dialer', 'r', 'A', 'B', n2, n1),
    authProof(deriveRunKeys('r', enc.encode('0123456789abcdeX')).auth, 'dialer', 'r', 'A', 'B', n1, n2),
    authProof(k.auth, 'dialer', 'r', 'AB', '', n1, n2)
  ]
  for (const v of variants) t.notDeepEqual(v, base)
  t.deepEqual(authProof(k.auth, 'dialer', 'r', 'A', 'B', n1, n2), base, 'deterministic')
  t.notDeepEqual(k.auth, k.gossip, 'auth and gossip keys differ')
  const sealed = sealGossip(k.gossip, 'A', 't', n1)
  t.deepEqual(openGossip(k.gossip, 'A', 't', sealed), n1, 'a member opens it')
  t.is(openGossip(k.gossip, 'B', 't', sealed), undefined, 'the seal binds the publisher')
  t.is(openGossip(k.gossip, 'A', 'u', sealed), undefined, 'and the topic')
  t.is(openGossip(deriveRunKeys('r', enc.encode('0123456789abcdeX')).gossip, 'A', 't', sealed), undefined, 'and the secret')
  t.false(Buffer.from(sealed).includes(Buffer.from(n1)), 'the bytes are not readable without the secret')
  t.notRegex(gossipTopicName(k.gossip, 'membership/hb'), /membership|hb|\/r\//, 'neither the run id nor the topic is in the gossipsub topic name')
  t.throws(() => deriveRunKeys('r', enc.encode('short')), { name: 'InvalidArgumentError' })
})
