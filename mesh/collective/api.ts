import { InvalidArgumentError, checkCap, shardRange, type Range } from '../../core/index.ts'
import type { View } from '../membership.ts'
import { CollectiveCore, type CallOptions, type CollectiveInit, type CollectiveResult, type CollectiveStats } from './collective.ts'
import { hierAllGather } from './hier-gather.ts'
import { hierReduceScatter, type ErrorFeedback } from './hier.ts'
import { COLLECTIVE_LIMITS } from './limits.ts'
import { ringAllGather, ringReduceScatter, type GatherInput, type RingPlan } from './ring.ts'
import { windowRange, type Hierarchy, type TierKey } from './topology.ts'
import { F32_WIRE, validateWire, type Wire } from './wire.ts'

/** Where a call runs: every member, or each group of members sharing a tier label (all groups at once). */
export type Scope = 'all' | TierKey

export interface OpOptions extends CallOptions {
  /** Name the call is accounted under (stats, metrics). Default: the operation's name. */
  label?: string
  /**
   * The call covers the elements [offset, offset + length) of a vector of `total` elements
   * that is sharded by {@link shardRange} over all members (a bucket of a flat model): each
   * rank's part is its shard's intersection with the window ({@link Collective.windowOf}),
   * possibly empty. Scope 'all' only.
   */
  window?: Window
}

export interface Window {
  offset: number
  total: number
}

/**
 * Where a call writes its result: an array of the result's type and length that the caller
 * owns and may reuse from call to call (a fresh result array costs its first touch, several
 * times the copy, on every call), not overlapping the input. The call returns it as `data`.
 * Bodies are written into it as they arrive, before their checksums are verified, so after a
 * failed call its contents are undefined.
 */
export interface IntoOption<T> {
  into?: T
}

export interface GatherOptions<T extends GatherWords = GatherWords> extends OpOptions, IntoOption<T> {
  /**
   * How f32 shards travel (f32, bf16, or int8/int4 blockwise). Default f32. Ignored for
   * Uint16Array (raw bf16 words) and Uint32Array (raw 32-bit words) input.
   */
  wire?: Wire
  scope?: Scope
}

export interface ReduceOptions extends OpOptions, IntoOption<Float32Array> {
  /** f32 (exact) or bf16 (partials rounded per hop). Default f32. */
  wire?: Wire
  scope?: Scope
}

export interface HierReduceOptions extends OpOptions, IntoOption<Float32Array> {
  /** f32 (exact) or int8/int4 blockwise (qgZ). Default f32. */
  wire?: Wire
  /** Keeps quantization residuals locally and adds them to the next call's values. */
  errorFeedback?: ErrorFeedback
}

export interface HierGatherOptions extends OpOptions, IntoOption<Float32Array> {}

/**
 * Collectives over one view. Every member calls the same operations in the same order
 * (SPMD); calls on one instance run one at a time, in call order. Shards follow
 * {@link shardRange}: with scope 'all', rank r owns range r of P; with a tier scope, the
 * member at index i of its group (ascending rank) owns range i of the group size.
 */
