// Snapshot recovery on real processes over loopback libp2p, including failure detection
// (`npm run bench -- snapshot-procs`). Per state size it starts N = k+m+2 worker processes
// (bench/_snapshot-worker.ts: a libp2p PeerNet, membership and a snapshot service each,
// configured as `zeromesh start` configures them) which form a view; then
//   snapshot.procs.steps     (first size only) step time of a CPU AdamW-like loop in the owner
//                            process with a capture after every step / every 10, vs none
//   snapshot.procs.capture   the owner's synchronous copy of its state
//   snapshot.procs.place     capture + checksum + encode + push of k+m fragments to their holders
//   snapshot.procs.baseline  the same bytes from ONE donor over ONE stream into one buffer, plus
//                            xxh64 (what a replica fetch from one peer costs: hivemind, torchft),
//                            over a libp2p stream (TLS + yamux) and over the bulk channel (native
//                            TLS 1.3-PSK, the transport snapshot fragments use, as in `zeromesh start`)
//   snapshot.procs.recover   the owner is SIGKILLed; from the kill until the spare (the member
//                            holding no fragment) sees a view without it (detection: phi-accrual
//                            + Paxos view change), then svc.recover (k fetches in parallel from
//                            the holders, decode, verify); then the holder of data fragment 0 is
//                            SIGKILLed and the spare recovers again (a parity fragment decoded);
//                            then the holder of fragment 1 is SIGSTOPped (its connections stay
//                            open, so only phi-accrual finds it) and the spare recovers again.
//                            A SIGKILLed process's sockets are closed by the kernel, which the
//                            membership takes as a hint: that detection is the fast path.
// Env: BENCH_SNAPSHOT_PROC_MIB (default "256,1024"), BENCH_SNAPSHOT_PROC_K / _M (4, 2),
// BENCH_SNAPSHOT_PROC_HEARTBEAT_MS (500, the `zeromesh start` default), _OWNER_RANK (1: the
// view's rank 0 leads the membership, so by default the leader survives),
// _STEP_ELEMENTS (4194304; 0 skips the step loop), _STEPS (30), _TIMEOUT_S (1200, whole bench).
// Every child is SIGKILLed on every exit path; workers also exit when their stdin closes.
import { spawn, type ChildProcess } from 'node:child_process'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { freemem, loadavg, tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import type { View } from '../mesh/index.ts'
import { placeStripe } from '../snapshot/index.ts'
import { report } from './harness.ts'

const MiB = 1024 * 1024
const env = (name: string, def: string): string => process.env[`BENCH_SNAPSHOT_PROC_${name}`] ?? def
const sizes = env('MIB', '256,1024').split(',').map(Number)
const k = Number(env('K', '4'))
const m = Number(env('M', '2'))
const N = k + m + 2
const heartbeatMs = Number(env('HEARTBEAT_MS', '500'))
const ownerRank = Number(env('OWNER_RANK', '1'))
const stepElements = Number(env('STEP_ELEMENTS', String(4 * 1024 * 1024)))
const steps = Number(env('STEPS', '30'))
const timeoutS = Number(env('TIMEOUT_S', '1200'))
const GOAL_S = 10
const debug = env('DEBUG', '') !== ''
const workerPath = fileURLToPath(new URL('./_snapshot-worker.ts', import.meta.url))

// ---- children: every one is killed on every exit path ----
const children = new Set<ChildProcess>()
const killAll = (): void => {
  for (const c of children) {
    if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL')
  }
}
process.on('exit', killAll)
for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
  process.once(sig, () => {
    killAll()
    process.exit(128 + (sig === 'SIGINT' ? 2 : sig === 'SIGTERM' ? 15 : 1))
  })
}
const overall = setTimeout(() => {
  process.stderr.write(`snapshot-procs: overall timeout of ${timeoutS} s reached; killing ${children.size} worker(s)\n`)
  killAll()
  process.exit(1)
}, timeoutS * 1000)

