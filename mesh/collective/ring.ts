import type { Range } from '../../core/index.ts'
import { ENCODINGS, type Message, type MessageHeader } from './message.ts'
import { Slots, type Landing, type OpApi, type Payload } from './op.ts'
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
  /**
   * Elements travel as their own bytes (f32 on an f32 wire, raw words): a body lands in the
   * output as it arrives, and is forwarded from there (the same bytes, the same checksum).
   */
  identity: boolean
  encode: (off: number, n: number) => Payload
  /** Checks a received header for `n` elements (ProtocolError otherwise). */
  check: (h: MessageHeader, n: number) => void
  decodeInto: (body: Uint8Array, at: number, n: number) => void
  /** Bytes of output elements [at, at + n). */
  outBytes: (at: number, n: number) => Uint8Array
}

/** The bytes of a typed array's elements (a view, no copy). */
export function bytesOf(a: Float32Array | Uint16Array | Uint32Array): Uint8Array {
  return new Uint8Array(a.buffer, a.byteOffset, a.byteLength)
}

/** A codec that sends `mine`'s own bytes and copies received bodies into `out` as they are. */
function rawCodec(mine: Uint16Array | Uint32Array, out: Uint16Array | Uint32Array, per: number, encoding: number, check: GatherCodec['check']): GatherCodec {
  const width = mine.BYTES_PER_ELEMENT
  return {
    per,
    identity: true,
    encode: (off, n) => ({ encoding, blockSize: 0, elements: n, body: bytesOf(mine.subarray(off, off + n)) }),
    check,
    decodeInto: (body, at, n) => bytesOf(out).set(body.subarray(0, width * n), width * at),
    outBytes: (at, n) => bytesOf(out.subarray(at, at + n))
  }
}

function gatherCodec(g: GatherInput, chunkBytes: number): GatherCodec {
  if (g.kind === 'raw16') return rawCodec(g.mine, g.out, Math.max(1, Math.floor(chunkBytes / 2)), ENCODINGS.bf16, (h, n) => checkBody(BF16_WIRE, h, n))
  if (g.kind === 'raw32') return rawCodec(g.mine, g.out, chunkElementsOf(F32_WIRE, chunkBytes), ENCODINGS.u32, checkWords)
  const w = g.wire
  const identity = w.kind === 'f32'
  return {
    per: chunkElementsOf(w, chunkBytes),
    identity,
    encode: (off, n) => {
      const v = g.mine.subarray(off, off + n)
      return { encoding: encodingOf(w), blockSize: blockSizeOf(w), elements: n, body: identity ? bytesOf(v) : encodeBody(w, v) }
    },
    check: (h, n) => checkBody(w, h, n),
    decodeInto: (body, at, n) => decodeBody(w, body, g.out.subarray(at, at + n), false),
    outBytes: (at, n) => bytesOf(g.out.subarray(at, at + n))
  }
}

/** Whether `check` accepts header `h` for `n` elements (a landing only takes bodies of the planned shape). */
function fits(check: (h: MessageHeader, n: number) => void, h: MessageHeader, n: number): boolean {
  try {
    check(h, n)
    return true
  } catch {
    return false
  }
}

/**
 * The messages a ring position receives, in order: step s carries the chunks of the shard of
 * position `shardAt(s)`. `locate(i)` names message i's step, shard, offset and length.
 */
function receivePlan(
  Q: number,
  shardAt: (s: number) => number,
  lengthOf: (j: number) => number,
  per: number
): { count: number; locate: (i: number) => { s: number; j: number; off: number; n: number } } {
  const first: number[] = [0]
  for (let s = 0; s < Q - 1; s++) first.push(first[s]! + Math.ceil(lengthOf(shardAt(s)) / per))
  return {
    count: first[Q - 1]!,
    locate: i => {
      let lo = 0
      let hi = Q - 2
      while (lo < hi) {
        const mid = (lo + hi + 1) >> 1
        if (first[mid]! <= i) lo = mid
        else hi = mid - 1
      }
      const j = shardAt(lo)
      const off = (i - first[lo]!) * per
      return { s: lo, j, off, n: Math.min(per, lengthOf(j) - off) }
    }
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
  const rx = receivePlan(
    Q,
    s => mod(pos - 1 - s, Q),
    j => part(j).length,
    codec.per
  )
  const land: Landing = (i, h) => {
    const { j, off, n } = rx.locate(i)
    return codec.identity && fits(codec.check, h, n) ? codec.outBytes(part(j).start + off, n) : undefined
  }
  if (Q > 1) op.expect(prev, phase, rx.count, land)
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
      for (let i = 0; i < rx.count; i++) {
        const { s, j, off, n } = rx.locate(i)
        const c = off / codec.per
        const at = part(j).start + off
        const m = await op.recv(prev, phase, i)
        if (!m.landed) {
          op.check(prev, () => {
            codec.check(m.header, n)
            codec.decodeInto(m.body, at, n)
          })
        }
        const h = m.header
        const fwd = s < Q - 2
        // The body's buffer is done with once decoded, unless it is itself forwarded.
        if (m.pooled && (codec.identity || !fwd)) op.recycle(m.body)
        if (!fwd) continue
        const body = codec.identity ? codec.outBytes(at, n) : m.body
        const onReleased = !codec.identity && m.pooled ? () => op.recycle(m.body) : undefined
        slots.put(key(j, c), { encoding: h.encoding, blockSize: h.blockSize, elements: n, body, checksum: h.bodyChecksum, onReleased })
      }
    }
    await Promise.all([sender(), receiver()])
  }
}

