import type { Range } from '../../core/index.ts'
import type { Message, MessageHeader } from './message.ts'
import type { Landing, OpApi } from './op.ts'
import { bytesOf, chunksOf } from './ring.ts'
import type { Group, Hierarchy } from './topology.ts'
import { F32_WIRE, checkBody, chunkElementsOf, decodeBody, encodingOf } from './wire.ts'

/**
 * All-gather over the tiers, for small vectors whose cost is messages, not bytes (a few
 * scalars per rank): each tier boundary is crossed by one message per pair of groups, where a
 * ring crosses it with every rank's part one by one. The leader of a group is its lowest rank.
 *
 * - Up, levels 1 … T−1 (phase l): the leader of each level-(l−1) subgroup sends its subgroup's
 *   block (the parts of its members, in rank order) to the leader of its level-l group.
 * - Top, level T (phase T): the leaders of the top group's subgroups (one per zone, say) send
 *   their blocks to each other: a tier boundary is crossed by one message per pair of groups.
 * - Down, levels T−1 … 1 (phase 2T − l): each level-l leader sends the whole result to the
 *   leaders of its group's other subgroups.
 *
 * Every rank ends with the same bytes in rank order (nothing is summed or re-encoded: f32
 * travels as its own bytes). A block longer than a chunk travels as several messages; the
 * phases run one after the other (no pipelining across them), which only matters for vectors
 * much larger than this is for. With one group per level (one zone) the top level is every
 * rank sending its part to every other: one hop instead of the ring's P − 1.
 */
export function hierAllGather(
  op: OpApi,
  h: Hierarchy,
  part: (r: number) => Range,
  chunkBytes: number,
  mine: Float32Array,
  out: Float32Array
): () => Promise<void> {
  const self = op.self
  const T = h.levels.length - 1
  const per = chunkElementsOf(F32_WIRE, chunkBytes)
  const leader = (g: Group): number => g.members[0]!
  const of = (l: number): Group => h.groupOf[l]![self]!
  // The highest level whose group this rank leads (0: none but its own).
  let lead = 0
  while (lead < T && leader(of(lead + 1)) === self) lead++
  const blockChunks = (g: Group): Array<[number, number]> => chunksOf(blockLength(g, part), per)
  const outChunks = chunksOf(out.length, per)
  const down = (l: number): number => 2 * T - l
  // The level whose leader sends this rank the result (T when it takes part in the top exchange).
  const from = Math.min(lead + 1, T)
  const peers = (g: Group): Group[] => g.subgroups.filter(s => leader(s) !== self)
  // Declarations: the up messages this rank collects, the top exchange, the result from above.
  for (let l = 1; l <= Math.min(lead, T - 1); l++) for (const s of peers(of(l))) op.expect(leader(s), l, blockChunks(s).length, blockLanding(s, part, per, out))
  if (lead >= T - 1 && T > 0) for (const s of peers(h.top)) op.expect(leader(s), T, blockChunks(s).length, blockLanding(s, part, per, out))
  if (from < T) op.expect(leader(of(from)), down(from), outChunks.length, (i, hd) => landing(out, outChunks[i]!, hd))
  return async () => {
    const own = part(self)
    out.set(mine, own.start)
    if (T === 0) return
    const sendBlock = async (dst: number, phase: number, g: Group): Promise<void> => {
      const chunks = blockChunks(g)
      for (let c = 0; c < chunks.length; c++) {
        const [off, n] = chunks[c]!
        await op.send(dst, phase, c, { encoding: encodingOf(F32_WIRE), blockSize: 0, elements: n, body: bytesOf(blockSlice(g, part, out, off, n)) })
      }
    }
    const recvBlock = async (src: number, phase: number, g: Group): Promise<void> => {
      const chunks = blockChunks(g)
      for (let c = 0; c < chunks.length; c++) {
        const [off, n] = chunks[c]!
        const m = await op.recv(src, phase, c)
        if (!m.landed) op.check(src, () => scatterBody(m, g, part, out, off, n))
        if (m.pooled) op.recycle(m.body)
      }
    }
    // Up: collect the subgroups' blocks at each level this rank leads, then hand its block on.
    for (let l = 1; l <= Math.min(lead, T - 1); l++) await Promise.all(peers(of(l)).map(s => recvBlock(leader(s), l, s)))
    if (lead < T - 1) await sendBlock(leader(of(lead + 1)), lead + 1, of(lead))
    else {
      const mineBlock = of(T - 1)
      await Promise.all(peers(h.top).flatMap(s => [sendBlock(leader(s), T, mineBlock), recvBlock(leader(s), T, s)]))
    }
    // Down: the result from above, then on to the subgroups this rank leads.
    if (from < T) {
      for (let c = 0; c < outChunks.length; c++) {
        const [off, n] = outChunks[c]!
        const m = await op.recv(leader(of(from)), down(from), c)
        if (!m.landed) op.check(leader(of(from)), () => decodeInto(m, out.subarray(off, off + n)))
        if (m.pooled) op.recycle(m.body)
      }
    }
    for (let l = Math.min(lead, T - 1); l >= 1; l--) {
      await Promise.all(
        peers(of(l)).map(async s => {
          for (let c = 0; c < outChunks.length; c++) {
            const [off, n] = outChunks[c]!
            await op.send(leader(s), down(l), c, { encoding: encodingOf(F32_WIRE), blockSize: 0, elements: n, body: bytesOf(out.subarray(off, off + n)) })
          }
        })
      )
    }
  }
}