type Ev = Record<string, unknown> & { ev: string; worker: number; at: number }
interface Worker {
  index: number
  child: ChildProcess
  events: Ev[]
  waiters: Array<{ pred: (e: Ev) => boolean; resolve: (e: Ev) => void; reject: (err: Error) => void }>
  failed: Error | undefined
  /** Set when the bench kills it on purpose. */
  killed: boolean
  id: string
  exited: Promise<void>
  /** The newest view this worker reported. */
  lastView: View | undefined
}

const fail = (w: Worker, err: Error): void => {
  w.failed ??= err
  for (const x of w.waiters.splice(0)) x.reject(err)
}

function startWorker(index: number, secret: string, dir: string, bootstrap?: string): Worker {
  const child = spawn(
    process.execPath,
    [
      workerPath,
      String(index),
      String(N),
      secret,
      join(dir, `w${index}`),
      String(k),
      String(m),
      String(heartbeatMs),
      ...(bootstrap === undefined ? [] : [bootstrap])
    ],
    { stdio: ['pipe', 'pipe', 'inherit'] }
  )
  children.add(child)
  const w: Worker = {
    index,
    child,
    events: [],
    waiters: [],
    failed: undefined,
    killed: false,
    id: '',
    lastView: undefined,
    exited: undefined as unknown as Promise<void>
  }
  w.exited = new Promise<void>(resolve =>
    child.once('exit', (code, signal) => {
      children.delete(child)
      if (!w.killed) {
        process.stderr.write(`snapshot-procs: worker ${index} exited unexpectedly (code ${code}, signal ${signal})\n`)
        fail(w, new Error(`worker ${index} exited (code ${code}, signal ${signal})`))
      }
      resolve()
    })
  )
  let buf = ''
  child.stdout!.on('data', (d: Buffer) => {
    buf += d.toString()
    const lines = buf.split('\n')
    buf = lines.pop()!
    for (const line of lines) {
      if (!line.startsWith('{')) continue
      const e = JSON.parse(line) as Ev
      if (e.ev === 'view') w.lastView = { epoch: Number(e['epoch']), members: e['members'] as View['members'] }
      if (debug) process.stderr.write(`[w${index}] ${line.slice(0, 300)}\n`)
      if (e.ev === 'error') {
        fail(w, new Error(`worker ${index}: ${String(e['message'])}`))
        continue
      }
      const i = w.waiters.findIndex(x => x.pred(e))
      if (i >= 0) w.waiters.splice(i, 1)[0]!.resolve(e)
      else w.events.push(e)
    }
  })
  child.stdin!.on('error', () => {}) // a killed worker's closed pipe
  return w
}

/** The first event (already received or to come) matching `pred`, consumed; rejects after `ms`. */
function waitEvent(w: Worker, what: string, ms: number, pred: (e: Ev) => boolean): Promise<Ev> {
  const i = w.events.findIndex(pred)
  if (i >= 0) return Promise.resolve(w.events.splice(i, 1)[0]!)
  if (w.failed !== undefined) return Promise.reject(w.failed)
  return new Promise<Ev>((resolve, reject) => {
    const timer = setTimeout(() => {
      const j = w.waiters.indexOf(entry)
      if (j >= 0) w.waiters.splice(j, 1)
      reject(new Error(`timed out after ${ms} ms waiting for ${what} from worker ${w.index}`))
    }, ms)
    const entry = {
      pred,
      resolve: (e: Ev) => {
        clearTimeout(timer)
        resolve(e)
      },
      reject: (err: Error) => {
        clearTimeout(timer)
        reject(err)
      }
    }
    w.waiters.push(entry)
  })
}

const send = (w: Worker, cmd: Record<string, unknown>): void => {
  w.child.stdin!.write(JSON.stringify(cmd) + '\n')
}

const load = (): number[] => loadavg().map(x => Number(x.toFixed(2)))
const r4 = (x: number): number => Number(x.toPrecision(4))

