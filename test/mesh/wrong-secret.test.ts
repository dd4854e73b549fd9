import test from 'ava'
import { Writable } from 'node:stream'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { RealClock, createLogger, silentLogger } from '../../core/index.ts'
import { createLibp2pPeerNet, loadOrCreateIdentity, deriveRunKeys, authProof, gossipTag, type Libp2pPeerNet } from '../../mesh/index.ts'

const enc = new TextEncoder()

async function node (opts: { secret: string, runId?: string, bootstrap?: string[], lines?: string[] }): Promise<{ net: Libp2pPeerNet, dir: string }> {
  const dir = mkdtempSync(join(tmpdir(), 'zm-auth-'))
  const log = opts.lines === undefined
    ? silentLogger()
    : createLogger({ level: 'debug', destination: new Writable({ write (c, _e, cb) { opts.lines!.push(String(c)); cb() } }) })
  const net = createLibp2pPeerNet({
    runId: opts.runId ?? 'iso-run',
    secret: enc.encode(opts.secret),
    privateKey: await loadOrCreateIdentity(dir),
    labels: { zone: 'z', host: 'h' },
    bootstrap: opts.bootstrap ?? [],
    authTimeoutMs: 1500,
    announceIntervalMs: 200
  }, { clock: new RealClock(), log })
  await net.start()
  return { net, dir }
}

const sleep = (ms: number): Promise<void> => new Promise(resolve => setTimeout(resolve, ms))

test.serial('a node with the wrong secret cannot join; the run logs why at debug and keeps working', async t => {
  const lines: string[] = []
  const good = await node({ secret: 'the right secret, long enough', lines })
  const friend = await node({ secret: 'the right secret, long enough', bootstrap: good.net.multiaddrs() })
  const intruder = await node({ secret: 'a wrong secret that is long too', bootstrap: good.net.multiaddrs() })
  try {
    const deadline = performance.now() + 10_000
    while (good.net.peers().length < 1 && performance.now() < deadline) await sleep(50)
    await sleep(2500) // longer than the auth timeout: the intruder had every chance
    t.deepEqual(good.net.peers().map(p => p.id), [friend.net.self.id], 'only the friend is a peer')
    t.deepEqual(intruder.net.peers(), [], 'the intruder sees no one')
    t.false(friend.net.peers().some(p => p.id === intruder.net.self.id))
    const why = lines.map(l => JSON.parse(l) as { msg: string, peer?: string, why?: string, level: number })
      .filter(l => l.msg.includes('failed run authentication') && l.peer === intruder.net.self.id)
    t.true(why.length >= 1, 'the refusal is logged')
    t.is(why[0]!.level, 20, 'at debug level')
    t.regex(why[0]!.why ?? '', /secret|authentication|closed/)
    t.false(lines.some(l => l.includes('the right secret')), 'the secret never reaches a log')
    // Streams from the intruder are refused too (it is not connected, so the open fails).
    good.net.handle('/x/1', async s => { await s.end() })
    await t.throwsAsync(intruder.net.open(good.net.self.id, '/x/1'), { name: 'PeerGoneError' })
  } finally {
    await Promise.all([good.net.stop(), friend.net.stop(), intruder.net.stop()])
    for (const d of [good.dir, friend.dir, intruder.dir]) rmSync(d, { recursive: true, force: true })
  }
})

test.serial('the same secret under another run id does not authenticate', async t => {
  const a = await node({ secret: 'shared secret for two runs', runId: 'run-a' })
  const b = await node({ secret: 'shared secret for two runs', runId: 'run-b', bootstrap: a.net.multiaddrs() })
  try {
    await sleep(2500)
    t.deepEqual(a.net.peers(), [])
    t.deepEqual(b.net.peers(), [])
  } finally {
    await Promise.all([a.net.stop(), b.net.stop()])
    for (const d of [a.dir, b.dir]) rmSync(d, { recursive: true, force: true })
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
  t.notDeepEqual(gossipTag(k.gossip, 'A', 't', n1), gossipTag(k.gossip, 'B', 't', n1), 'the tag binds the publisher')
  t.notDeepEqual(gossipTag(k.gossip, 'A', 't', n1), gossipTag(k.gossip, 'A', 'u', n1), 'and the topic')
  t.throws(() => deriveRunKeys('r', enc.encode('short')), { name: 'InvalidArgumentError' })
})
