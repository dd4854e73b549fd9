import { Packr } from 'msgpackr'
import { silentLogger } from '../core/index.ts'
import {
  createMembership,
  createMembershipShared,
  encodeHeartbeat,
  type Membership,
  type AcceptorRecord,
  type MembershipDurableState,
  type MembershipInit,
  type PeerNet,
  type View
} from '../mesh/index.ts'
import { Simulation, type NodeClock } from './engine.ts'
import { createSimNetwork, DEFAULT_TOPOLOGY, type SimNetwork, type Topology } from './net.ts'

/** One simulated node: its network handle and its current membership incarnation. */
export interface WorldNode {
  id: string
  zone: string
  host: string
  net: PeerNet
  handle: { net: PeerNet; readonly clock: NodeClock }
  m: Membership | undefined
  state: 'up' | 'down' | 'paused'
  /** What the node had persisted when it last went down (restart with state reads it). */
  durable: MembershipDurableState | undefined
  /**
   * Its acceptor record as its data dir holds it: written before every answer, read by every
   * restart (a restart without state keeps its data dir, as `zeromesh start` does).
   */
  record: AcceptorRecord | undefined
}

/** One epoch's member list as ids and their comma-joined key (one object per distinct list per epoch). */
interface MemberList {
  epoch: number
  ids: string[]
  key: string
}

/** Acceptances a view had when installed (`yes` of `of` possible acceptors) and how many it needed. */
interface Quorum {
  yes: number
  of: string
  need: number
}

/** A view installation seen anywhere, for reports and timelines. */
export interface ViewEvent {
  at: number
  node: string
  epoch: number
  members: string[]
}

export interface WorldInit {
  seed: number
  nodes: number
  zones?: number
  topology?: Topology
  membership?: MembershipInit
  keepTrace?: boolean
  /**
   * Deliberately unsafe, only for tests that prove the safety checker can fail: a restart
   * without state also loses the node's acceptor record (a data dir wiped but the identity kept).
   */
  loseAcceptorRecords?: boolean
}

/**
 * The membership workload on SimNet that random runs and scenarios share: it boots the real
 * membership code on every node, restarts crashed nodes (with fresh state, or with the state
 * they had persisted), and checks safety on every view installed:
 * - agreement: two different views with one epoch is a violation;
 * - quorum: a view of epoch e may be installed only once a majority of the members of view
 *   e-1 accepted it as acceptors, and the genesis view only once at least `expect` nodes
 *   accepted it; a view that a minority installed on its own is a violation.
 *
 * Why genesis is not "every member of the view": the acceptors of a genesis ballot are the
 * member list its proposer sent with the prepare, and every one of them must accept. When a
 * later ballot's promises report a genesis accepted under an earlier ballot, Paxos makes it
 * propose that view again, whose list can name a node the later ballot left out (one that
 * stopped answering, say paused while the first accept was on its way). That view is then
 * chosen without that member's acceptance, and safely: any two ballots' lists have `expect`
 * nodes each, more than half of those started, so they share an acceptor and no second first
 * view can be chosen. The checker does not see ballots, so it checks the count they imply.
 */
export class MembershipWorld {
  readonly sim: Simulation
  readonly net: SimNetwork
  readonly nodes: WorldNode[] = []
  readonly views: ViewEvent[] = []
  readonly violations: string[] = []
  private readonly installed = new Map<number, string>()
  /** Acceptors that accepted each (epoch, member list), keyed by that list's entry in `lists`. */
  private readonly acceptedBy = new Map<MemberList, Set<string>>()
  private readonly init: MembershipInit
  private incarnations = 0
  private readonly loseRecords: boolean
  // Member lists seen per epoch, with their joined key: a view change at 1000 nodes installs
  // and accepts the same list 1000 times, and each must not cost an O(N) join and split.
  private readonly lists = new Map<number, MemberList[]>()
  private readonly listOf = new WeakMap<View | View['members'], MemberList>()
  // (epoch, member list) pairs whose quorum check has passed (more acceptances can only keep it passed).
  private readonly quorate = new Set<MemberList>()
  private readonly acceptorLists = new Map<number, string[]>()
  // One logger that writes nothing for every node (making a pino logger per boot was over a
  // fifth of the time it took to start 1000 nodes).
  private readonly log = silentLogger()
  // One set of membership caches for every node of this world (codecs, decoded messages,
  // frozen member lists): the nodes share gossip buffers, so each is decoded once, not N times.
  private readonly shared = createMembershipShared()

