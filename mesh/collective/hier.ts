import { InvalidArgumentError, shardRange, type Range } from '../../core/index.ts'
import { Slots, type OpApi, type Payload } from './op.ts'
import { chunksOf } from './ring.ts'
import { relayOf, type Hierarchy } from './topology.ts'
import { blockSizeOf, checkBody, chunkElementsOf, decodeBody, encodeBody, encodingOf, type Wire } from './wire.ts'

/**
 * Error feedback for quantized reduce-scatters: what quantization dropped from each value this
 * node sent, per tier level, added to the same element the next time it is sent (the
 * residual stays local; nothing extra travels). One per gradient bucket, owned by the caller.
 */
export interface ErrorFeedback {
  /** Residual per level, indexed by element of the whole vector. */
  readonly residual: Map<number, Float32Array>
}

export function createErrorFeedback(): ErrorFeedback {
  return { residual: new Map() }
}

function residualFor(ef: ErrorFeedback, level: number, n: number): Float32Array {
  let r = ef.residual.get(level)
  if (r === undefined) ef.residual.set(level, (r = new Float32Array(n)))
  if (r.length !== n) throw new InvalidArgumentError(`error feedback state holds ${r.length} elements, the vector has ${n}`)
  return r
}

/**
 * Hierarchical reduce-scatter as an all-to-all per tier level (ZeRO++ qgZ generalised to any
 * number of nested tiers). Rank d ends with the sum of everyone's shard d (global partition,
 * or `part(d)` when given: any split of [0, n) into ranges in rank order, empty ones allowed).
 *
 * Level 1 (innermost groups, e.g. a zone): every member sends its slice for destination d to
 * the group's relay for d (see `relayOf`), which reduces them. Level l: the relays of the
 * level-(l-1) subgroups send their partial sums to the level-l group's relay for d, which
 * reduces those; at the top level the relay is d itself. Each hop is encoded with `wire`
 * (int4/int8 blockwise: quantize, send, dequantize, reduce in f32, re-quantize for the next
 * hop); a partial that stays on its node is not re-encoded.
 *
 * Reduction order, fixed by the view: at every level, inputs are summed in f32 in the order
 * of the subgroups (ordered by lowest rank; at level 1, by rank), left to right, the first
 * input assigned (not added to zero). So the result is a tree of sums following the tiers,
 * e.g. for zones: sum over zones (in order) of (sum over the zone's ranks in rank order).
 */