export interface Collective {
  readonly view: View
  readonly rank: number
  readonly size: number
  readonly hierarchy: Hierarchy
  /** Ranks in ring order (tier groups contiguous). */
  readonly ring: readonly number[]
  start(): Promise<void>
  stop(): Promise<void>
  /**
   * Aborted when this instance is poisoned: its own call failed, a member's failure notice
   * arrived, a member disconnected, abort() or stop() was called. Work done between calls
   * (loading a snapshot, say) listens to it, so it ends when the others give up.
   */
  readonly failed: AbortSignal
  /**
   * Poisons the instance from outside a call (work between calls failed): a running call
   * fails, and every other member is told at once (with `reason`, default 'aborted'), so
   * their calls fail too instead of waiting for the timeout. A no-op after the first failure.
   */
  abort(message: string, reason?: 'aborted' | 'unrecoverable'): void
  /** This rank's shard of `length` elements in `scope` (default 'all'). */
  shardOf(length: number, scope?: Scope): Range
  /** This rank's part of a window of `length` elements (see {@link OpOptions.window}), relative to the window. */
  windowOf(length: number, window: Window): Range
  /** Ranks (ascending) of this node's group in `scope`. */
  group(scope: Scope): readonly number[]
  /** Ring all-gather: `mine` is this rank's shard; every member gets all `length` elements. */
  allGather(mine: Float32Array, length: number, opts?: GatherOptions<Float32Array>): Promise<CollectiveResult<Float32Array>>
  allGather(mine: Uint16Array, length: number, opts?: GatherOptions<Uint16Array>): Promise<CollectiveResult<Uint16Array>>
  /** Raw 32-bit words (integer records), bit for bit, in f32's chunks and byte counts (encoding u32). */
  allGather(mine: Uint32Array, length: number, opts?: GatherOptions<Uint32Array>): Promise<CollectiveResult<Uint32Array>>
  /** Ring reduce-scatter: `x` is this rank's whole vector; returns the sum of everyone's shard of this rank. */
  reduceScatter(x: Float32Array, opts?: ReduceOptions): Promise<CollectiveResult<Float32Array>>
  /** Reduce-scatter then all-gather (f32) on the ring: every member gets the same sums. */
  allReduce(x: Float32Array, opts?: ReduceOptions): Promise<CollectiveResult<Float32Array>>
  /** Hierarchical all-to-all reduce-scatter over the tiers (qgZ when the wire is quantized). */
  hierReduceScatter(x: Float32Array, opts?: HierReduceOptions): Promise<CollectiveResult<Float32Array>>
  /**
   * All-gather over the tiers (f32, bit for bit): the same result as {@link allGather}, with
   * each tier boundary crossed by one message per pair of groups instead of every rank's part
   * one hop at a time. For vectors of a few elements per rank, whose cost is messages and hops.
   */
  hierAllGather(mine: Float32Array, length: number, opts?: HierGatherOptions): Promise<CollectiveResult<Float32Array>>
  stats(): CollectiveStats
}

function checkLength(length: number): void {
  if (!Number.isSafeInteger(length) || length < 0) throw new InvalidArgumentError(`length must be a non-negative integer, got ${length}`)
  checkCap('collective elements', length, COLLECTIVE_LIMITS.maxElements)
}

type GatherWords = Float32Array | Uint16Array | Uint32Array

/**
 * The caller's result array (see {@link IntoOption}) after checking its type, length and that it
 * does not overlap `input`, or a fresh one.
 */
function resultArray<T extends GatherWords>(input: T, length: number, into: GatherWords | undefined): T {
  const make = input.constructor as new (n: number) => T
  if (into === undefined) return new make(length)
  if (into.constructor !== input.constructor || into.length !== length)
    throw new InvalidArgumentError(`into must be a ${make.name} of ${length} elements, got a ${into.constructor.name} of ${into.length}`)
  const a0 = into.byteOffset
  const b0 = input.byteOffset
  if (into.buffer === input.buffer && a0 < b0 + input.byteLength && b0 < a0 + into.byteLength && into.length > 0 && input.length > 0)
    throw new InvalidArgumentError('into must not overlap the input')
  return into as T
}

/** Checks that a window of `length` elements lies inside its vector (scope 'all' only). */
function checkWindow(length: number, scope: Scope, w: Window | undefined): void {
  if (w === undefined) return
  if (scope !== 'all') throw new InvalidArgumentError(`a window needs scope 'all', got ${scope}`)
  if (!Number.isSafeInteger(w.total) || !Number.isSafeInteger(w.offset) || w.offset < 0 || w.offset + length > w.total) {
    throw new InvalidArgumentError(`window [${w.offset}, ${w.offset + length}) is not inside a vector of ${w.total} elements`)
  }
  checkCap('collective elements', w.total, COLLECTIVE_LIMITS.maxElements)
}

/** This rank's shard of `length` elements in `scope`. */
function shardOf(core: CollectiveCore, length: number, scope: Scope = 'all'): Range {
  const g = core.scopeGroup(scope)
  return shardRange(length, g.length, g.indexOf(core.rank))
}

