import { InvalidArgumentError, type Range } from '../../core/index.ts'
import type { Collective, IntoOption, Scope, Window } from './api.ts'
import type { CallOptions, CollectiveResult } from './collective.ts'
import { createErrorFeedback, type ErrorFeedback } from './hier.ts'
import { COLLECTIVE_DEFAULTS } from './limits.ts'
import { zeroTierBytes, type TierBytes } from './op.ts'
import type { TierKey } from './topology.ts'
import { BF16_WIRE, F32_WIRE, validateWire, type Wire } from './wire.ts'

/**
 * ZeRO-3 / ZeRO++ communication for one rank over a {@link Collective}. Parameters and
 * gradients are flat f32 vectors per bucket; rank r owns shard r (`shardOf`). With every
 * option off this is flat ZeRO-3 (the baseline): ring all-gathers of the weights for the
 * forward and again for the backward, a ring reduce-scatter of the gradients.
 *
 * - qwZ: the weight all-gather carries int8 blockwise-quantized shards (block `blockSize`,
 *   default 4096), dequantized on receipt; every rank (the owner too) computes with the
 *   dequantized values, so all ranks hold identical weights.
 * - hpZ: the forward gather also leaves this rank a secondary shard of the gathered weights,
 *   split among the members of its `tier` group (default zone); the backward gather is an
 *   all-gather inside that group only (f32, so it reproduces the forward weights exactly):
 *   no backward weight bytes cross the tier.
 * - qgZ: gradients are reduced by the hierarchical all-to-all reduce-scatter with int4
 *   (default) or int8 blocks of `blockSize` (default 512), optionally with error feedback.
 */
export interface ZeroOptions {
  qwZ?: boolean | { blockSize?: number }
  hpZ?: boolean | { tier?: TierKey }
  qgZ?: boolean | { bits?: 4 | 8; blockSize?: number; errorFeedback?: boolean }
  /** Wire of unquantized weight gathers (flat forward/backward). Default f32; bf16 halves bytes. */
  weightWire?: 'f32' | 'bf16'
  /** Wire of the unquantized gradient reduce-scatter. Default f32. */
  gradWire?: 'f32' | 'bf16'
}

export type GatherPass = 'forward' | 'backward'

export interface ZeroCallOptions extends CallOptions, IntoOption<Float32Array> {
  window?: Window
}

export interface ZeroComm {
  readonly collective: Collective
  /** This rank's shard (primary partition) of a bucket of `length` elements. */
  shardOf(length: number): Range
  /**
   * Gathers a bucket's weights from the primary shards (forward) or, with hpZ, the secondary
   * ones (backward). With `window`, the bucket is that window of one flat vector sharded over
   * the ranks, and `shard` is this rank's part of it ({@link Collective.windowOf}).
   */
  gatherWeights(bucket: string, shard: Float32Array, length: number, pass: GatherPass, opts?: ZeroCallOptions): Promise<CollectiveResult<Float32Array>>
  /** Sums every rank's gradient of a bucket; returns this rank's shard (or part of the window) of the sum. */
  reduceGradients(bucket: string, grads: Float32Array, opts?: ZeroCallOptions): Promise<CollectiveResult<Float32Array>>
  /** Bytes sent per operation label and tier since creation. */
  bytes(): Record<string, TierBytes>
  /** Drops hpZ secondary shards and error-feedback residuals (e.g. before a new view). */
  reset(): void
}

export function createZeroComm(collective: Collective, options: ZeroOptions = {}): ZeroComm {
  const qwZ = options.qwZ === undefined || options.qwZ === false ? undefined : options.qwZ === true ? {} : options.qwZ
  const hpZ = options.hpZ === undefined || options.hpZ === false ? undefined : options.hpZ === true ? {} : options.hpZ
  const qgZ = options.qgZ === undefined || options.qgZ === false ? undefined : options.qgZ === true ? {} : options.qgZ
  const weightWire: Wire =
    qwZ !== undefined
      ? { kind: 'quant', bits: 8, blockSize: qwZ.blockSize ?? COLLECTIVE_DEFAULTS.weightBlockSize }
      : options.weightWire === 'bf16'
        ? BF16_WIRE
        : F32_WIRE
  const gradWire: Wire =
    qgZ !== undefined
      ? { kind: 'quant', bits: qgZ.bits ?? 4, blockSize: qgZ.blockSize ?? COLLECTIVE_DEFAULTS.gradBlockSize }
      : options.gradWire === 'bf16'
        ? BF16_WIRE
        : F32_WIRE
  validateWire(weightWire)
  validateWire(gradWire)
  const hpzScope: Scope = hpZ?.tier ?? 'zone'
  if (hpZ !== undefined) collective.group(hpzScope) // validates the tier
  const secondary = new Map<string, { length: number; data: Float32Array }>()
  const feedback = new Map<string, ErrorFeedback>()
  const totals = new Map<string, TierBytes>()
  const account = <T>(r: CollectiveResult<T>): CollectiveResult<T> => {
    const t = totals.get(r.op) ?? zeroTierBytes()
    for (const k of ['host', 'zone', 'wan'] as const) t[k] += r.bytes[k]
    totals.set(r.op, t)
    return r
  }

  return {
    collective,
    shardOf: length => collective.shardOf(length),
    async gatherWeights(bucket, shard, length, pass, opts = {}) {
      if (pass === 'backward' && hpZ !== undefined) {
        const sec = secondary.get(bucket)
        if (sec === undefined || sec.length !== length)
          throw new InvalidArgumentError(`hpZ: no forward gather of bucket ${bucket} (${length} elements) to gather the backward from`)
        // The secondary partition splits the bucket evenly inside the tier: no window.
        const { window: _primary, ...call } = opts
        return account(await collective.allGather(sec.data, length, { ...call, scope: hpzScope, wire: F32_WIRE, label: 'hpz_gather' }))
      }
      const label = qwZ !== undefined ? 'qwz_gather' : pass === 'forward' ? 'weight_gather' : 'weight_gather_bwd'
      const res = account(await collective.allGather(shard, length, { ...opts, wire: weightWire, label }))
      if (hpZ !== undefined && pass === 'forward') {
        const s = collective.shardOf(length, hpzScope)
        secondary.set(bucket, { length, data: res.data.slice(s.start, s.start + s.length) })
      }
      return res
    },
    async reduceGradients(bucket, grads, opts = {}) {
      if (qgZ !== undefined) {
        let ef: ErrorFeedback | undefined
        if (qgZ.errorFeedback === true) {
          ef = feedback.get(bucket)
          if (ef === undefined) feedback.set(bucket, (ef = createErrorFeedback()))
        }
        return account(await collective.hierReduceScatter(grads, { ...opts, wire: gradWire, errorFeedback: ef, label: 'qgz_reduce_scatter' }))
      }
      return account(await collective.reduceScatter(grads, { ...opts, wire: gradWire, label: 'grad_reduce_scatter' }))
    },
    bytes() {
      const out: Record<string, TierBytes> = {}
      for (const [k, v] of totals) out[k] = { ...v }
      return out
    },
    reset() {
      secondary.clear()
      feedback.clear()
    }
  }
}
