import { ManualClock, Rng, silentLogger } from '../../core/index.ts'
import {
  createMemoryNetwork,
  createMembership,
  createMembershipShared,
  type AcceptorRecord,
  type Membership,
  type MembershipInit,
  type MemoryNetwork,
  type PeerNet,
  type View
} from '../../mesh/index.ts'

export interface SimNode {
  id: string
  net: PeerNet
  m: Membership
}

/**
 * n memberships on an in-memory network under one ManualClock. Records every installed view
 * so tests can check that no epoch ever had two different views.
 */
export class Cluster {
  readonly clock = new ManualClock()
  readonly hub: MemoryNetwork = createMemoryNetwork()
  readonly nodes = new Map<string, SimNode>()
  readonly installed = new Map<number, string>()
  readonly violations: string[] = []
  /** Each node's acceptor record as its data dir holds it (a restart keeps it). */
  readonly records = new Map<string, AcceptorRecord>()
  /** Nodes whose record cannot be written (a full or read-only disk). */
  readonly failingStores = new Set<string>()
  private readonly rng: Rng
  private readonly init: MembershipInit
  private readonly nets = new Map<string, PeerNet>()
  // The memberships of one cluster share their caches, as a simulated world's do.
  private readonly shared = createMembershipShared()

  constructor(n: number, seed: number, init: MembershipInit = {}) {
    this.rng = Rng.fromSeed(seed)
    this.init = { heartbeatMs: 100, ...init }
    for (let i = 0; i < n; i++) this.add(`n${String(i).padStart(2, '0')}`)
  }

  /** Adds a node; `trains: false` labels it as one that never takes a rank. */
  add(id: string, o: { trains?: false } = {}): SimNode {
    const net = this.nets.get(id) ?? this.hub.createPeer({ id, labels: { zone: `z${this.nets.size % 3}`, host: id, ...o } })
    this.nets.set(id, net)
    const acceptorStore = {
      load: () => this.records.get(id),
      save: (r: AcceptorRecord) => {
        if (this.failingStores.has(id)) throw new Error(`no space left on ${id}'s disk`)
        this.records.set(id, r)
      }
    }
    const m = createMembership({ ...this.init, acceptorStore }, { net, clock: this.clock, rng: this.rng.split(id), log: silentLogger(), shared: this.shared })
    m.on('view', v => this.record(id, v))
    const node = { id, net, m }
    this.nodes.set(id, node)
    return node
  }

  private record(by: string, v: View): void {
    const key = v.members.map(m => m.id).join(',')
    const prev = this.installed.get(v.epoch)
    if (prev === undefined) this.installed.set(v.epoch, key)
    else if (prev !== key) this.violations.push(`epoch ${v.epoch}: ${prev} vs ${key} (installed by ${by})`)
  }

  async startAll(): Promise<void> {
    for (const n of this.nodes.values()) {
      await n.net.start()
      await n.m.start()
    }
  }

  /** Crash-stop: no goodbye. */
  kill(id: string): void {
    this.hub.kill(id)
    const n = this.nodes.get(id)!
    // The process is gone: its timers must not run either.
    void n.m.stop()
  }

  /** A fresh process on the same identity and data dir: it remembers only its acceptor record. */
  async restart(id: string): Promise<SimNode> {
    const n = this.add(id)
    await n.net.start()
    await n.m.start()
    return n
  }

  async run(ms: number): Promise<void> {
    await this.clock.advanceAsync(ms)
  }

  /** Runs until `cond` holds, in heartbeat steps; returns the virtual ms it took, or throws after `limitMs`. */
  async until(cond: () => boolean, limitMs: number, what: string): Promise<number> {
    const t0 = this.clock.monotonic()
    while (!cond()) {
      if (this.clock.monotonic() - t0 > limitMs) throw new Error(`${what} did not happen within ${limitMs} virtual ms`)
      await this.clock.advanceAsync(10)
    }
    return this.clock.monotonic() - t0
  }

  /** True if every node in `ids` has installed a view with exactly `ids` as members. */
  agree(ids: string[]): boolean {
    const want = [...ids].sort().join(',')
    return ids.every(id => {
      const v = this.nodes.get(id)!.m.view()
      return (
        v !== undefined &&
        v.members
          .map(m => m.id)
          .sort()
          .join(',') === want
      )
    })
  }
}

/** A cluster of `n` that has formed its first view and let the detectors learn the rhythm. */
export async function formed(n: number, seed: number): Promise<Cluster> {
  const c = new Cluster(n, seed, { expect: n })
  await c.startAll()
  await c.until(() => c.agree([...c.nodes.keys()]), 5000, 'formation')
  await c.run(1000)
  return c
}

/** The membership gossip topics. */
export const HB_TOPIC = 'membership/hb'
export const VIEW_TOPIC = 'membership/view'
