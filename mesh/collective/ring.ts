import type { Range } from '../../core/index.ts'
import { ENCODINGS, type MessageHeader } from './message.ts'
import { Slots, type OpApi, type Payload } from './op.ts'
import { BF16_WIRE, F32_WIRE, blockSizeOf, checkBody, checkWords, chunkElementsOf, decodeBody, encodeBody, encodingOf, type Wire } from './wire.ts'

/**
 * Bandwidth-optimal ring algorithms over a group of ranks in ring order. Each shard is cut
 * into chunks and pipelined: a chunk is forwarded as soon as it arrives, so the ring stays
 * busy while the shard is still streaming in. Each rank sends (Q-1)/Q of the data.
 *
 * Reduction order (reduce-scatter): the shard owned by ring position j is summed along the
 * ring starting after its owner, left to right in f32:
 *   ((x[j+1] + x[j+2]) + x[j+3]) + ... + x[j]          (positions mod Q)
 * with the partial sum rounded to the wire encoding (bf16) before each hop when one is used.
 * This is fixed by the view, so results are bitwise reproducible; `serialRingReduce` in the
 * tests computes the same order serially.
 */
export interface RingPlan {
  /** Ranks in ring order. */
  ring: readonly number[]
  /** This rank's position. */
  pos: number
  /** Output range of the shard owned by ring position j. */
  part: (j: number) => Range
  chunkBytes: number
  phase: number
}

/** Chunks [offset, length) of a range of `n` elements. */
export function chunksOf(n: number, per: number): Array<[number, number]> {
  const out: Array<[number, number]> = []
  for (let off = 0; off < n; off += per) out.push([off, Math.min(per, n - off)])
  return out
}

const mod = (a: number, q: number): number => ((a % q) + q) % q

/**
 * What an all-gather carries: f32 input travels as `wire`; unquantized bf16 words travel
 * as-is (kind 'raw16'); raw 32-bit words (kind 'raw32', integer records) travel as-is in
 * f32's chunks and byte counts.
 */
export type GatherInput =
  | { kind: 'f32'; wire: Wire; mine: Float32Array; out: Float32Array }
  | { kind: 'raw16'; mine: Uint16Array; out: Uint16Array }
  | { kind: 'raw32'; mine: Uint32Array; out: Uint32Array }

interface GatherCodec {
  per: number
  encode: (off: number, n: number) => Payload
  /** Checks a received header for `n` elements (ProtocolError otherwise). */
  check: (h: MessageHeader, n: number) => void
  decodeInto: (body: Uint8Array, at: number, n: number) => void
}

function gatherCodec(g: GatherInput, chunkBytes: number): GatherCodec {
  if (g.kind === 'raw16') {
    return {
      per: Math.max(1, Math.floor(chunkBytes / 2)),
      encode: (off, n) => ({ encoding: ENCODINGS.bf16, blockSize: 0, elements: n, body: new Uint8Array(g.mine.slice(off, off + n).buffer) }),
      check: (h, n) => checkBody(BF16_WIRE, h, n),
      decodeInto: (body, at, n) => {
        const src = body.byteOffset % 2 === 0 ? body : body.slice()
        g.out.set(new Uint16Array(src.buffer, src.byteOffset, n), at)
      }
    }
  }
  if (g.kind === 'raw32') {
    const out = g.out
    return {
      per: chunkElementsOf(F32_WIRE, chunkBytes),
      encode: (off, n) => ({ encoding: ENCODINGS.u32, blockSize: 0, elements: n, body: new Uint8Array(g.mine.slice(off, off + n).buffer) }),
      check: checkWords,
      decodeInto: (body, at, n) => {
        const src = body.byteOffset % 4 === 0 ? body : body.slice()
        out.set(new Uint32Array(src.buffer, src.byteOffset, n), at)
      }
    }
  }
  const w = g.wire
  return {
    per: chunkElementsOf(w, chunkBytes),
    encode: (off, n) => ({ encoding: encodingOf(w), blockSize: blockSizeOf(w), elements: n, body: encodeBody(w, g.mine.subarray(off, off + n)) }),
    check: (h, n) => checkBody(w, h, n),
    decodeInto: (body, at, n) => decodeBody(w, body, g.out.subarray(at, at + n), false)
  }
}

/**
 * Ring all-gather. Declares its messages on `op` (call `ready()` after all plans of the
 * operation are declared) and returns the function that runs it.
 */
