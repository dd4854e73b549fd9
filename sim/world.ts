import { silentLogger } from '../core/index.ts'
import { createMembership, type Membership, type MembershipInit, type PeerNet, type View } from '../mesh/index.ts'
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
 * membership code on every node, restarts crashed nodes with fresh state, and checks safety
 * on every view installed (two different views with one epoch is a violation).
 */
export class MembershipWorld {
  readonly sim: Simulation
  readonly net: SimNetwork
  readonly nodes: WorldNode[] = []
  readonly views: ViewEvent[] = []
  readonly violations: string[] = []
  private readonly installed = new Map<number, string>()
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
      this.nodes.push({ id, zone, host, net: handle.net, handle, m: undefined, state: 'down' })
    }
  }

  get ids (): string[] { return this.nodes.map(n => n.id) }

  node (id: string): WorldNode {
    const n = this.nodes.find(x => x.id === id)
    if (n === undefined) throw new Error(`no node ${id}`)
    return n
  }

  /** Starts (or restarts with fresh state) a node's PeerNet and membership. */
  async boot (n: WorldNode): Promise<void> {
    const m = createMembership(this.init, {
      net: n.net, clock: n.handle.clock, rng: this.sim.rng.split(`m/${n.id}/${this.incarnations++}`), log: silentLogger()
    })
    m.on('view', (v: View) => this.record(n.id, v))
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
  }
}