/** Elements of a group's block: its members' parts. */
function blockLength(g: Group, part: (r: number) => Range): number {
  let n = 0
  for (const r of g.members) n += part(r).length
  return n
}

/** Where elements [off, off + n) of a group's block lie in the output: (output start, length) runs. */
function blockRuns(g: Group, part: (r: number) => Range, off: number, n: number): Array<[number, number]> {
  const runs: Array<[number, number]> = []
  let at = 0
  for (const r of g.members) {
    const p = part(r)
    const a = Math.max(off, at)
    const b = Math.min(off + n, at + p.length)
    if (a < b) {
      const start = p.start + a - at
      const last = runs.at(-1)
      if (last !== undefined && last[0] + last[1] === start) last[1] += b - a
      else runs.push([start, b - a])
    }
    at += p.length
  }
  return runs
}

/** Elements [off, off + n) of a group's block: a view of the output when they are contiguous there, else a copy. */
function blockSlice(g: Group, part: (r: number) => Range, out: Float32Array, off: number, n: number): Float32Array {
  const runs = blockRuns(g, part, off, n)
  if (runs.length === 1) return out.subarray(runs[0]![0], runs[0]![0] + n)
  const v = new Float32Array(n)
  let at = 0
  for (const [start, len] of runs) {
    v.set(out.subarray(start, start + len), at)
    at += len
  }
  return v
}

/** Lands a block's chunk in the output when it is one contiguous run there and the header fits. */
function blockLanding(g: Group, part: (r: number) => Range, per: number, out: Float32Array): Landing {
  const chunks = chunksOf(blockLength(g, part), per)
  return (i, h) => {
    const [off, n] = chunks[i]!
    const runs = blockRuns(g, part, off, n)
    return runs.length === 1 ? landing(out, [runs[0]![0], n], h) : undefined
  }
}

/** A view of output elements [off, off + n) for a body that fits them (f32, n elements), else undefined. */
function landing(out: Float32Array, [off, n]: [number, number], h: MessageHeader): Uint8Array | undefined {
  try {
    checkBody(F32_WIRE, h, n)
  } catch {
    return undefined
  }
  return bytesOf(out.subarray(off, off + n))
}

/** Checks message `m` for `dst.length` f32 elements and copies it there (ProtocolError otherwise). */
function decodeInto(m: Message, dst: Float32Array): void {
  checkBody(F32_WIRE, m.header, dst.length)
  decodeBody(F32_WIRE, m.body, dst, false)
}

/** Checks a block chunk that did not land and copies it to its runs in the output. */
function scatterBody(m: Message, g: Group, part: (r: number) => Range, out: Float32Array, off: number, n: number): void {
  const v = new Float32Array(n)
  decodeInto(m, v)
  let at = 0
  for (const [start, len] of blockRuns(g, part, off, n)) {
    out.set(v.subarray(at, at + len), start)
    at += len
  }
}