export function hierReduceScatter(
  op: OpApi,
  h: Hierarchy,
  n: number,
  wire: Wire,
  chunkBytes: number,
  x: Float32Array,
  out: Float32Array,
  ef?: ErrorFeedback,
  part?: (d: number) => Range
): () => Promise<void> {
  const self = op.self
  const P = h.groupOf[0]!.length
  const T = h.levels.length - 1
  const per = chunkElementsOf(wire, chunkBytes)
  const ranges = Array.from({ length: P }, (_, d) => part?.(d) ?? shardRange(n, P, d))
  const chunks = ranges.map(r => chunksOf(r.length, per))
  // Who sends what to whom, per level; lists are in ascending d so both ends agree on indices.
  const sends: Array<Map<number, number[]>> = []
  const recvs: Array<Map<number, number[]>> = []
  const reduces: Array<{ level: number; d: number; inputs: number[] }> = []
  for (let l = 1; l <= T; l++) {
    const g = h.groupOf[l]![self]!
    const sub = h.groupOf[l - 1]![self]!
    const s = new Map<number, number[]>()
    const r = new Map<number, number[]>()
    for (let d = 0; d < P; d++) {
      const relay = relayOf(h, g, d)
      if (relay === self) {
        const inputs = g.subgroups.map(H => relayOf(h, H, d))
        reduces.push({ level: l, d, inputs })
        for (const src of inputs) {
          if (src === self) continue
          let list = r.get(src)
          if (list === undefined) r.set(src, (list = []))
          list.push(d)
        }
      } else if (relayOf(h, sub, d) === self) {
        let list = s.get(relay)
        if (list === undefined) s.set(relay, (list = []))
        list.push(d)
      }
    }
    sends[l] = s
    recvs[l] = r
  }
  // Message index of (src, level, d, chunk 0).
  const base = new Map<number, number>()
  const bkey = (src: number, l: number, d: number): number => (src * 8 + l) * P + d
  for (let l = 1; l <= T; l++) {
    for (const [src, ds] of recvs[l]!) {
      let count = 0
      for (const d of ds) {
        base.set(bkey(src, l, d), count)
        count += chunks[d]!.length
      }
      op.expect(src, l, count)
    }
  }
  const pkey = (l: number, d: number, c: number): number => (l * P + d) * 2 ** 26 + c
  return async () => {
    if (T === 0) {
      const r = ranges[self]!
      out.set(x.subarray(r.start, r.start + r.length))
      return
    }
    const partials = new Slots<Float32Array>()
    const partial = async (l: number, d: number, c: number): Promise<Float32Array> => {
      const [off, len] = chunks[d]![c]!
      if (l === 0) return x.subarray(ranges[d]!.start + off, ranges[d]!.start + off + len)
      const v = await op.guard(partials.get(pkey(l, d, c)))
      partials.delete(pkey(l, d, c))
      return v
    }
    const encode = (l: number, d: number, c: number, v: Float32Array): Payload => {
      let src = v
      if (ef !== undefined && wire.kind === 'quant') {
        const res = residualFor(ef, l, n)
        const g0 = ranges[d]!.start + chunks[d]![c]![0]
        src = new Float32Array(v.length)
        for (let i = 0; i < v.length; i++) src[i] = v[i]! + res[g0 + i]!
        const body = encodeBody(wire, src)
        const back = new Float32Array(v.length)
        decodeBody(wire, body, back, false)
        for (let i = 0; i < v.length; i++) res[g0 + i] = src[i]! - back[i]!
        return { encoding: encodingOf(wire), blockSize: blockSizeOf(wire), elements: v.length, body }
      }
      return { encoding: encodingOf(wire), blockSize: blockSizeOf(wire), elements: v.length, body: encodeBody(wire, src) }
    }
    const tasks: Array<Promise<void>> = []
    for (let l = 1; l <= T; l++) {
      for (const [dst, ds] of sends[l]!) {
        tasks.push(
          (async () => {
            let index = 0
            for (const d of ds) {
              for (let c = 0; c < chunks[d]!.length; c++) {
                const v = await partial(l - 1, d, c)
                await op.send(dst, l, index++, encode(l, d, c, v))
              }
            }
          })()
        )
      }
    }
    for (const { level: l, d, inputs } of reduces) {
      tasks.push(
        (async () => {
          for (let c = 0; c < chunks[d]!.length; c++) {
            const [off, len] = chunks[d]![c]!
            let acc: Float32Array
            if (inputs.length === 1 && inputs[0] === self) {
              acc = await partial(l - 1, d, c)
            } else {
              acc = new Float32Array(len)
              for (let k = 0; k < inputs.length; k++) {
                const src = inputs[k]!
                if (src === self) {
                  const v = await partial(l - 1, d, c)
                  if (k === 0) acc.set(v)
                  else for (let i = 0; i < len; i++) acc[i] = acc[i]! + v[i]!
                } else {
                  const m = await op.recv(src, l, base.get(bkey(src, l, d))! + c)
                  op.check(src, () => {
                    checkBody(wire, m.header, len)
                    decodeBody(wire, m.body, acc, k > 0)
                  })
                }
              }
            }
            if (l === T) out.set(acc, off)
            else partials.put(pkey(l, d, c), acc)
          }
        })()
      )
    }
    await Promise.all(tasks)
  }
}
