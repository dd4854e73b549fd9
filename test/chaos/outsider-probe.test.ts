// The outsider probe (issue 20): the attacks that used to hurt a node, replayed against a real
// training node: thousands of connect-and-close on the bulk port (descriptors held in
// CLOSE-WAIT until the fd limit), stalled inbound libp2p connections (refusing every other
// inbound connection), a libp2p peer without the run secret, and a bare gossipsub sniffer that
// subscribes to every topic the node announces. The node must give back its descriptors, keep
// its memory bounded, keep its mesh, keep training, and let the sniffer read nothing.
import test from 'ava'
import { createLibp2p } from 'libp2p'
import { tcp } from '@libp2p/tcp'
import { noise } from '@chainsafe/libp2p-noise'
import { tls } from '@libp2p/tls'
import { yamux } from '@chainsafe/libp2p-yamux'
import { identify } from '@libp2p/identify'
import { gossipsub } from '@libp2p/gossipsub'
import { multiaddr } from '@multiformats/multiaddr'
import { execFileSync } from 'node:child_process'
import { mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs'
import { connect, type Socket } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { RealClock, silentLogger } from '../../core/index.ts'
import { createLibp2pPeerNet, decodeHeartbeat, loadOrCreateIdentity } from '../../mesh/index.ts'
import { fetchStatus } from '../../node/control.ts'
import type { NodeStatus } from '../../node/start.ts'
import { waitFor } from '../helpers/wait.ts'
import { startLocalMesh, trainUntilStopped, type Proc } from './helpers.ts'

const status = async (dir: string): Promise<NodeStatus | undefined> => (await fetchStatus(dir, 1000).catch(() => undefined)) as NodeStatus | undefined
const fds = (pid: number): number => readdirSync(`/proc/${pid}/fd`).length
const rssMiB = (pid: number): number => Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1] ?? 0) / 1024

/** The TCP ports `pid` listens on (ss from iproute2). */
function listening(pid: number): number[] {
  const out = execFileSync('ss', ['-ltnpH'], { encoding: 'utf8' })
  return out
    .split('\n')
    .filter(l => l.includes(`pid=${pid},`))
    .map(l => Number(/:(\d+)\s/.exec(l.split(/\s+/)[3] + ' ')?.[1]))
    .filter(p => Number.isInteger(p) && p > 0)
}

/**
 * A bare libp2p node (no zeromesh, no secret) with gossipsub: it dials `addr`, subscribes to
 * every topic a peer announces, and keeps what it hears.
 */
async function sniffer(addr: string) {
  const node = await createLibp2p({
    addresses: { listen: ['/ip4/127.0.0.1/tcp/0'] },
    transports: [tcp()],
    connectionEncrypters: [tls(), noise()],
    streamMuxers: [yamux()],
    services: { identify: identify(), pubsub: gossipsub({ allowPublishToZeroTopicPeers: true, floodPublish: true }) }
  })
  const topics = new Set<string>()
  const messages: Uint8Array[] = []
  let dialed = false
  node.services.pubsub.addEventListener('subscription-change', e => {
    for (const sub of e.detail.subscriptions) {
      if (sub.subscribe && !topics.has(sub.topic)) {
        topics.add(sub.topic)
        node.services.pubsub.subscribe(sub.topic)
      }
    }
  })
  node.services.pubsub.addEventListener('message', e => messages.push(e.detail.data))
  await node.start()
  // The node takes 5 new connections per host per second: retry past the probes before it.
  let error = ''
  for (let i = 0; i < 20 && !dialed; i++) {
    await node
      .dial(multiaddr(addr))
      .then(() => {
        dialed = true
      })
      .catch((err: unknown) => {
        error = String(err)
        return new Promise(resolve => setTimeout(resolve, 500))
      })
  }
  return { node, topics, messages, dialed: () => dialed, error: () => error }
}

const ssMissing = ((): string | undefined => {
  try {
    execFileSync('ss', ['-V'], { stdio: 'ignore' })
    return process.platform === 'linux' ? undefined : 'needs /proc (Linux)'
  } catch {
    return 'needs ss (iproute2)'
  }
})()

const title =
  'outsider probe: connect-and-close floods on the bulk port, stalled libp2p connections and a stranger without the secret leave a training node its descriptors, memory, mesh and progress'