async function runSize(mib: number, withSteps: boolean): Promise<void> {
  const bytes = mib * MiB
  const dir = mkdtempSync(join(tmpdir(), 'zm-sp-'))
  const secret = join(dir, 'secret')
  writeFileSync(secret, 'a snapshot benchmark secret of enough length')
  const workers: Worker[] = []
  try {
    const t0 = performance.now()
    workers.push(startWorker(0, secret, dir))
    const first = await waitEvent(workers[0]!, 'ready', 60_000, e => e.ev === 'ready')
    workers[0]!.id = String(first['id'])
    for (let i = 1; i < N; i++) workers.push(startWorker(i, secret, dir, String(first['addr'])))
    for (const w of workers.slice(1)) w.id = String((await waitEvent(w, 'ready', 60_000, e => e.ev === 'ready'))['id'])
    // Genesis: every worker installs a view of all N.
    const views = await Promise.all(
      workers.map(w => waitEvent(w, 'a view of all workers', 60_000, e => e.ev === 'view' && (e['members'] as unknown[]).length === N))
    )
    const view: View = { epoch: Number(views[0]!['epoch']), members: views[0]!['members'] as View['members'] }
    const byId = new Map(workers.map(w => [w.id, w]))
    const owner = byId.get(view.members[ownerRank]!.id)!
    const planned = placeStripe(view, ownerRank, k, m)
    let spare = workers.find(w => w !== owner && !planned.includes(w.id))!
    const formS = (performance.now() - t0) / 1000
    process.stderr.write(
      `snapshot-procs ${mib} MiB: ${N} workers in view ${view.epoch} after ${formS.toFixed(1)} s; owner worker ${owner.index} (rank ${ownerRank}), planned spare worker ${spare.index}, load ${load().join(' ')}, free ${(freemem() / 2 ** 30).toFixed(1)} GiB\n`
    )
    const common = { k, m, processes: N, heartbeatMs }

    if (withSteps && stepElements > 0) {
      send(owner, { cmd: 'steps', elements: stepElements, steps })
      const s = await waitEvent(owner, 'steps', 600_000, e => e.ev === 'steps')
      const base = Number(s['baseSecondsPerStep'])
      for (const [every, key] of [
        [1, 'every1SecondsPerStep'],
        [10, 'every10SecondsPerStep']
      ] as const) {
        const x = Number(s[key])
        process.stdout.write(
          JSON.stringify({
            bench: 'snapshot.procs.steps',
            impl: `capture every ${every} step(s), libp2p placement to ${k + m} holder processes`,
            ...common,
            stateBytes: s['stateBytes'],
            steps,
            baselineSecondsPerStep: r4(base),
            secondsPerStep: r4(x),
            overhead: Number((x / base - 1).toPrecision(3)),
            load: load()
          }) + '\n'
        )
      }
    }

    const statsAll = (): Promise<Ev[]> =>
      Promise.all(
        workers.map(w => {
          send(w, { cmd: 'stats' })
          return waitEvent(w, 'stats', 60_000, e => e.ev === 'stats')
        })
      )
    const heldBefore = (await statsAll()).reduce((a, s) => a + Number(s['heldBytes']), 0)
    // Capture and place a state of `bytes`, at a step above any the step loop reached.
    const version = 1_000_000
    send(owner, { cmd: 'capture', bytes, step: version })
    const placed = await waitEvent(owner, 'placed', 600_000, e => e.ev === 'placed')
    const stateB = Number(placed['stateBytes'])
    // A view change during placement (the owner evicted while its event loop was blocked, then
    // re-admitted) re-ranks the members: the holders are the placed manifest's.
    const holders = placed['holders'] as string[]
    const viewChanged = Number(placed['epoch']) !== view.epoch
    spare = workers.find(w => w !== owner && !holders.includes(w.id))!
    report({
      bench: 'snapshot.procs.capture',
      impl: 'memcpy into buffer (owner process)',
      ...common,
      bytes: stateB,
      seconds: Number(placed['captureMs']) / 1000
    })
    report({
      bench: 'snapshot.procs.place',
      impl: `capture + checksum + RS encode + push to ${k + m} holder processes (bulk channel, native TLS 1.3-PSK)`,
      ...common,
      bytes: stateB,
      seconds: Number(placed['placeMs']) / 1000,
      attempts: placed['attempts'],
      failures: placed['failures'],
      placedUnderEpoch: placed['epoch'],
      genesisEpoch: view.epoch,
      viewChanged,
      ownerLongestStallMs: placed['maxLagMs'],
      detectionBoundMs: placed['detectionBoundMs'],
      load: load()
    })

    // The spare holds no fragment: it must fetch all k over the network.
    send(spare, { cmd: 'arm', owner: owner.id, victim: owner.id, bytes: stateB, version, tag: 'owner' })
    const armed = await waitEvent(spare, 'armed', 60_000, e => e.ev === 'armed')
    if (Number(armed['manifests']) === 0) process.stderr.write('snapshot-procs: the spare has no manifest of the owner; recovery will LIST\n')
    if (Number(armed['held']) !== 0) throw new Error('the spare holds fragments; pick another owner rank')
    const stats = await statsAll()
    // Fragments of this snapshot only (the step loop's snapshots are held too).
    const held = stats.reduce((a, s) => a + Number(s['heldBytes']), 0) - heldBefore
    const rssGiB = stats.reduce((a, s) => a + Number(s['rss']), 0) / 2 ** 30
    process.stdout.write(
      JSON.stringify({
        bench: 'snapshot.procs.memory',
        ...common,
        bytes: stateB,
        heldBytes: held,
        overhead: r4(held / stateB),
        rssGiBAllProcesses: r4(rssGiB),
        detectionBoundMs: stats.map(s => s['detectionBoundMs']),
        epochs: stats.map(s => s['epoch'])
      }) + '\n'
    )

    // Baselines: the same bytes from one donor (a holder, alive throughout) over one stream.
    const donor = byId.get(holders[1]!)!
    const baselines: Record<string, number> = {}
    for (const via of ['libp2p', 'bulk'] as const) {
      send(spare, { cmd: 'baseline', donor: donor.id, bytes: stateB, via })
      const b = await waitEvent(spare, `baseline ${via}`, 600_000, e => e.ev === 'baseline')
      const s = (Number(b['transferMs']) + Number(b['checksumMs'])) / 1000
      baselines[via] = s
      report({
        bench: 'snapshot.procs.baseline',
        impl:
          via === 'libp2p'
            ? 'one donor, one libp2p stream (TLS + yamux) into one buffer + xxh64'
            : 'one donor, one bulk-channel stream (native TLS 1.3-PSK) into one buffer + xxh64',
        ...common,
        bytes: stateB,
        seconds: s,
        transferMs: Math.round(Number(b['transferMs'])),
        checksumMs: Math.round(Number(b['checksumMs']))
      })
    }
    const baseline = { impl: 'one donor, one libp2p stream', seconds: baselines['libp2p']! }

    // Kill the owner; the spare recovers on the first view without it.
    const kill = async (
      victim: Worker,
      tag: string,
      signal: 'SIGKILL' | 'SIGSTOP'
    ): Promise<{
      leader: string | undefined
      epochAtKill: number | undefined
      detectionMs: number
      firstViewMs: number
      recoverMs: number
      totalMs: number
      ev: Ev
      loadAtKill: number[]
    }> => {
      const loadAtKill = load()
      const leader = spare.lastView?.members[0]?.id
      const epochAtKill = spare.lastView?.epoch
      const tKill = Date.now()
      victim.killed = true
      victim.child.kill(signal)
      const ev = await waitEvent(spare, `recovery (${tag})`, 600_000, e => e.ev === 'recovered' && e['tag'] === tag)
      if (ev['ok'] !== true) throw new Error(`recovered state does not match (${tag}): ${JSON.stringify(ev)}`)
      // When the first survivor (usually the leader) saw the view without the victim.
      const survivors = workers.filter(w => !w.killed)
      const firsts = await Promise.all(
        survivors.map(w =>
          waitEvent(
            w,
            'a view without the victim',
            60_000,
            e => e.ev === 'view' && Number(e['epoch']) > (epochAtKill ?? 0) && !(e['members'] as View['members']).some(x => x.id === victim.id)
          ).then(
            e => e.at,
            () => Infinity
          )
        )
      )
      const viewAt = Number(ev['viewAt'])
      return {
        leader,
        epochAtKill,
        detectionMs: viewAt - tKill,
        firstViewMs: Math.min(...firsts) - tKill,
        recoverMs: Number(ev['recoverMs']),
        totalMs: Number(ev.at) - tKill,
        ev,
        loadAtKill
      }
    }
    const scenarios: Array<{ tag: string; victim: Worker; signal: 'SIGKILL' | 'SIGSTOP'; what: string }> = [
      { tag: 'owner', victim: owner, signal: 'SIGKILL', what: `owner SIGKILLed (all ${k} data fragments fetched, no decode work)` },
      {
        tag: 'holder0',
        victim: byId.get(holders[0]!)!,
        signal: 'SIGKILL',
        what: 'then the holder of data fragment 0 SIGKILLed (a parity fragment fetched and decoded)'
      }
    ]
    // A stopped process keeps its TCP connections open, as a dead machine or a partition does:
    // only the phi-accrual detector can find it, and its fetch stalls until k others arrive.
    if (m >= 2)
      scenarios.push({
        tag: 'holder1',
        victim: byId.get(holders[1]!)!,
        signal: 'SIGSTOP',
        what: 'then the holder of data fragment 1 SIGSTOPped (silent: phi-accrual detection; its fetch stalls, parity decoded)'
      })
    for (const sc of scenarios) {
      if (sc.tag !== 'owner') {
        send(spare, { cmd: 'arm', owner: owner.id, victim: sc.victim.id, bytes: stateB, version, tag: sc.tag })
        await waitEvent(spare, 'armed', 60_000, e => e.ev === 'armed')
      }
      const r = await kill(sc.victim, sc.tag, sc.signal)
      const used = r.ev['used'] as number[]
      if ((sc.tag === 'holder0' && used.includes(0)) || (sc.tag === 'holder1' && used.includes(1)))
        throw new Error(`a lost fragment was used: ${JSON.stringify(used)}`)
      const detail = {
        ...common,
        signal: sc.signal,
        victimWasLeader: sc.victim.id === r.leader,
        epochAtKill: r.epochAtKill,
        recoveredUnderEpoch: r.ev['epoch'],
        used,
        missing: r.ev['missing'],
        source: r.ev['source'],
        spareLongestStallMs: r.ev['maxLagMs'],
        spareStillMember: r.ev['memberAfter'],
        loadAtKill: r.loadAtKill
      }
      report(
        {
          bench: 'snapshot.procs.recover.transfer',
          impl: `${sc.what}: fetch k in parallel + decode + verify`,
          ...detail,
          bytes: stateB,
          seconds: r.recoverMs / 1000
        },
        baseline
      )
      report({
        bench: 'snapshot.procs.recover.total',
        impl: `${sc.what}: kill -> view change -> recovered`,
        ...detail,
        bytes: stateB,
        seconds: r.totalMs / 1000,
        detectionMs: r.detectionMs,
        firstSurvivorViewMs: r.firstViewMs,
        transferDecodeMs: Math.round(r.recoverMs),
        // What a single-donor design would take after the same detection.
        singleDonorTotalMs: Math.round(r.detectionMs + baselines['libp2p']! * 1000),
        goalSeconds: GOAL_S,
        goalMet: r.totalMs / 1000 <= GOAL_S
      })
    }
  } finally {
    for (const w of workers) {
      w.killed = true
      if (w.child.exitCode === null && w.child.signalCode === null) w.child.kill('SIGKILL')
    }
    await Promise.all(workers.map(w => w.exited))
    rmSync(dir, { recursive: true, force: true })
  }
}

let failed = 0
try {
  process.stderr.write(`snapshot-procs: k=${k} m=${m}, ${N} processes, heartbeat ${heartbeatMs} ms, sizes ${sizes.join(',')} MiB; load ${load().join(' ')}\n`)
  for (const [i, mib] of sizes.entries()) {
    try {
      await runSize(mib, i === 0)
    } catch (err) {
      // One size failing (e.g. the owner evicted while it encodes) must not hide the others.
      failed++
      process.stdout.write(
        JSON.stringify({
          bench: 'snapshot.procs.error',
          k,
          m,
          processes: N,
          heartbeatMs,
          bytes: mib * MiB,
          error: (err as Error).message.slice(0, 2000),
          load: load()
        }) + '\n'
      )
    }
  }
} finally {
  clearTimeout(overall)
  killAll()
}
if (failed > 0) process.exitCode = 1