/** This rank's part of a window of `length` elements, relative to the window. */
function windowOf(core: CollectiveCore, length: number, w: Window): Range {
  checkWindow(length, 'all', w)
  return windowRange(w.total, core.size, core.rank, w.offset, length)
}

/** Rank r's part of a call over `length` elements: its shard, or its part of the window. */
function partOf(core: CollectiveCore, length: number, scope: Scope, w: Window | undefined): (r: number) => Range {
  if (w !== undefined) return r => windowRange(w.total, core.size, r, w.offset, length)
  const g = core.scopeGroup(scope)
  return r => shardRange(length, g.length, g.indexOf(r))
}

/** The ring of this rank's group in `scope` and each position's part. */
function ringPlan(core: CollectiveCore, length: number, scope: Scope, phase: number, w?: Window): RingPlan {
  const g = core.scopeGroup(scope)
  const inGroup = new Set(g)
  const ring = core.ring.filter(r => inGroup.has(r))
  const part = partOf(core, length, scope, w)
  return {
    ring,
    pos: ring.indexOf(core.rank),
    part: j => part(ring[j]!),
    chunkBytes: core.chunkBytes,
    phase
  }
}

/** The wire of a ring reduction: f32 or bf16 partial sums. */
function reduceWire(w: Wire | undefined): Wire {
  const wire = w ?? F32_WIRE
  validateWire(wire)
  if (wire.kind === 'quant')
    throw new InvalidArgumentError('the ring reduce-scatter carries f32 or bf16 partial sums; use hierReduceScatter for quantized gradients')
  return wire
}

function allGatherOn(core: CollectiveCore, mine: GatherWords, length: number, opts: GatherOptions): Promise<CollectiveResult<GatherWords>> {
  checkLength(length)
  const scope = opts.scope ?? 'all'
  checkWindow(length, scope, opts.window)
  const want = partOf(core, length, scope, opts.window)(core.rank).length
  if (mine.length !== want) throw new InvalidArgumentError(`this rank's shard of ${length} elements has ${want} elements, got ${mine.length}`)
  const wire = opts.wire ?? F32_WIRE
  validateWire(wire)
  const plan = ringPlan(core, length, scope, 0, opts.window)
  const input = gatherInput(mine, resultArray(mine, length, opts.into), wire)
  return core.run('allGather', opts.label ?? 'all_gather', opts, async op => {
    const go = ringAllGather(op, plan, input)
    op.ready()
    await go()
    return input.out
  })
}

/** The ring's input for `mine` and its output `out` (of the same type). */
function gatherInput(mine: GatherWords, out: GatherWords, wire: Wire): GatherInput {
  if (mine instanceof Uint16Array) return { kind: 'raw16', mine, out: out as Uint16Array }
  if (mine instanceof Uint32Array) return { kind: 'raw32', mine, out: out as Uint32Array }
  return { kind: 'f32', wire, mine, out: out as Float32Array }
}

function reduceScatterOn(core: CollectiveCore, x: Float32Array, opts: ReduceOptions): Promise<CollectiveResult<Float32Array>> {
  checkLength(x.length)
  const wire = reduceWire(opts.wire)
  const scope = opts.scope ?? 'all'
  checkWindow(x.length, scope, opts.window)
  const plan = ringPlan(core, x.length, scope, 0, opts.window)
  const out = resultArray(x, partOf(core, x.length, scope, opts.window)(core.rank).length, opts.into)
  return core.run('reduceScatter', opts.label ?? 'reduce_scatter', opts, async op => {
    const go = ringReduceScatter(op, plan, wire, x, out)
    op.ready()
    await go()
    return out
  })
}