/**
 * Ring reduce-scatter of `x` (the whole vector) into `out` (this position's shard), in the
 * order documented above. Wire: f32 (exact) or bf16 (partials rounded per hop).
 *
 * On an f32 wire no partial sum is copied: a received body (a pooled buffer) becomes the
 * partial sum in place (body + own) and is sent on as it is, and the last hop's body lands in
 * `out` and is summed there.
 */
export function ringReduceScatter(op: OpApi, plan: RingPlan, wire: Wire, x: Float32Array, out: Float32Array): () => Promise<void> {
  const { ring, pos, part, phase } = plan
  const Q = ring.length
  const per = chunkElementsOf(wire, plan.chunkBytes)
  const f32 = wire.kind === 'f32'
  const next = ring[(pos + 1) % Q]!
  const prev = ring[mod(pos - 1, Q)]!
  const rx = receivePlan(
    Q,
    s => mod(pos - s - 2, Q),
    j => part(j).length,
    per
  )
  const land: Landing = (i, h) => {
    const { s, off, n } = rx.locate(i)
    return f32 && s === Q - 2 && fits((hh, nn) => checkBody(wire, hh, nn), h, n) ? bytesOf(out.subarray(off, off + n)) : undefined
  }
  if (Q > 1) op.expect(prev, phase, rx.count, land)
  return async () => {
    const mine = part(pos)
    if (Q === 1) {
      out.set(x.subarray(mine.start, mine.start + mine.length))
      return
    }
    const partials = new Slots<Float32Array>()
    const key = (j: number, c: number): number => j * 2 ** 32 + c
    const payload = (v: Float32Array, pooled: boolean): Payload => {
      const head = { encoding: encodingOf(wire), blockSize: blockSizeOf(wire), elements: v.length }
      if (f32) return { ...head, body: bytesOf(v), onReleased: pooled ? () => op.recycle(v) : undefined }
      const body = encodeBody(wire, v)
      if (pooled) op.recycle(v)
      return { ...head, body }
    }
    const sender = async (): Promise<void> => {
      let index = 0
      for (let s = 0; s < Q - 1; s++) {
        const j = mod(pos - s - 1, Q)
        const list = chunksOf(part(j).length, per)
        for (let c = 0; c < list.length; c++) {
          const [off, n] = list[c]!
          let p: Payload
          if (s === 0) {
            p = payload(x.subarray(part(j).start + off, part(j).start + off + n), false)
          } else {
            p = payload(await op.guard(partials.get(key(j, c))), true)
            partials.delete(key(j, c))
          }
          await op.send(next, phase, index++, p)
        }
      }
    }
    const receiver = async (): Promise<void> => {
      for (let i = 0; i < rx.count; i++) {
        const { s, j, off, n } = rx.locate(i)
        const own = x.subarray(part(j).start + off, part(j).start + off + n)
        const m = await op.recv(prev, phase, i)
        if (s === Q - 2) {
          const acc = out.subarray(off, off + n)
          if (!m.landed) decodeChecked(op, prev, wire, m, acc)
          addInPlace(acc, own)
          continue
        }
        const acc = partialOf(op, prev, wire, m, n)
        addInPlace(acc, own)
        partials.put(key(j, off / per), acc)
      }
    }
    await Promise.all([sender(), receiver()])
  }
}

/** acc = f32(acc + own), element by element: the hop's step of the documented order. */
function addInPlace(acc: Float32Array, own: Float32Array): void {
  for (let i = 0; i < acc.length; i++) acc[i] = acc[i]! + own[i]!
}

/** Checks message `m` from `src` for `acc.length` elements and decodes it into `acc`; a pooled body is given back. */
function decodeChecked(op: OpApi, src: number, wire: Wire, m: Message, acc: Float32Array): void {
  op.check(src, () => {
    checkBody(wire, m.header, acc.length)
    decodeBody(wire, m.body, acc, false)
  })
  if (m.pooled) op.recycle(m.body)
}

/**
 * A pooled f32 buffer holding the received partial sum of `n` elements: on an f32 wire the
 * pooled body itself (offset 0, so aligned), else a fresh pooled buffer it is decoded into.
 */
function partialOf(op: OpApi, src: number, wire: Wire, m: Message, n: number): Float32Array {
  if (wire.kind === 'f32' && m.pooled && m.body.byteOffset % 4 === 0) {
    op.check(src, () => checkBody(wire, m.header, n))
    return new Float32Array(m.body.buffer, m.body.byteOffset, n)
  }
  const acc = new Float32Array(op.buffer(4 * n).buffer, 0, n)
  decodeChecked(op, src, wire, m, acc)
  return acc
}
