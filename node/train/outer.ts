import { shardRange } from '../../core/index.ts'
import { dequantize, dequantizeAccumulate, quantize, quantizedSize, type QuantOptions, type Quantized } from '../../codec/index.ts'
import type { Collective, TierBytes } from '../../mesh/index.ts'
import type { OuterArrays } from '../../snapshot/index.ts'
import { TrainMessageError } from './messages.ts'

/**
 * The DiLoCo tier across zones (Douillard et al., arXiv 2311.08105; streaming: arXiv
 * 2501.18512). The roster is cut into zone groups of equal size; inside a group the ranks
 * train as any ZeRO-3 run (their own collectives, their own step commits). Across groups, the
 * ranks at the same place in their groups (each owns the same shard range of the flat model)
 * form an outer group, and every `every` inner steps exchange the pseudo-gradient of their
 * shard, Δ = outer weights − inner weights: quantized blockwise (int8 or int4) with error
 * feedback, all-gathered, averaged in zone order (so every zone computes the same bits), and
 * applied by an outer Nesterov step. The outer weights are then the same in every zone.
 *
 * Streaming: the shard is cut into `fragments` slices, each exchanged every `every` steps on a
 * staggered schedule, and a slice's exchange overlaps the next `delay` inner steps; when it
 * lands, the slice becomes the new outer weights plus the progress the zone made meanwhile.
 * Without streaming: one fragment, exchanged and applied in the step that sends it.
 */
export interface OuterConfig {
  /** Inner steps between two exchanges of a fragment (H). */
  every: number
  quant: 'int8' | 'int4'
  streaming: boolean
  /** Zone groups the ranks form (the roster is worldSize / zones ranks from each of `zones` zones). */
  zones: number
  /** Outer learning rate (DiLoCo: 0.7). */
  lr: number
  /** Outer Nesterov momentum (DiLoCo: 0.9). */
  momentum: number
}

/** DiLoCo's outer optimizer defaults. */
export const OUTER_DEFAULTS = Object.freeze({ lr: 0.7, momentum: 0.9, quant: 'int8' as const })

/** Fragments of a streaming run (fewer when `every` is smaller). */
export const STREAMING_FRAGMENTS = 4

/** Quantization block of the pseudo-gradients (elements per f32 scale). */
export const OUTER_BLOCK = 256

/** When fragments are sent and applied: all step counts are committed steps (step s ends at count s + 1). */
export interface OuterSchedule {
  every: number
  fragments: number
  /** Steps between a fragment's send and its application (0: in the same step). */
  delay: number
  /** Counts apart of consecutive fragments' sends. */
  stagger: number
}

export function outerSchedule(cfg: Pick<OuterConfig, 'every' | 'streaming'>): OuterSchedule {
  const fragments = cfg.streaming ? Math.max(1, Math.min(STREAMING_FRAGMENTS, cfg.every)) : 1
  const stagger = Math.floor(cfg.every / fragments)
  return { every: cfg.every, fragments, delay: cfg.streaming ? stagger : 0, stagger }
}

/** The fragments sent at the end of the step that makes `count` steps (ascending). */
export function sendsAt(sc: OuterSchedule, count: number): number[] {
  const out: number[] = []
  for (let f = 0; f < sc.fragments; f++) if (count >= sc.every - f * sc.stagger && (count + f * sc.stagger) % sc.every === 0) out.push(f)
  return out
}

/** The send count of the exchange of fragment `f` that is in flight after `count` steps, if any. */
export function inFlightAt(sc: OuterSchedule, count: number, f: number): number | undefined {
  for (let c = count; c > count - sc.delay && c > 0; c--) if (sendsAt(sc, c).includes(f)) return c
  return undefined
}

/** The slice of a shard of `n` elements that fragment `f` covers. */
export function fragmentRange(sc: OuterSchedule, n: number, f: number): { start: number; length: number } {
  return shardRange(n, sc.fragments, f)
}

