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
