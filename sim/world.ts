import { Packr } from 'msgpackr'
import { silentLogger } from '../core/index.ts'
import { createMembership, encodeHeartbeat, type Membership, type MembershipDurableState, type MembershipInit, type PeerNet, type View } from '../mesh/index.ts'
import { Simulation, type NodeClock } from './engine.ts'
import { createSimNetwork, DEFAULT_TOPOLOGY, type SimNetwork, type Topology } from './net.ts'

/** One simulated node: its network handle and its current membership incarnation. */
export interface WorldNode {
  id: string
  zone: string
  host: string
  net: PeerNet
  handle: { net: PeerNet, readonly clock: NodeClock }
  m: Membership | undefined
  state: 'up' | 'down' | 'paused'
  /** What the node had persisted when it last went down (restart with state reads it). */
  durable: MembershipDurableState | undefined
}

/** A view installation seen anywhere, for reports and timelines. */
export interface ViewEvent { at: number, node: string, epoch: number, members: string[] }

export interface WorldInit {
  seed: number
  nodes: number
  zones?: number
  topology?: Topology
  membership?: MembershipInit
  keepTrace?: boolean
}

/**
 * The membership workload on SimNet that random runs and scenarios share: it boots the real
 * membership code on every node, restarts crashed nodes (with fresh state, or with the state
 * they had persisted), and checks safety on every view installed:
 * - agreement: two different views with one epoch is a violation;
 * - quorum: a view of epoch e may be installed only once a majority of the members of view
 *   e-1 (every member, for the genesis view) accepted it as acceptors; a view that a minority
 *   installed on its own is a violation.
 */
export class MembershipWorld {
  readonly sim: Simulation
  readonly net: SimNetwork
  readonly nodes: WorldNode[] = []
  readonly views: ViewEvent[] = []
  readonly violations: string[] = []
  private readonly installed = new Map<number, string>()
  /** Acceptors that accepted each (epoch, member list). */
  private readonly acceptedBy = new Map<string, Set<string>>()
  private readonly init: MembershipInit
  private incarnations = 0

  constructor (init: WorldInit) {
    this.sim = new Simulation({ seed: init.seed, keepTrace: init.keepTrace })
    this.net = createSimNetwork(this.sim, init.topology ?? DEFAULT_TOPOLOGY)
    this.init = { heartbeatMs: 100, expect: init.nodes, ...init.membership }
    const zones = Math.max(1, init.zones ?? Math.min(3, Math.floor(init.nodes / 3)))
    for (let i = 0; i < init.nodes; i++) {
      const id = `n${String(i).padStart(3, '0')}`
      const zone = `z${i % zones}`
      const host = `h${i}`
      const handle = this.net.createPeer({ id, labels: { zone, host } })
      this.nodes.push({ id, zone, host, net: handle.net, handle, m: undefined, state: 'down', durable: undefined })
    }
  }

  get ids (): string[] { return this.nodes.map(n => n.id) }

  node (id: string): WorldNode {
    const n = this.nodes.find(x => x.id === id)
    if (n === undefined) throw new Error(`no node ${id}`)
    return n
  }

  /**
   * Starts a node's PeerNet and membership: fresh, or (`keepState`) with the view and acceptor
   * state it had persisted when it went down, as a node restarted from its data dir would.
   */
  async boot (n: WorldNode, opts: { keepState?: boolean } = {}): Promise<void> {
    const restore = opts.keepState === true ? n.durable : undefined
    this.sim.trace('boot', { node: n.id, state: restore === undefined ? 'fresh' : 'kept' })
    const m = createMembership({ ...this.init, ...(restore === undefined ? {} : { restore }) }, {
      net: n.net, clock: n.handle.clock, rng: this.sim.rng.split(`m/${n.id}/${this.incarnations++}`), log: silentLogger()
    })
    m.on('view', (v: View) => this.record(n.id, v))
    m.on('accepted', (v: View) => {
      const key = `${v.epoch}:${v.members.map(x => x.id).join(',')}`
      let set = this.acceptedBy.get(key)
      if (set === undefined) this.acceptedBy.set(key, set = new Set())
      set.add(n.id)
    })
    n.m = m
    n.state = 'up'
    await n.net.start()
    await m.start()
  }

  async bootAll (): Promise<void> {
    for (const n of this.nodes) await this.boot(n)
  }