/** A fresh outer state for a shard whose weights are `master` (every zone starts from the seed's weights). */
export function freshOuter(master: Float32Array): OuterArrays {
  const n = master.length
  return { weights: master.slice(), momentum: new Float32Array(n), residual: new Float32Array(n), sentInner: master.slice() }
}

/** A copy (saves hold it while the trainer goes on). */
export function copyOuter(o: OuterArrays): OuterArrays {
  return { weights: o.weights.slice(), momentum: o.momentum.slice(), residual: o.residual.slice(), sentInner: o.sentInner.slice() }
}

/** u32 words of one zone's quantized fragment: f32 scales, then the codes, zero-padded. */
export function payloadWords(length: number, opts: QuantOptions): number {
  const { scaleBytes, dataBytes } = quantizedSize(length, opts)
  return Math.ceil((scaleBytes + dataBytes) / 4)
}

function pack(q: Quantized, words: number): Uint32Array {
  const out = new Uint32Array(words)
  const bytes = new Uint8Array(out.buffer)
  bytes.set(new Uint8Array(q.scales.buffer, q.scales.byteOffset, q.scales.byteLength))
  bytes.set(q.data, q.scales.byteLength)
  return out
}

/** Zone z's quantized fragment from the gathered words (checked: a peer's codes are input). */
function unpack(all: Uint32Array, z: number, words: number, length: number, opts: QuantOptions): Quantized {
  const { blocks, scaleBytes, dataBytes } = quantizedSize(length, opts)
  const bytes = new Uint8Array(all.buffer, all.byteOffset + z * words * 4, words * 4)
  const scales = new Float32Array(bytes.slice(0, scaleBytes).buffer)
  if (scales.length !== blocks)
    throw new TrainMessageError('OUTER_MALFORMED', `outer exchange: zone ${z}'s fragment has ${scales.length} scales, expected ${blocks}`)
  for (let i = scaleBytes + dataBytes; i < bytes.length; i++)
    if (bytes[i] !== 0) throw new TrainMessageError('OUTER_MALFORMED', `outer exchange: zone ${z}'s fragment has non-zero padding`)
  return { bits: opts.bits, blockSize: opts.blockSize, length, scales, data: bytes.slice(scaleBytes, scaleBytes + dataBytes) }
}

/** The quantization of an outer config. */
export function outerQuant(cfg: Pick<OuterConfig, 'quant'>): QuantOptions {
  return { bits: cfg.quant === 'int4' ? 4 : 8, blockSize: OUTER_BLOCK }
}

/** This zone's pseudo-gradient for fragment slice [a, a + L) with the last round's residual: e = residual + (outer − sent inner). */
function withResidual(o: OuterArrays, a: number, L: number): Float32Array {
  const e = new Float32Array(L)
  for (let i = 0; i < L; i++) e[i] = o.residual[a + i]! + (o.weights[a + i]! - o.sentInner[a + i]!)
  return e
}

/**
 * This zone's contribution for fragment slice [a, a + L): {@link withResidual}, quantized. A
 * pure function of the state, so a rank that rolled back to a step inside the exchange's window
 * sends the same bytes again.
 */
export function contribution(o: OuterArrays, a: number, L: number, opts: QuantOptions): Quantized {
  return quantize(withResidual(o, a, L), opts)
}

/** Starts fragment `f`'s exchange: records the inner weights it is sent from, all-gathers the quantized pseudo-gradient. */
export function sendFragment(
  coll: Collective,
  o: OuterArrays,
  inner: Float32Array,
  slice: { start: number; length: number },
  opts: QuantOptions,
  call: { step: number; signal?: AbortSignal }
): Promise<{ all: Uint32Array; bytes: TierBytes }> {
  const { start: a, length: L } = slice
  o.sentInner.set(inner.subarray(a, a + L), a)
  return exchange(coll, o, slice, opts, call)
}