  constructor(init: WorldInit) {
    this.sim = new Simulation({ seed: init.seed, keepTrace: init.keepTrace })
    this.net = createSimNetwork(this.sim, init.topology ?? DEFAULT_TOPOLOGY)
    this.init = { heartbeatMs: 100, expect: init.nodes, ...init.membership }
    this.loseRecords = init.loseAcceptorRecords === true
    const zones = Math.max(1, init.zones ?? Math.min(3, Math.floor(init.nodes / 3)))
    for (let i = 0; i < init.nodes; i++) {
      const id = `n${String(i).padStart(3, '0')}`
      const zone = `z${i % zones}`
      const host = `h${i}`
      const handle = this.net.createPeer({ id, labels: { zone, host } })
      this.nodes.push({ id, zone, host, net: handle.net, handle, m: undefined, state: 'down', durable: undefined, record: undefined })
    }
  }

  get ids(): string[] {
    return this.nodes.map(n => n.id)
  }

  node(id: string): WorldNode {
    const n = this.nodes.find(x => x.id === id)
    if (n === undefined) throw new Error(`no node ${id}`)
    return n
  }

  /**
   * Starts a node's PeerNet and membership: fresh, or (`keepState`) with the view and acceptor
   * state it had persisted when it went down, as a node restarted from its data dir would.
   */
  async boot(n: WorldNode, opts: { keepState?: boolean } = {}): Promise<void> {
    const restore = opts.keepState === true ? n.durable : undefined
    this.sim.trace('boot', { node: n.id, state: restore === undefined ? 'fresh' : 'kept' })
    if (restore === undefined && this.loseRecords) n.record = undefined
    // Acceptor states and views are never mutated once made: the record keeps the reference.
    const acceptorStore = {
      load: () => n.record,
      save: (r: AcceptorRecord) => {
        n.record = r
      }
    }
    const m = createMembership(
      { ...this.init, acceptorStore, ...(restore === undefined ? {} : { restore }) },
      {
        net: n.net,
        clock: n.handle.clock,
        rng: this.sim.rng.split(`m/${n.id}/${this.incarnations++}`),
        log: this.log,
        shared: this.shared
      }
    )
    m.on('view', (v: View) => this.record(n.id, v))
    m.on('accepted', (v: View) => {
      const list = this.members(v)
      let set = this.acceptedBy.get(list)
      if (set === undefined) this.acceptedBy.set(list, (set = new Set()))
      set.add(n.id)
    })
    n.m = m
    n.state = 'up'
    await n.net.start()
    await m.start()
  }

  async bootAll(): Promise<void> {
    for (const n of this.nodes) await this.boot(n)
  }

  crash(id: string): void {
    const n = this.node(id)
    // Membership persists its durable state before every answer (write-through), so what it
    // holds at the crash is what a restart with state finds on disk.
    n.durable = n.m?.durableState() ?? n.durable
    this.net.crash(id)
    n.state = 'down'
  }

  pause(id: string): void {
    this.net.pause(id)
    this.node(id).state = 'paused'
  }

  resume(id: string): void {
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
  byzantine(id: string, forMs: number): void {
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
      const send = (topic: string, t: string, p: unknown): void => {
        void n.net.publish(topic, packr.pack({ v: 1, t, p })).catch(() => {})
      }
      void n.net
        .publish('membership/hb', encodeHeartbeat({ inc: 1, seq: ++seq, epoch: epoch + 1000, step: 0, sentAt: 0, leaving: false, paused: false }))
        .catch(() => {})
      send('membership/view', 'prepare', { epoch: epoch + 1, round: 1_000_000 + rng.int(0, 1000) })
      send('membership/view', 'nack', { epoch: epoch + 1, round: rng.int(0, 100), proposer: this.ids[0]!, promisedRound: rng.int(0, 2_000_000) })
      void n.net.publish('membership/view', rng.fill(new Uint8Array(rng.int(1, 64)))).catch(() => {})
      n.handle.clock.setTimeout(lie, hb)
    }
    lie()
  }