if (ssMissing !== undefined) test.skip(`${title} [skipped: ${ssMissing}]`, () => {})
else
  test.serial(title, async t => {
    t.timeout(240_000)
    const root = mkdtempSync(join(tmpdir(), 'zm-probe-'))
    let procs: Proc[] = []
    const sockets: Socket[] = []
    let stranger: Awaited<ReturnType<typeof createLibp2pPeerNet>> | undefined
    let sniff: Awaited<ReturnType<typeof sniffer>> | undefined
    try {
      const mesh = await startLocalMesh(root, 'probe', 2, { heartbeatMs: 300, extra: () => trainUntilStopped(2, 'off') })
      procs = mesh.procs
      const { dirs, addr } = mesh
      const step = async (): Promise<number> => (await status(dirs[0]!))?.training?.step ?? 0
      await waitFor('training to commit step 3', 60_000, async () => ((await step()) >= 3 ? true : undefined))
      const pid = procs[0]!.child.pid!
      const libp2pPort = Number(addr.split('/')[4])
      const bulkPort = listening(pid).find(p => p !== libp2pPort)
      t.truthy(bulkPort, `the bulk port of ${pid} among ${JSON.stringify(listening(pid))}`)
      const before = { fds: fds(pid), rss: rssMiB(pid), step: await step() }
      t.log(`before: ${JSON.stringify(before)}`)
      // 1. Connect-and-close, 1500 times in waves of 250.
      for (let wave = 0; wave < 6; wave++) {
        await Promise.all(
          Array.from(
            { length: 250 },
            () =>
              new Promise<void>(resolve => {
                const s = connect(bulkPort!, '127.0.0.1', () => s.end())
                s.on('error', () => resolve())
                s.on('close', () => resolve())
              })
          )
        )
      }
      // 2. Stalled libp2p connections (never a byte), held through the rest.
      for (let i = 0; i < 20; i++) sockets.push(connect(libp2pPort, '127.0.0.1').on('error', () => {}))
      // 3. A libp2p peer without the run secret dials in.
      const sdir = mkdtempSync(join(root, 'stranger-'))
      stranger = createLibp2pPeerNet(
        {
          runId: 'probe',
          secret: new TextEncoder().encode('not the run secret, but long enough'),
          privateKey: await loadOrCreateIdentity(sdir),
          labels: { zone: 'z', host: 'stranger' },
          listen: ['/ip4/127.0.0.1/tcp/0'],
          bootstrap: [addr],
          authTimeoutMs: 5000,
          announceIntervalMs: 200
        },
        { clock: new RealClock(), log: silentLogger() }
      )
      await stranger.start()
      // 4. A bare gossipsub node dials in and listens to every topic it is told of.
      sniff = await sniffer(addr)
      // The node gives its descriptors back (handshake deadlines: 5 s) and trains on.
      const after = await waitFor('the descriptors to come back and training to go on', 60_000, async () => {
        const now = { fds: fds(pid), rss: rssMiB(pid), step: await step() }
        return now.fds <= before.fds + 40 && now.step >= before.step + 5 ? now : undefined
      })
      t.log(`after: ${JSON.stringify(after)}`)
      t.true(after.rss < before.rss + 200, `memory stays bounded (${before.rss.toFixed(0)} -> ${after.rss.toFixed(0)} MiB)`)
      t.is(stranger.peers().length, 0, 'the stranger was admitted by nobody')
      const s0 = await status(dirs[0]!)
      t.is(s0?.membership.members.length, 2, 'the view is the two nodes')
      // What the sniffer heard: topic names are keyed hashes, messages are sealed (nothing it
      // can read: no run id, no member id, no heartbeat).
      t.log(
        `sniffer: dialed ${sniff.dialed()} (last refusal: ${sniff.error() || 'none'}), still connected ${sniff.node.getConnections().length}, ${sniff.topics.size} topic names, ${sniff.messages.length} messages`
      )
      t.true(
        [...sniff.topics].every(n => /^\/zeromesh\/[0-9a-f]{32}$/.test(n)),
        `topic names name nothing: ${JSON.stringify([...sniff.topics])}`
      )
      const ids = s0!.membership.members.map(m => m.id)
      const text = (b: Uint8Array): string => Buffer.from(b).toString('latin1')
      t.false(
        sniff.messages.some(m => ['probe', ...ids].some(x => text(m).includes(x))),
        'no message it heard carries the run id or a member id in the clear'
      )
      t.false(
        sniff.messages.some(m => {
          try {
            decodeHeartbeat(m)
            return true
          } catch {
            return false
          }
        }),
        'no message it heard is a heartbeat'
      )
    } finally {
      for (const s of sockets) s.destroy()
      await stranger?.stop()
      await sniff?.node.stop()
      for (const p of procs) p.child.kill('SIGKILL')
      rmSync(root, { recursive: true, force: true })
    }
  })
