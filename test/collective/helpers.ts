import { RealClock, shardRange, type Clock, type Range, type Rng } from '../../core/index.ts'
import { createMemoryNetwork, type PeerNet, type View } from '../../mesh/index.ts'
import {
  createCollective,
  relayOf,
  roundTrip,
  type Collective,
  type CollectiveInit,
  type Group as TierGroup,
  type Hierarchy,
  type Wire
} from '../../mesh/collective/index.ts'
import { Simulation, createSimNetwork, type SimNetwork, type Topology } from '../../sim/index.ts'

/** Zone of rank r when P ranks are spread over Z zones in contiguous blocks (z0 z0 z1 z1 ...). */
export function zoneOf(r: number, P: number, Z: number): string {
  return `z${Math.floor((r * Z) / P)}`
}

/** Views whose rank order interleaves zones (z0 z1 z0 z1 ...), to exercise the ring order. */
export function interleavedZone(r: number, _P: number, Z: number): string {
  return `z${r % Z}`
}

export interface Group {
  nets: PeerNet[]
  clocks: Clock[]
  view: View
  colls: Collective[]
  stop(): Promise<void>
}

type CollOpts = Omit<CollectiveInit, 'net' | 'view' | 'clock'>

function viewOf(nets: PeerNet[], epoch = 1): View {
  return { epoch, members: nets.map(n => ({ id: n.self.id, zone: n.self.labels.zone, host: n.self.labels.host })) }
}

async function startColls(nets: PeerNet[], clocks: Clock[], view: View, opts: CollOpts): Promise<Collective[]> {
  const colls = nets.map((net, i) => createCollective({ net, view, clock: clocks[i]!, ...opts }))
  await Promise.all(colls.map(c => c.start()))
  return colls
}

/** P members on an in-memory network (real clock; nothing waits on it unless a call stalls). */
export async function memoryGroup(P: number, zone: (r: number) => string, opts: CollOpts = {}, host: (r: number) => string = r => `h${r}`): Promise<Group> {
  const hub = createMemoryNetwork()
  const nets = Array.from({ length: P }, (_, i) => hub.createPeer({ id: `m${String(i).padStart(2, '0')}`, labels: { zone: zone(i), host: host(i) } }))
  await Promise.all(nets.map(n => n.start()))
  const clock = new RealClock()
  const clocks = nets.map(() => clock)
  const view = viewOf(nets)
  const colls = await startColls(nets, clocks, view, opts)
  return {
    nets,
    clocks,
    view,
    colls,
    async stop() {
      await Promise.all(colls.map(c => c.stop()))
      await Promise.all(nets.map(n => n.stop()))
    }
  }
}

export interface SimGroup extends Group {
  sim: Simulation
  simnet: SimNetwork
  /** Runs simulated time until `p` settles (or `limitMs` of simulated time passes). */
  settle<T>(p: Promise<T>, limitMs?: number): Promise<T>
}

/** P members on SimNet, driven by `sim.run` (virtual time). */
export async function simGroup(seed: number, P: number, zone: (r: number) => string, opts: CollOpts = {}, topology?: Topology): Promise<SimGroup> {
  const sim = new Simulation({ seed })
  const simnet = createSimNetwork(sim, topology)
  const peers = Array.from({ length: P }, (_, i) => simnet.createPeer({ id: `s${String(i).padStart(2, '0')}`, labels: { zone: zone(i), host: `h${i}` } }))
  const nets = peers.map(p => p.net)
  await Promise.all(nets.map(n => n.start()))
  await sim.run(100)
  const clocks = peers.map(p => p.clock)
  const view = viewOf(nets)
  const colls = await startColls(nets, clocks, view, opts)
  const settle = async <T>(p: Promise<T>, limitMs = 600_000): Promise<T> => {
    let done = false
    p.then(
      () => {
        done = true
      },
      () => {
        done = true
      }
    )
    await sim.until(() => done, limitMs, 5)
    if (!done) throw new Error(`still pending after ${limitMs} ms of simulated time`)
    return await p
  }
  return {
    nets,
    clocks,
    view,
    colls,
    sim,
    simnet,
    settle,
    async stop() {
      await Promise.all(colls.map(c => c.stop()))
      await Promise.all(nets.map(n => n.stop()))
      await sim.run(100)
    }
  }
}

export function randomVec(rng: Rng, n: number, scale = 1): Float32Array {
  const out = new Float32Array(n)
  for (let i = 0; i < n; i++) out[i] = (rng.float() * 2 - 1) * scale
  return out
}

const f32Box = new Float32Array(1)
const u32Box = new Uint32Array(f32Box.buffer)
const f32OfBits = (b: number): number => {
  u32Box[0] = b >>> 0
  return f32Box[0]!
}

/**
 * bf16 rounding written independently of mesh/collective/wire.ts (which adds a bias to the
 * bits): the two bf16 neighbours of x are compared by their distance to x, computed exactly
 * in f64; a tie goes to the even one; past the largest bf16, halfway to 2^128 rounds to
 * infinity (IEEE overflow). Returns the f32 value of the rounded bf16 (NaN stays NaN).
 */
