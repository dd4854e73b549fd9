import { RealClock, type Clock, type Rng } from '../../core/index.ts'
import { createMemoryNetwork, type MemoryNetwork, type PeerNet, type View } from '../../mesh/index.ts'
import { createSnapshotService, type RankState, type SnapshotCoder, type SnapshotService, type SnapshotServiceInit } from '../../snapshot/index.ts'

/** A random rank state of `n` elements per buffer. */
export function randomState(rng: Rng, n: number, init: { rank?: number; worldSize?: number; step?: number; epoch?: number } = {}): RankState {
  const f = (): Float32Array => {
    const a = new Float32Array(n)
    for (let i = 0; i < n; i++) a[i] = rng.float() * 2 - 1
    return a
  }
  const rngBytes = new Uint8Array(32)
  for (let i = 0; i < rngBytes.length; i++) rngBytes[i] = rng.int(0, 256)
  return {
    rank: init.rank ?? 0,
    worldSize: init.worldSize ?? 8,
    epoch: init.epoch ?? 1,
    step: init.step ?? 1,
    dataCursor: rng.int(0, 1 << 30),
    weights: f(),
    adamM: f(),
    adamV: f(),
    rng: rngBytes
  }
}

/** Layout of `n` nodes over zones and hosts: node i on host h(i % hosts), zone z(host % zones). */
export function topology(n: number, hosts = n, zones = 2): Array<{ id: string; zone: string; host: string }> {
  return Array.from({ length: n }, (_, i) => ({ id: `p${i}`, zone: `z${(i % hosts) % zones}`, host: `h${i % hosts}` }))
}

export interface MemoryMesh {
  hub: MemoryNetwork
  nets: PeerNet[]
  services: SnapshotService[]
  view: View
  clock: Clock
  close(): Promise<void>
}

/** `n` snapshot services on one in-memory network, started, with view epoch 1 installed. */
export async function memoryMesh(
  n: number,
  init: SnapshotServiceInit,
  opts: { hosts?: number; zones?: number; clock?: Clock; coder?: (i: number) => SnapshotCoder } = {}
): Promise<MemoryMesh> {
  const hub = createMemoryNetwork()
  const clock = opts.clock ?? new RealClock()
  const members = topology(n, opts.hosts, opts.zones)
  const nets = members.map(mem => hub.createPeer({ id: mem.id, labels: { zone: mem.zone, host: mem.host } }))
  const services = nets.map((net, i) => createSnapshotService(init, { net, clock, ...(opts.coder === undefined ? {} : { coder: opts.coder(i) }) }))
  await Promise.all(nets.map(x => x.start()))
  await Promise.all(services.map(s => s.start()))
  const view: View = { epoch: 1, members }
  for (const s of services) s.setView(view)
  await new Promise(resolve => setImmediate(resolve))
  return {
    hub,
    nets,
    services,
    view,
    clock,
    async close() {
      await Promise.all(services.map(s => s.stop()))
      await Promise.all(nets.map(x => x.stop()))
    }
  }
}

/** Every subset of size <= r of [0, n). */
export function subsets(n: number, r: number): number[][] {
  const out: number[][] = [[]]
  const rec = (start: number, cur: number[]): void => {
    for (let i = start; i < n; i++) {
      const next = [...cur, i]
      out.push(next)
      if (next.length < r) rec(i + 1, next)
    }
  }
  if (r > 0) rec(0, [])
  return out
}

export function bytesEqual(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && Buffer.compare(Buffer.from(a.buffer, a.byteOffset, a.length), Buffer.from(b.buffer, b.byteOffset, b.length)) === 0
}
