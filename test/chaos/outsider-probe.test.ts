// The outsider probe (issue 20): the attacks that used to hurt a node, replayed against a real
// training node: thousands of connect-and-close on the bulk port (descriptors held in
// CLOSE-WAIT until the fd limit), stalled inbound libp2p connections (refusing every other
// inbound connection), and a libp2p peer without the run secret. The node must give back its
// descriptors, keep its memory bounded, keep its mesh, and keep training.
import test from 'ava'
import { execFileSync } from 'node:child_process'
import { mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs'
import { connect, type Socket } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { RealClock, silentLogger } from '../../core/index.ts'
import { createLibp2pPeerNet, loadOrCreateIdentity } from '../../mesh/index.ts'
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
    } finally {
      for (const s of sockets) s.destroy()
      await stranger?.stop()
      for (const p of procs) p.child.kill('SIGKILL')
      rmSync(root, { recursive: true, force: true })
    }
  })