/** The all-gather of this zone's contribution from the state as it is (also what a rank re-sends after a rollback). */
export function exchange(
  coll: Collective,
  o: OuterArrays,
  slice: { start: number; length: number },
  opts: QuantOptions,
  call: { step: number; signal?: AbortSignal }
): Promise<{ all: Uint32Array; bytes: TierBytes }> {
  const words = payloadWords(slice.length, opts)
  const mine = pack(contribution(o, slice.start, slice.length, opts), words)
  return coll.allGather(mine, coll.size * words, { ...call, label: 'outer' }).then(r => ({ all: r.data, bytes: r.bytes }))
}

/**
 * Applies an exchange that landed: the mean of every zone's dequantized contribution (summed in
 * zone order, the same bits everywhere), the residual of this zone's quantization kept for the
 * next round, the outer Nesterov step (m = μm + Δ; outer −= lr (Δ + μm)), and the slice of the
 * inner weights becomes the new outer weights plus what the zone trained since it sent.
 */
export function applyFragment(
  o: OuterArrays,
  inner: Float32Array,
  slice: { start: number; length: number },
  all: Uint32Array,
  zones: number,
  zone: number,
  opts: QuantOptions & Pick<OuterConfig, 'lr' | 'momentum'>
): void {
  const { start: a, length: L } = slice
  const words = payloadWords(L, opts)
  if (all.length !== zones * words) throw new TrainMessageError('OUTER_MALFORMED', `outer exchange: ${all.length} words gathered, expected ${zones * words}`)
  const mean = new Float32Array(L)
  let own: Quantized | undefined
  for (let z = 0; z < zones; z++) {
    const q = unpack(all, z, words, L, opts)
    dequantizeAccumulate(q, mean)
    if (z === zone) own = q
  }
  // What this zone sent is among the gathered fragments: only the residual is left to compute.
  const e = withResidual(o, a, L)
  const sent = dequantize(own!)
  const { lr, momentum: mu } = opts
  for (let i = 0; i < L; i++) {
    const j = a + i
    const d = Math.fround(mean[i]! / zones)
    o.residual[j] = e[i]! - sent[i]!
    const m = Math.fround(mu * o.momentum[j]! + d)
    o.momentum[j] = m
    const w = Math.fround(o.weights[j]! - Math.fround(lr * Math.fround(d + Math.fround(mu * m))))
    inner[j] = w + (inner[j]! - o.sentInner[j]!)
    o.weights[j] = w
  }
}

/**
 * Whether an exchange is applied at the end of the step that makes `count` steps: a new outer
 * stage begins there. Every zone group snapshots that step (never skipped), so all groups have
 * a step in common at each stage, which holders keep as their recovery point.
 */
export function appliesAt(sc: OuterSchedule, count: number): boolean {
  return count - sc.delay >= 1 && sendsAt(sc, count - sc.delay).length > 0
}

/** How many exchanges have been applied after `count` steps (the state's place between outer steps). */
export function appliedBy(sc: OuterSchedule, count: number): number {
  let n = 0
  for (let c = 1; c + sc.delay <= count; c++) n += sendsAt(sc, c).length
  return n
}

/**
 * The recovery points of zone groups: group g may roll back to any step in `common[g]` (the
 * steps every rank it loads has a snapshot of). Zone groups train apart between outer steps, so
 * each may roll back to its own step, as long as every group has applied the same exchanges
 * (then the exchanges still to come, re-sent or not, are the same sequence in every group):
 * the newest such stage that every group has a step in, and in it each group's newest step.
 * Undefined when the groups have no stage in common.
 */
export function zoneRecoveryPoints(sc: OuterSchedule, common: ReadonlyArray<ReadonlySet<number>>): number[] | undefined {
  const stages = common.map(set => new Map([...set].map(step => [step, appliedBy(sc, step)] as const)))
  const shared = [...new Set(stages[0]!.values())].filter(k => stages.every(m => [...m.values()].includes(k))).sort((a, b) => b - a)
  if (shared.length === 0) return undefined
  const k = shared[0]!
  return stages.map(m => Math.max(...[...m.entries()].filter(([, x]) => x === k).map(([step]) => step)))
}