  crash (id: string): void {
    const n = this.node(id)
    // Membership persists its durable state before every answer (write-through), so what it
    // holds at the crash is what a restart with state finds on disk.
    n.durable = n.m?.durableState() ?? n.durable
    this.net.crash(id)
    n.state = 'down'
  }

  pause (id: string): void {
    this.net.pause(id)
    this.node(id).state = 'paused'
  }

  resume (id: string): void {
    this.net.resume(id)
    const n = this.node(id)
    if (n.state === 'paused') n.state = 'up'
  }

  /**
   * Makes a node a byzantine sender for `forMs`: beside its honest membership it publishes, every
   * heartbeat period, well-formed lies a crash-fault protocol must survive: heartbeats of a
   * stale incarnation claiming a far-future epoch (ignored as stale), prepares with huge rounds
   * for the next epoch (acceptors then refuse the honest proposer until it outbids them), nacks
   * to others' ballots, and malformed bytes. Forged commits, and heartbeats from a future
   * incarnation (which would lock the liar's own honest heartbeats out), are outside the model:
   * members are trusted not to forge decisions or identities.
   */
  byzantine (id: string, forMs: number): void {
    const n = this.node(id)
    const packr = new Packr({ useRecords: false, mapsAsObjects: true, variableMapSize: true })
    const rng = this.sim.rng.split(`byzantine/${id}`)
    const until = this.sim.now() + forMs
    const hb = this.init.heartbeatMs ?? 500
    let seq = 0
    this.sim.trace('byzantine', { node: id, forMs })
    const lie = (): void => {
      if (n.state !== 'up' || this.sim.now() >= until) return
      const epoch = n.m?.view()?.epoch ?? 0
      const send = (topic: string, t: string, p: unknown): void => { void n.net.publish(topic, packr.pack({ v: 1, t, p })).catch(() => {}) }
      void n.net.publish('membership/hb', encodeHeartbeat({ inc: 1, seq: ++seq, epoch: epoch + 1000, step: 0, sentAt: 0, leaving: false, paused: false })).catch(() => {})
      send('membership/view', 'prepare', { epoch: epoch + 1, round: 1_000_000 + rng.int(0, 1000) })
      send('membership/view', 'nack', { epoch: epoch + 1, round: rng.int(0, 100), proposer: this.ids[0]!, promisedRound: rng.int(0, 2_000_000) })
      void n.net.publish('membership/view', rng.fill(new Uint8Array(rng.int(1, 64)))).catch(() => {})
      n.handle.clock.setTimeout(lie, hb)
    }
    lie()
  }

  /** True if every node that is up has installed one view whose members are exactly the up nodes. */
  converged (): boolean {
    const up = this.nodes.filter(n => n.state === 'up')
    const want = up.map(n => n.id).join(',')
    return up.every(n => n.m?.view()?.members.map(x => x.id).sort().join(',') === want)
  }

  /** Highest epoch installed anywhere. */
  get maxEpoch (): number {
    return this.views.reduce((a, v) => Math.max(a, v.epoch), 0)
  }

  private record (node: string, v: View): void {
    const members = v.members.map(x => x.id)
    const key = members.join(',')
    this.sim.trace('view', { node, epoch: v.epoch, members: key })
    this.views.push({ at: this.sim.now(), node, epoch: v.epoch, members })
    const prev = this.installed.get(v.epoch)
    if (prev === undefined) this.installed.set(v.epoch, key)
    else if (prev !== key) this.violations.push(`epoch ${v.epoch}: [${prev}] and [${key}] (seed ${this.sim.seed})`)
    // Quorum: acceptors of epoch e are the members of view e-1 (the genesis members for e = 1).
    const acceptors = v.epoch === 1 ? members : this.installed.get(v.epoch - 1)?.split(',')
    const accepted = this.acceptedBy.get(`${v.epoch}:${key}`)
    const yes = acceptors === undefined ? 0 : acceptors.filter(a => accepted?.has(a) === true).length
    const need = acceptors === undefined ? 1 : v.epoch === 1 ? acceptors.length : Math.floor(acceptors.length / 2) + 1
    if (yes < need) {
      this.violations.push(`epoch ${v.epoch} installed at ${node} with ${yes} of ${acceptors?.length ?? '?'} acceptors, needs ${need} (seed ${this.sim.seed})`)
    }
  }
}