function allReduceOn(core: CollectiveCore, x: Float32Array, opts: ReduceOptions): Promise<CollectiveResult<Float32Array>> {
  checkLength(x.length)
  const wire = reduceWire(opts.wire)
  const scope = opts.scope ?? 'all'
  checkWindow(x.length, scope, opts.window)
  const rs = ringPlan(core, x.length, scope, 0, opts.window)
  const ag = ringPlan(core, x.length, scope, 1, opts.window)
  const shard = new Float32Array(partOf(core, x.length, scope, opts.window)(core.rank).length)
  const out = resultArray(x, x.length, opts.into)
  return core.run('allReduce', opts.label ?? 'all_reduce', opts, async op => {
    const reduce = ringReduceScatter(op, rs, wire, x, shard)
    const gather = ringAllGather(op, ag, { kind: 'f32', wire: F32_WIRE, mine: shard, out })
    op.ready()
    await reduce()
    await gather()
    return out
  })
}

function hierReduceScatterOn(core: CollectiveCore, x: Float32Array, opts: HierReduceOptions): Promise<CollectiveResult<Float32Array>> {
  checkLength(x.length)
  const wire = opts.wire ?? F32_WIRE
  validateWire(wire)
  if (wire.kind === 'bf16') throw new InvalidArgumentError('hierReduceScatter carries f32 or quantized partial sums')
  checkWindow(x.length, 'all', opts.window)
  const part = partOf(core, x.length, 'all', opts.window)
  const out = resultArray(x, part(core.rank).length, opts.into)
  return core.run('hierReduceScatter', opts.label ?? 'hier_reduce_scatter', opts, async op => {
    const go = hierReduceScatter(op, core.hierarchy, x.length, wire, core.chunkBytes, x, out, opts.errorFeedback, part)
    op.ready()
    await go()
    return out
  })
}

function hierAllGatherOn(core: CollectiveCore, mine: Float32Array, length: number, opts: HierGatherOptions): Promise<CollectiveResult<Float32Array>> {
  checkLength(length)
  checkWindow(length, 'all', opts.window)
  const part = partOf(core, length, 'all', opts.window)
  const want = part(core.rank).length
  if (mine.length !== want) throw new InvalidArgumentError(`this rank's shard of ${length} elements has ${want} elements, got ${mine.length}`)
  const out = resultArray(mine, length, opts.into)
  return core.run('hierAllGather', opts.label ?? 'hier_all_gather', opts, async op => {
    const go = hierAllGather(op, core.hierarchy, part, core.chunkBytes, mine, out)
    op.ready()
    await go()
    return out
  })
}

/** Creates a collective for `init.view` on `init.net` (call start() on every member). */
export function createCollective(init: CollectiveInit): Collective {
  const core = new CollectiveCore(init)
  function allGather(mine: Float32Array, length: number, opts?: GatherOptions<Float32Array>): Promise<CollectiveResult<Float32Array>>
  function allGather(mine: Uint16Array, length: number, opts?: GatherOptions<Uint16Array>): Promise<CollectiveResult<Uint16Array>>
  function allGather(mine: Uint32Array, length: number, opts?: GatherOptions<Uint32Array>): Promise<CollectiveResult<Uint32Array>>
  function allGather(mine: GatherWords, length: number, opts: GatherOptions = {}): Promise<CollectiveResult<GatherWords>> {
    return allGatherOn(core, mine, length, opts)
  }
  return {
    view: core.view,
    rank: core.rank,
    size: core.size,
    hierarchy: core.hierarchy,
    ring: core.ring,
    start: () => core.start(),
    stop: () => core.stop(),
    failed: core.failed,
    abort: (message, reason = 'aborted') => {
      core.fail(reason, undefined, message)
    },
    shardOf: (length, scope) => shardOf(core, length, scope),
    windowOf: (length, w) => windowOf(core, length, w),
    group: scope => core.scopeGroup(scope),
    allGather,
    reduceScatter: (x, opts = {}) => reduceScatterOn(core, x, opts),
    allReduce: (x, opts = {}) => allReduceOn(core, x, opts),
    hierReduceScatter: (x, opts = {}) => hierReduceScatterOn(core, x, opts),
    hierAllGather: (mine, length, opts = {}) => hierAllGatherOn(core, mine, length, opts),
    stats: () => core.stats()
  }
}
