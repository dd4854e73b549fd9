import test from 'ava'
import { formatStatus } from '../../cli/status-format.ts'

const member = (id: string, rank: number) => ({ id, zone: 'z0', host: id, rank, live: true, phi: 0.4, lastHeartbeatAgeMs: 120, monitored: rank === 0 })

test('status shows the view, the leader and training progress', t => {
  const text = formatStatus({
    version: '0.1.0',
    run: 'demo',
    peerId: 'b',
    multiaddrs: [],
    uptimeS: 5,
    cpuMs: 2340,
    membership: {
      self: 'b',
      epoch: 2,
      members: [member('a', 0), member('b', 1)],
      paused: false,
      member: true,
      joining: [],
      leader: 'a',
      detectionBoundMs: 900
    },
    training: {
      role: 'rank',
      rank: 1,
      worldSize: 2,
      step: 7,
      steps: 20,
      loss: 3.5,
      evalLoss: undefined,
      tokensPerS: 1234.5,
      epoch: 2,
      bytes: { host: 0, zone: 1, wan: 2 },
      snapshotStep: 6,
      recoveries: [],
      retries: 0,
      growths: [],
      phase: 'step 8: backward'
    }
  })
  t.log(text)
  t.regex(text, /view 2: 2 members, 2 live/)
  t.regex(text, /a \(leader\)/)
  t.regex(text, /training: rank 1 of 2, step 7\/20, loss 3\.5000, 1235 tokens\/s, snapshot at step 6/)
  t.regex(text, /now: step 8: backward/)
  t.regex(text, /up 5 s, cpu 2\.3 s/)
})

test('the network section: reachability with its evidence, relays, and a warning naming peers whose bulk bytes ride a relay', async t => {
  const { formatNetwork } = await import('../../cli/status-format.ts')
  const { networkChecks } = await import('../../cli/doctor/checks.ts')
  const home = {
    reach: 'nat' as const,
    externalIp: '45.77.0.2',
    seenBy: 'pub',
    punches: { ok: 0, failed: 3 },
    relays: ['pub'],
    relayServing: 0,
    peers: [
      { id: 'pub', link: 'direct' as const, bulk: 'libp2p' as const },
      { id: 'other-home', link: 'relayed' as const, bulk: 'libp2p' as const }
    ]
  }
  const lines = formatNetwork(home)
  t.regex(lines[0]!, /behind NAT at 45\.77\.0\.2; relayed only: 3 hole punch\(es\) failed, none worked/)
  t.regex(lines[1]!, /relays held: pub; reservations served: 0/)
  t.is(lines[2], 'peers: 1 direct, 1 relayed')
  t.regex(lines[3]!, /^WARNING: bulk bytes to pub, other-home ride a relay: /)
  const checks = networkChecks(home)
  t.deepEqual(
    checks.map(c => [c.name, c.level]),
    [
      ['reach', 'warn'],
      ['relays', 'ok'],
      ['peers', 'warn']
    ]
  )
  // A home whose punches work, and a public relay: no warning.
  const punched = { ...home, punches: { ok: 2, failed: 0 }, peers: [{ id: 'other-home', link: 'relayed' as const, bulk: 'punched' as const }] }
  t.regex(formatNetwork(punched)[0]!, /hole punching works \(2 punched, 0 failed\)/)
  t.is(formatNetwork(punched).length, 3)
  const pub = { reach: 'public' as const, reachedAt: '45.77.0.10', punches: { ok: 0, failed: 0 }, relays: [], relayServing: 4, peers: [] }
  t.is(formatNetwork(pub)[0], 'reachability: public (peers see it at its own address 45.77.0.10)')
  t.deepEqual(
    networkChecks(pub).map(c => c.level),
    ['ok', 'ok', 'ok']
  )
})