export function ringAllGather(op: OpApi, plan: RingPlan, g: GatherInput): () => Promise<void> {
  const { ring, pos, part, phase } = plan
  const Q = ring.length
  const codec = gatherCodec(g, plan.chunkBytes)
  const chunks = (j: number): Array<[number, number]> => chunksOf(part(j).length, codec.per)
  const next = ring[(pos + 1) % Q]!
  const prev = ring[mod(pos - 1, Q)]!
  let expected = 0
  for (let s = 0; s < Q - 1; s++) expected += chunks(mod(pos - 1 - s, Q)).length
  if (Q > 1) op.expect(prev, phase, expected)
  return async () => {
    const own = chunks(pos).map(([off, n]) => codec.encode(off, n))
    // Own shard: what every other member will decode from the same bytes.
    chunks(pos).forEach(([off, n], c) => codec.decodeInto(own[c]!.body, part(pos).start + off, n))
    if (Q === 1) return
    const slots = new Slots<Payload>()
    const key = (j: number, c: number): number => j * 2 ** 32 + c
    own.forEach((p, c) => slots.put(key(pos, c), p))
    const sender = async (): Promise<void> => {
      let index = 0
      for (let s = 0; s < Q - 1; s++) {
        const j = mod(pos - s, Q)
        for (let c = 0; c < chunks(j).length; c++) {
          const p = await op.guard(slots.get(key(j, c)))
          slots.delete(key(j, c))
          await op.send(next, phase, index++, p)
        }
      }
    }
    const receiver = async (): Promise<void> => {
      let index = 0
      for (let s = 0; s < Q - 1; s++) {
        const j = mod(pos - 1 - s, Q)
        const list = chunks(j)
        for (let c = 0; c < list.length; c++) {
          const [off, n] = list[c]!
          const m = await op.recv(prev, phase, index++)
          op.check(prev, () => {
            codec.check(m.header, n)
            codec.decodeInto(m.body, part(j).start + off, n)
          })
          if (s < Q - 2)
            slots.put(key(j, c), { encoding: m.header.encoding, blockSize: m.header.blockSize, elements: n, body: m.body, checksum: m.header.bodyChecksum })
        }
      }
    }
    await Promise.all([sender(), receiver()])
  }
}

/**
 * Ring reduce-scatter of `x` (the whole vector) into `out` (this position's shard), in the
 * order documented above. Wire: f32 (exact) or bf16 (partials rounded per hop).
 */
export function ringReduceScatter(op: OpApi, plan: RingPlan, wire: Wire, x: Float32Array, out: Float32Array): () => Promise<void> {
  const { ring, pos, part, phase } = plan
  const Q = ring.length
  const per = chunkElementsOf(wire, plan.chunkBytes)
  const chunks = (j: number): Array<[number, number]> => chunksOf(part(j).length, per)
  const next = ring[(pos + 1) % Q]!
  const prev = ring[mod(pos - 1, Q)]!
  let expected = 0
  for (let s = 0; s < Q - 1; s++) expected += chunks(mod(pos - s - 2, Q)).length
  if (Q > 1) op.expect(prev, phase, expected)
  return async () => {
    const mine = part(pos)
    if (Q === 1) {
      out.set(x.subarray(mine.start, mine.start + mine.length))
      return
    }
    const partials = new Slots<Float32Array>()
    const key = (j: number, c: number): number => j * 2 ** 32 + c
    const payload = (v: Float32Array): Payload => ({ encoding: encodingOf(wire), blockSize: blockSizeOf(wire), elements: v.length, body: encodeBody(wire, v) })
    const sender = async (): Promise<void> => {
      let index = 0
      for (let s = 0; s < Q - 1; s++) {
        const j = mod(pos - s - 1, Q)
        const list = chunks(j)
        for (let c = 0; c < list.length; c++) {
          const [off, n] = list[c]!
          let v: Float32Array
          if (s === 0) {
            v = x.subarray(part(j).start + off, part(j).start + off + n)
          } else {
            v = await op.guard(partials.get(key(j, c)))
            partials.delete(key(j, c))
          }
          await op.send(next, phase, index++, payload(v))
        }
      }
    }
    const receiver = async (): Promise<void> => {
      let index = 0
      for (let s = 0; s < Q - 1; s++) {
        const j = mod(pos - s - 2, Q)
        const list = chunks(j)
        const base = part(j).start
        for (let c = 0; c < list.length; c++) {
          const [off, n] = list[c]!
          const m = await op.recv(prev, phase, index++)
          const acc = s === Q - 2 ? out.subarray(off, off + n) : new Float32Array(n)
          op.check(prev, () => {
            checkBody(wire, m.header, n)
            decodeBody(wire, m.body, acc, false)
          })
          for (let i = 0; i < n; i++) acc[i] = acc[i]! + x[base + off + i]!
          if (s < Q - 2) partials.put(key(j, c), acc)
        }
      }
    }
    await Promise.all([sender(), receiver()])
  }
}
