// Edge nodes behind NAT (test/helpers/zones/nat.ts): real `zeromesh start` nodes in home
// namespaces behind nftables masquerade routers, bootstrapped from a public host. Where this
// process is not root or the kernel refuses namespaces, the tests register as skipped with why.
import test, { type ExecutionContext } from 'ava'
import { chmodSync, copyFileSync, existsSync, mkdirSync, mkdtempSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { IDENTITY_FILE, type Connectivity } from '../../mesh/index.ts'
import { fetchStatus, type NodeStatus } from '../../node/index.ts'
import {
  createNat,
  routerRules,
  startZoneNodes,
  trainFlags,
  zonesUnavailable,
  type NatKind,
  type StampedEvent,
  type ZoneNodes
} from '../helpers/zones/index.ts'
import { findNft } from '../helpers/zones/commands.ts'
import { namespaceTest } from '../helpers/zones/exclusive.ts'

const reason = (await zonesUnavailable()) ?? nftMissing()
function nftMissing(): string | undefined {
  try {
    findNft()
    return undefined
  } catch (err) {
    return (err as Error).message
  }
}

/** A namespace test of this file (helpers/zones/exclusive.ts). */
const natTest = (title: string, fn: (t: ExecutionContext) => Promise<void>, flaky?: string): void => namespaceTest(reason, title, fn, flaky)

test('a home router drops what the internet sends unasked and masquerades, port-keeping (cone) or random (symmetric)', t => {
  t.regex(routerRules('cone'), /oifname "wan0" masquerade\n/)
  t.regex(routerRules('symmetric'), /masquerade random/)
  for (const k of ['cone', 'symmetric'] as const) {
    t.regex(routerRules(k), /chain forward \{\n.*policy drop;\n\s*ct state established,related accept/)
  }
})

// The kill comes once every rank has placed snapshots for a while: early on, the first
// placements to a peer in the other home wait for their hole punches. (Placements that lag by
// different amounts once left no step common to every rank; kept anchor captures now make one,
// node/train/persist.ts.)
const STEPS = 14
const KILL_AT = 8
// As the zone harness's cut scenarios (harness.test.ts): beside the whole suite on 2 cores, 300 ms
// heartbeats made the detector suspect live nodes too (views 3 and 4 after one kill, and ranks
// that could not agree on a recovery point: docs/LIMITS.md); a kill is still seen in ~3 s.
const HEARTBEAT_MS = 1000

/** What one run saw: its events, each node's status (polled while it ran; the one with the most peers), and the done events. */
interface NatRun {
  events: readonly StampedEvent[]
  status: Map<string, Connectivity>
  done: Array<{ node: string; evalLoss: number | null | undefined }>
  killed?: string
  /** The nodes' identity keys (<dir>/<node>/identity.key), kept for a run that must have the same peer ids. */
  identities: string
}

/**
 * A public host and two homes (`nats`, `perHome` hosts each); one node per host; world size
 * is every node but one (the spare). With `kill`, a rank in the second home is SIGKILLed at
 * step KILL_AT.
 */
async function natRun(
  t: ExecutionContext,
  o: { nats: [NatKind, NatKind]; perHome: number; kill: boolean; snapshot?: string; identities?: string; steps?: number }
): Promise<NatRun> {
  const topo = await createNat({
    publicHosts: 1,
    homes: o.nats.map(nat => ({ nat, hosts: o.perHome }))
  })
  let nodes: ZoneNodes | undefined
  const status = new Map<string, Connectivity>()
  let ok = false
  // The same peer ids give the same view order, so the same node of each home holds each rank
  // (ranks carry their zone and host labels, which order the reduction).
  const dir = mkdtempSync(join(tmpdir(), 'zeromesh-nat-'))
  const identities = mkdtempSync(join(tmpdir(), 'zeromesh-nat-ids-'))
  for (const h of topo.hosts) {
    const from = o.identities === undefined ? undefined : join(o.identities, h.name, IDENTITY_FILE)
    if (from === undefined || !existsSync(from)) continue
    mkdirSync(join(dir, h.name), { recursive: true, mode: 0o700 })
    copyFileSync(from, join(dir, h.name, IDENTITY_FILE))
    chmodSync(join(dir, h.name, IDENTITY_FILE), 0o600)
  }
  try {
    const world = 2 * o.perHome
    nodes = await startZoneNodes({
      zones: topo,
      dir,
      heartbeatMs: HEARTBEAT_MS,
      args: trainFlags({
        worldSize: world,
        steps: o.steps ?? STEPS,
        model: 'mini',
        batch: 2,
        seq: 32,
        ...(o.snapshot === undefined ? {} : { snapshot: o.snapshot })
      })
    })
    const n = nodes
    let polled = 0
    const poll = (): void => {
      if (n.now() - polled < 1000) return
      polled = n.now()
      for (const x of n.nodes) {
        fetchStatus(join(n.dir, x.name), 1000).then(
          s => {
            // Keep the fullest picture: as ranks finish, their peers leave and lists shrink.
            const net = (s as NodeStatus).network
            const had = status.get(x.name)
            if (net === undefined) return
            // Punch counters only grow: take the newest.
            status.set(
              x.name,
              had === undefined || net.peers.length >= had.peers.length
                ? net
                : { ...had, punches: net.punches, relays: had.relays.length > 0 ? had.relays : net.relays }
            )
          },
          () => {}
        )
      }
    }
    const committed = (): number => Math.max(0, ...n.events.filter(e => e.event.type === 'step').map(e => (e.event as { step: number }).step))
    let killed: string | undefined
    if (o.kill) {
      await n.until(`step ${KILL_AT}`, 120_000, () => {
        poll()
        return committed() >= KILL_AT ? true : undefined
      })
      const victim = n
        .inZone('home1')
        .find(x =>
          x.events.some(e => e.event.type === 'view' && (e.event as { rank?: number }).rank !== undefined && (e.event as { rank: number }).rank < world)
        )
      if (victim === undefined) throw new Error('no rank in home1 to kill')
      killed = victim.name
      n.kill(victim)
      t.log(`killed ${victim.name} at step ${committed()}`)
    }
    const ranks = (): number => n.events.filter(e => e.event.type === 'done').length
    await n.until('every rank to finish', 240_000, () => {
      poll()
      return ranks() >= world ? true : undefined
    })
    const done = n.events.filter(e => e.event.type === 'done').map(e => ({ node: e.node, evalLoss: (e.event as { evalLoss?: number | null }).evalLoss }))
    for (const h of topo.hosts) {
      mkdirSync(join(identities, h.name))
      copyFileSync(join(dir, h.name, IDENTITY_FILE), join(identities, h.name, IDENTITY_FILE))
    }
    ok = true
    return { events: [...n.events], status, done, identities, ...(killed === undefined ? {} : { killed }) }
  } finally {
    const keep = !ok || process.env['ZEROMESH_NAT_KEEP'] === '1'
    if (keep) t.log(`logs kept in ${dir}`)
    await nodes?.stop({ keep })
    await topo.stop()
  }
}

let clean: Promise<NatRun> | undefined
const cleanRun = (t: ExecutionContext): Promise<NatRun> => (clean ??= natRun(t, { nats: ['cone', 'cone'], perHome: 2, kill: false }))

natTest('four nodes behind two NATs and a public node train: the homes find they are behind NAT, hold a relay slot, and punch direct bulk paths', async t => {
  t.timeout(300_000)
  const r = await cleanRun(t)
  for (const [name, s] of r.status)
    t.log(
      `${name}: ${s.reach}, punches ${s.punches.ok} ok / ${s.punches.failed} failed, relays ${s.relays.length}, served ${s.relayServing}, bulk ${s.peers.map(p => `${p.link}/${p.bulk}`).join(' ')}`
    )
  t.is(r.done.length, 4)
  t.is(new Set(r.done.map(d => d.evalLoss)).size, 1, 'every rank scored the same final weights')
  const pub = r.status.get('public-0')
  t.is(pub?.reach, 'public')
  t.true((pub?.relayServing ?? 0) >= 1, `the public node serves reservations: ${JSON.stringify(pub)}`)
  for (const name of ['home0-0', 'home0-1', 'home1-0', 'home1-1']) {
    const s = r.status.get(name)
    t.is(s?.reach, 'nat', `${name}: ${JSON.stringify(s)}`)
    t.true(s?.externalIp === '45.77.0.1' || s?.externalIp === '45.77.0.2', `${name} learned its router's address`)
    t.true((s?.relays.length ?? 0) >= 1, `${name} holds a relay slot: ${JSON.stringify(s)}`)
  }
  const punched = [...r.status.values()].reduce((a, s) => a + s.punches.ok, 0)
  t.true(punched >= 1, 'bulk connections were hole-punched')
  t.true(
    [...r.status.values()].every(s => s.peers.every(p => p.bulk !== 'libp2p')),
    'no bulk path fell back to libp2p streams behind cone NATs'
  )
})

natTest('a NATed rank is SIGKILLed: the spare replaces it from the snapshots and the final weights score exactly as without the kill', async t => {
  t.timeout(420_000)
  const base = await cleanRun(t)
  const hurt = await natRun(t, { nats: ['cone', 'cone'], perHome: 2, kill: true, identities: base.identities })
  t.truthy(hurt.killed)
  t.true(
    hurt.events.some(e => e.event.type === 'recovery'),
    'a recovery ran'
  )
  t.is(hurt.done.length, 4, `four ranks finished: ${hurt.done.map(d => d.node).join(', ')}`)
  const spare = ['public-0', 'home0-0', 'home0-1', 'home1-0', 'home1-1'].find(x => !base.done.some(d => d.node === x))
  t.true(
    hurt.done.some(d => d.node === spare),
    `the spare (${spare}) took the killed rank`
  )
  // What to read when the losses differ: each run's ranks (first view), recoveries and losses.
  for (const [name, run] of [
    ['fault-free', base],
    ['killed', hurt]
  ] as const) {
    const views = run.events.filter(e => e.event.type === 'view').map(e => `${e.node}:${JSON.stringify(e.event)}`)
    const rec = run.events.filter(e => e.event.type === 'recovery').map(e => `${e.node}:${JSON.stringify(e.event)}`)
    t.log(`${name}: views ${views.join(' ')}; recoveries ${rec.join(' ')}; done ${run.done.map(d => `${d.node}=${d.evalLoss}`).join(' ')}`)
  }
  const want = base.done[0]?.evalLoss
  t.true(typeof want === 'number')
  for (const d of hurt.done) t.is(d.evalLoss, want, `${d.node}: held-out loss of the final weights`)
})

natTest('a home behind a symmetric NAT cannot be hole-punched: it still trains, its bulk bytes to the other home ride libp2p through the relay', async t => {
  t.timeout(300_000)
  // A punch through the symmetric NAT fails only at its deadline (MESH_LIMITS.punch: 8 s of
  // connect attempts plus signalling), and a node's status is read only while it runs: 14
  // steps (~4 s unloaded) sometimes ended before the failure was counted. 60 steps last 15 s or more.
  const r = await natRun(t, { nats: ['cone', 'symmetric'], perHome: 1, kill: false, snapshot: '1+1', steps: 60 })
  t.is(r.done.length, 2)
  t.is(new Set(r.done.map(d => d.evalLoss)).size, 1)
  const sym = r.status.get('home1-0')
  t.is(sym?.reach, 'nat')
  t.is(sym?.punches.ok, 0, `no punch through a symmetric NAT: ${JSON.stringify(sym)}`)
  const cone = r.status.get('home0-0')
  const toSym = cone?.peers.find(p => r.status.get('home1-0') !== undefined && p.link === 'relayed')
  t.truthy(toSym, `the cone home reaches the symmetric one through the relay: ${JSON.stringify(cone)}`)
  t.true(
    [...r.status.values()].some(s => s.punches.failed >= 1),
    'a punch was tried and failed'
  )
})