  /** True if every node that is up has installed one view whose members are exactly the up nodes. */
  converged(): boolean {
    const up = this.nodes.filter(n => n.state === 'up')
    const want = up.map(n => n.id).join(',')
    return up.every(n => {
      const v = n.m?.view()
      return v !== undefined && this.sortedKey(v.members) === want
    })
  }

  // A member list's ids sorted and joined, per list: the nodes of a view share its member
  // list, and sorting 1000 ids for each of 1000 nodes at every check was quadratic.
  private readonly sortedKeys = new WeakMap<View['members'], string>()
  private sortedKey(members: View['members']): string {
    let key = this.sortedKeys.get(members)
    if (key === undefined)
      this.sortedKeys.set(
        members,
        (key = members
          .map(x => x.id)
          .sort()
          .join(','))
      )
    return key
  }

  /** Highest epoch installed anywhere. */
  get maxEpoch(): number {
    return this.views.reduce((a, v) => Math.max(a, v.epoch), 0)
  }

  /** The member ids of `v` and their comma-joined key, shared by every equal list of one epoch. */
  private members(v: View): MemberList {
    const known = this.listOf.get(v) ?? this.listOf.get(v.members)
    if (known !== undefined && known.epoch === v.epoch) return known
    let seen = this.lists.get(v.epoch)
    if (seen === undefined) this.lists.set(v.epoch, (seen = []))
    let found = seen.find(l => l.ids.length === v.members.length && v.members.every((m, i) => m.id === l.ids[i]))
    if (found === undefined) {
      const ids = v.members.map(x => x.id)
      seen.push((found = { epoch: v.epoch, ids, key: ids.join(',') }))
    }
    this.listOf.set(v, found)
    this.listOf.set(v.members, found)
    return found
  }

  private record(node: string, v: View): void {
    const list = this.members(v)
    const { ids: members, key } = list
    this.sim.trace('view', { node, epoch: v.epoch, members: key })
    this.views.push({ at: this.sim.now(), node, epoch: v.epoch, members })
    const prev = this.installed.get(v.epoch)
    if (prev === undefined) this.installed.set(v.epoch, key)
    else if (prev !== key) this.violations.push(`epoch ${v.epoch}: [${prev}] and [${key}] (seed ${this.sim.seed})`)
    if (this.quorate.has(list)) return
    const accepted = this.acceptedBy.get(list)
    const q = v.epoch === 1 ? this.genesisQuorum(accepted) : this.quorum(v.epoch, accepted)
    if (q.yes < q.need) {
      this.violations.push(`epoch ${v.epoch} installed at ${node} with ${q.yes} of ${q.of} acceptors, needs ${q.need} (seed ${this.sim.seed})`)
    } else {
      this.quorate.add(list)
    }
  }

  /** Epoch e > 1: a majority of the members of view e-1 (unknown if no node installed e-1: then one acceptance short). */
  private quorum(epoch: number, accepted: ReadonlySet<string> | undefined): Quorum {
    const acceptors = this.acceptorsOf(epoch)
    if (acceptors === undefined) return { yes: 0, of: '?', need: 1 }
    const yes = acceptors.filter(a => accepted?.has(a) === true).length
    return { yes, of: String(acceptors.length), need: Math.floor(acceptors.length / 2) + 1 }
  }

  /** Genesis: `expect` nodes (see the class comment); every node without a view may be a genesis acceptor. */
  private genesisQuorum(accepted: ReadonlySet<string> | undefined): Quorum {
    return { yes: accepted?.size ?? 0, of: String(this.nodes.length), need: this.init.expect ?? 1 }
  }

  /** The acceptors of epoch e > 1: the members of the view installed for e - 1 (which never changes once installed). */
  private acceptorsOf(epoch: number): string[] | undefined {
    let list = this.acceptorLists.get(epoch)
    if (list === undefined) {
      list = this.installed.get(epoch - 1)?.split(',')
      if (list !== undefined) this.acceptorLists.set(epoch, list)
    }
    return list
  }
}