export function bf16Round(x: number): number {
  f32Box[0] = x
  const bits = u32Box[0]!
  const v = f32Box[0]!
  if (Number.isNaN(v) || !Number.isFinite(v)) return v
  const lo = (bits & 0xffff0000) >>> 0
  if (lo === bits) return v
  const hi = (lo + 0x10000) >>> 0
  const mag = (b: number): number => ((b & 0x7f800000) === 0x7f800000 ? 2 ** 128 : Math.abs(f32OfBits(b)))
  const dlo = Math.abs(v) - mag(lo)
  const dhi = mag(hi) - Math.abs(v)
  const pick = dlo < dhi ? lo : dhi < dlo ? hi : ((lo >>> 16) & 1) === 0 ? lo : hi
  return f32OfBits(pick)
}

/**
 * Serial reference of the ring reduce-scatter order: the shard owned by ring position j is
 * ((x[j+1] + x[j+2]) + ...) + x[j], in f32, the partial rounded to bf16 ({@link bf16Round})
 * before each hop when `bf16` (the first hop carries x[j+1] itself, rounded).
 */
export function serialRingReduce(xs: Float32Array[], ring: readonly number[], n: number, bf16 = false): Float32Array {
  const P = xs.length
  const out = new Float32Array(n)
  const Q = ring.length
  const acc = new Float32Array(1)
  for (let j = 0; j < Q; j++) {
    const r = shardRange(n, P, ring[j]!)
    for (let e = r.start; e < r.start + r.length; e++) {
      acc[0] = xs[ring[(j + 1) % Q]!]![e]!
      for (let k = 2; k <= Q; k++) {
        const prev: number = bf16 ? bf16Round(acc[0]!) : acc[0]!
        acc[0] = prev + xs[ring[(j + k) % Q]!]![e]!
      }
      out[e] = acc[0]!
    }
  }
  return out
}

/** Bitwise equality of two f32 vectors; returns the first differing index or -1. */
export function firstDiff(a: Float32Array, b: Float32Array): number {
  if (a.length !== b.length) return -2
  const ua = new Uint32Array(a.buffer, a.byteOffset, a.length)
  const ub = new Uint32Array(b.buffer, b.byteOffset, b.length)
  for (let i = 0; i < ua.length; i++) if (ua[i] !== ub[i]) return i
  return -1
}

/**
 * Residuals of a serial error-feedback model: per sending rank and tier level, one f32 per
 * element of the whole vector (the same state each rank's ErrorFeedback holds).
 */
export type SerialFeedback = Map<string, Float32Array>

/**
 * Serial reference of the hierarchical reduce-scatter, written from its documented order:
 * at every level, the subgroups' partial sums (subgroups ordered by lowest rank) are summed
 * left to right in f32, the first assigned. A hop between different relays goes through the
 * wire (`roundTrip`); a partial that stays on its relay does not. With `feedback` (quantized
 * wires only), the sender adds its residual for (level, element) before encoding and keeps
 * what the round trip dropped, as documented for ErrorFeedback.
 */
export function serialHierReduce(xs: Float32Array[], h: Hierarchy, n: number, wire: Wire, parts?: readonly Range[], feedback?: SerialFeedback): Float32Array {
  const P = xs.length
  const out = new Float32Array(n)
  const send = (v0: Float32Array, sender: number, level: number, start: number): Float32Array => {
    if (feedback === undefined || wire.kind !== 'quant') return roundTrip(wire, v0)
    const key = `${sender}/${level}`
    let res = feedback.get(key)
    if (res === undefined) feedback.set(key, (res = new Float32Array(n)))
    const src = new Float32Array(v0.length)
    for (let i = 0; i < src.length; i++) src[i] = v0[i]! + res[start + i]!
    const back = roundTrip(wire, src)
    for (let i = 0; i < src.length; i++) res[start + i] = src[i]! - back[i]!
    return back
  }
  for (let d = 0; d < P; d++) {
    const r = parts?.[d] ?? shardRange(n, P, d)
    const value = (g: TierGroup): Float32Array => {
      if (g.level === 0) return xs[g.members[0]!]!.slice(r.start, r.start + r.length)
      const relay = relayOf(h, g, d)
      const acc = new Float32Array(r.length)
      g.subgroups.forEach((sub, k) => {
        const v0 = value(sub)
        const from = relayOf(h, sub, d)
        const v = from === relay ? v0 : send(v0, from, g.level, r.start)
        if (k === 0) acc.set(v)
        else for (let i = 0; i < acc.length; i++) acc[i] = acc[i]! + v[i]!
      })
      return acc
    }
    out.set(value(h.top), r.start)
  }
  return out
}

/** Exact (f64) sum of the vectors, for error bounds. */
export function exactSum(xs: Float32Array[], n: number): Float64Array {
  const out = new Float64Array(n)
  for (const x of xs) for (let i = 0; i < n; i++) out[i]! += x[i]!
  return out
}

/**
 * The stated error bound of a quantized hierarchical reduce-scatter over P ranks in Z zones
 * with inputs in [-scale, scale]: each quantized hop errs by at most half a block scale
 * (absmax / qmax / 2) plus f32 rounding; at most P rank hops and Z zone partials, each partial
 * at most P * scale in magnitude.
 */
export function hierQuantBound(P: number, Z: number, bits: 4 | 8, scale = 1): number {
  const qmax = bits === 8 ? 127 : 7
  return (((P + Z * P) * scale) / (2 * qmax)) * 1.001 + 1e-5
}
