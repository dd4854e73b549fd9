import { ProtocolError } from '../../core/index.ts'
import type { Moments8 } from '../../gpu/index.ts'
import type { Adam8Arrays } from '../../snapshot/index.ts'
import { TRAIN_LIMITS } from './limits.ts'

/**
 * The trainer's protocol messages, each with one schema read and written here only.
 *
 * All-gather records travel as raw 32-bit words (the collectives' u32 all-gather): a rank
 * contributes a fixed number of words per message, so the bytes on the wire (and the
 * simulator's timing, which depends on them) are those of the layout below. Integers are
 * unsigned words below {@link TRAIN_LIMITS}.maxRecordInteger; {@link NONE} (all bits set)
 * marks an empty slot. Decoding checks the length and range of every word and throws
 * {@link TrainMessageError} otherwise.
 *
 *   grow_check        2 words per rank: view epoch, ranks to add (0, 0: no proposal)
 *   recovery_point    K words per old rank (K = snapshot manifests per owner): known versions, NONE for none
 *   recovery_verdict  1 word per rank: 1 when its snapshot load found one unrecoverable, else 0
 *   resume_index      DISK_SLOTS x (step, old rank, old world size) per rank, NONE x 3 for an empty slot
 *   *_state           2 + 3L words per rank: old rank, step, then weights, AdamW m, v (L f32 each, their
 *                     bits as words); all NONE when it holds none. 8-bit AdamW: 2 + L + 2⌈L/4⌉ + 2B
 *                     words: old rank, step, weights, m codes, v codes (L bytes each, zero-padded to
 *                     a word), B absmax pairs (f32; B: the most blocks an old rank's shard has)
 *
 * Gossip messages are little-endian u32 records: `train/done` (step), `train/grow` (epoch,
 * count, step); `train/roster` is JSON (roster.ts).
 */

/** A trainer message that does not decode: wrong length, a non-integer or out-of-range field. */
export class TrainMessageError extends ProtocolError {
  static override name = 'TrainMessageError'
}

/** The word of an empty slot (decoded as -1 where a field may be empty). */
export const NONE = 0xffffffff

const MAX = TRAIN_LIMITS.maxRecordInteger

/** Reads word `i` of `words` as an integer in [min, MAX); with min -1, {@link NONE} reads as -1. */
function intAt(label: string, words: Uint32Array, i: number, min: number): number {
  const v = words[i]!
  if (v === NONE && min < 0) return -1
  if (v < min || v >= MAX) {
    throw new TrainMessageError('TRAIN_MESSAGE_FIELD', `${label}: word ${i} is ${v}, not an integer in [${min}, ${MAX})`, { label, index: i })
  }
  return v
}

/** Checks an integer to be written as a word. */
function word(label: string, v: number, min: number): number {
  if (!Number.isInteger(v) || v < min || v >= MAX) {
    throw new TrainMessageError('TRAIN_MESSAGE_FIELD', `${label}: ${v} is not an integer in [${min}, ${MAX})`, { label })
  }
  return v
}

function checkLength(label: string, words: Uint32Array, want: number): void {
  if (words.length !== want) throw new TrainMessageError('TRAIN_MESSAGE_LENGTH', `${label}: ${words.length} words, expected ${want}`, { label })
}

/** A rank's growth proposal after a step: the view to grow with and how many of its joiners. */
export interface GrowProposal {
  epoch: number
  count: number
}

/** `grow_check`: every rank's growth proposal. */
export const growCheck = {
  label: 'grow_check',
  words: 2,
  encode(p: GrowProposal | undefined): Uint32Array {
    return Uint32Array.of(word('grow_check', p?.epoch ?? 0, 0), word('grow_check', p?.count ?? 0, 0))
  },
  decode(all: Uint32Array, P: number): GrowProposal[] {
    checkLength('grow_check', all, 2 * P)
    return Array.from({ length: P }, (_, r) => ({ epoch: intAt('grow_check', all, 2 * r, 0), count: intAt('grow_check', all, 2 * r + 1, 0) }))
  }
}

/** `recovery_point`: per old rank, the newest complete snapshot versions a rank knows (K slots, NONE for none). */
export const recoveryPoint = {
  label: 'recovery_point',
  encode(known: ReadonlyArray<readonly number[]>, K: number): Uint32Array {
    const out = new Uint32Array(known.length * K).fill(NONE)
    known.forEach((vs, i) =>
      vs.slice(0, K).forEach((v, j) => {
        out[i * K + j] = word('recovery_point', v, 0)
      })
    )
    return out
  },
  /** Per old rank, the versions any rank knows. */
  decode(all: Uint32Array, P: number, oldP: number, K: number): Array<Set<number>> {
    checkLength('recovery_point', all, P * oldP * K)
    const sets = Array.from({ length: oldP }, () => new Set<number>())
    for (let i = 0; i < oldP; i++) {
      for (let r = 0; r < P; r++) {
        for (let j = 0; j < K; j++) {
          const v = intAt('recovery_point', all, r * oldP * K + i * K + j, -1)
          if (v >= 0) sets[i]!.add(v)
        }
      }
    }
    return sets
  }
}

/** `recovery_verdict`: whether each rank's snapshot load found one unrecoverable. */
export const recoveryVerdict = {
  label: 'recovery_verdict',
  encode(unrecoverable: boolean): Uint32Array {
    return Uint32Array.of(unrecoverable ? 1 : 0)
  },
  /** The first rank that reported an unrecoverable snapshot, or -1. */
  decode(all: Uint32Array, P: number): number {
    checkLength('recovery_verdict', all, P)
    for (let r = 0; r < P; r++) {
      const v = all[r]!
      if (v !== 0 && v !== 1)
        throw new TrainMessageError('TRAIN_MESSAGE_FIELD', `recovery_verdict: rank ${r} sent ${v}, not 0 or 1`, { label: 'recovery_verdict', index: r })
    }
    return all.findIndex(x => x !== 0)
  }
}

/** One disk tier file a member holds: the step, and the rank and world size that wrote it. */
export interface DiskFile {
  step: number
  rank: number
  worldSize: number
}

/** `resume_index`: the disk tier files each member holds, DISK_SLOTS slots. */
export const resumeIndex = {
  label: 'resume_index',
  slots: TRAIN_LIMITS.diskSlots,
  encode(files: ReadonlyArray<DiskFile | undefined>): Uint32Array {
    const S = TRAIN_LIMITS.diskSlots
    if (files.length > S) throw new TrainMessageError('TRAIN_MESSAGE_LENGTH', `resume_index: ${files.length} files, at most ${S}`)
    const out = new Uint32Array(S * 3).fill(NONE)
    files.forEach((f, i) => {
      if (f !== undefined) out.set([word('resume_index', f.step, 0), word('resume_index', f.rank, 0), word('resume_index', f.worldSize, 1)], i * 3)
    })
    return out
  },
  /** Per member (index), the files it offers. */
  decode(all: Uint32Array, P: number): DiskFile[][] {
    const S = TRAIN_LIMITS.diskSlots
    checkLength('resume_index', all, P * S * 3)
    return Array.from({ length: P }, (_, r) => {
      const out: DiskFile[] = []
      for (let i = 0; i < S; i++) {
        const at = (r * S + i) * 3
        const step = intAt('resume_index', all, at, -1)
        if (step < 0) continue
        out.push({ step, rank: intAt('resume_index', all, at + 1, 0), worldSize: intAt('resume_index', all, at + 2, 1) })
      }
      return out
    })
  }
}

/**
 * `resume_launch`: per member, the run nonce of its disk tier file at the step a resume loads
 * (a flag word, 1 when it has such a file with a nonce, then the nonce's 4 words).
 */
export const resumeLaunch = {
  label: 'resume_launch',
  words: 5,
  encode(nonce: Uint8Array | undefined): Uint32Array {
    const out = new Uint32Array(5)
    if (nonce === undefined) return out
    if (nonce.length !== 16) throw new TrainMessageError('TRAIN_MESSAGE_LENGTH', `resume_launch: a nonce of ${nonce.length} bytes, expected 16`)
    out[0] = 1
    out.set(new Uint32Array(Uint8Array.from(nonce).buffer), 1)
    return out
  },
  /** Per member, its file's nonce (undefined: none). */
  decode(all: Uint32Array, P: number): Array<Uint8Array | undefined> {
    checkLength('resume_launch', all, P * 5)
    return Array.from({ length: P }, (_, r) => {
      const flag = all[r * 5]!
      if (flag > 1) throw new TrainMessageError('TRAIN_MESSAGE_FIELD', `resume_launch: flag word ${r * 5} is ${flag}`, { label: 'resume_launch', index: r * 5 })
      return flag === 0 ? undefined : new Uint8Array(all.slice(r * 5 + 1, r * 5 + 5).buffer)
    })
  }
}

/** An old rank's optimizer state as handed to a new roster. */
export interface OfferedState {
  rank: number
  step: number
  weights: Float32Array
  adamM: Float32Array
  adamV: Float32Array
  /** The 8-bit optimizers' moments (then `adamM` and `adamV` are empty). */
  adam8?: Adam8Arrays
}

/**
 * `resume_state` / `grow_state`: one slot per member of (old rank, step, weights, m, v), L
 * elements each. The vectors are f32 written and read through a Float32Array view of the
 * words' buffer, so their bits travel unchanged.
 */
export const stateSlot = {
  header: 2,
  words: (L: number): number => 2 + 3 * L,
  encode(label: string, own: OfferedState | undefined, L: number): Uint32Array {
    const buf = new Uint32Array(2 + 3 * L).fill(NONE)
    if (own !== undefined) {
      buf[0] = word(label, own.rank, 0)
      buf[1] = word(label, own.step, 0)
      const f = new Float32Array(buf.buffer, buf.byteOffset, buf.length)
      f.set(own.weights, 2)
      f.set(own.adamM, 2 + L)
      f.set(own.adamV, 2 + 2 * L)
    }
    return buf
  },
  /**
   * Member `r`'s slot: undefined when it offers none, else its old rank and step and a
   * reader of its three vectors (a copy of the first `len` elements of each).
   */
  decode(
    label: string,
    all: Uint32Array,
    P: number,
    L: number,
    r: number
  ): { rank: number; step: number; part: (k: number, len: number) => Float32Array } | undefined {
    const per = 2 + 3 * L
    checkLength(label, all, P * per)
    const at = r * per
    const rank = intAt(label, all, at, -1)
    if (rank < 0) return undefined
    const step = intAt(label, all, at + 1, 0)
    const f = new Float32Array(all.buffer, all.byteOffset, all.length)
    return { rank, step, part: (k, len) => f.slice(at + 2 + k * L, at + 2 + k * L + Math.min(len, L)) }
  }
}

/**
 * `resume_state` / `grow_state` of an 8-bit run (gpu/adam8.ts; k moments: 2 for 8-bit AdamW,
 * 1 for 8-bit Lion): one slot per member of (old rank, step, weights, m codes, v codes when
 * k = 2, absmaxes, k per block), the codes as bytes of the words' buffer and the weights and
 * absmaxes as f32 bits, so everything travels unchanged. `L`: elements of the largest old
 * shard; `B`: the most blocks an old shard has.
 */
export const stateSlot8 = {
  words: (L: number, B: number, k: Moments8): number => 2 + L + k * Math.ceil(L / 4) + k * B,
  encode(label: string, own: OfferedState | undefined, L: number, B: number, k: Moments8): Uint32Array {
    const buf = new Uint32Array(stateSlot8.words(L, B, k)).fill(NONE)
    if (own === undefined) return buf
    const a = own.adam8
    if (a === undefined || a.m.length > L || a.v.length > (k === 2 ? L : 0) || a.scales.length > k * B || own.weights.length > L)
      throw new TrainMessageError('TRAIN_MESSAGE_LENGTH', `${label}: the offered 8-bit state does not fit a slot of ${L} elements and ${B} blocks`, { label })
    buf[0] = word(label, own.rank, 0)
    buf[1] = word(label, own.step, 0)
    const W = Math.ceil(L / 4)
    const f = new Float32Array(buf.buffer, buf.byteOffset, buf.length)
    const bytes = new Uint8Array(buf.buffer, buf.byteOffset, buf.byteLength)
    f.set(own.weights, 2)
    bytes.fill(0, 4 * (2 + L), 4 * (2 + L + k * W))
    bytes.set(a.m, 4 * (2 + L))
    if (k === 2) bytes.set(a.v, 4 * (2 + L + W))
    f.set(a.scales, 2 + L + k * W)
    return buf
  },
  /**
   * Member `r`'s slot: undefined when it offers none, else its old rank and step and readers
   * (copies) of its first `len` weights, first `len` codes of m (0) or v (1, k = 2 only), and
   * the absmaxes of its first `blocks` blocks (k each).
   */
  decode(
    label: string,
    all: Uint32Array,
    P: number,
    L: number,
    B: number,
    k: Moments8,
    r: number
  ):
    | {
        rank: number
        step: number
        weights: (len: number) => Float32Array
        codes: (which: 0 | 1, len: number) => Uint8Array
        scales: (blocks: number) => Float32Array
      }
    | undefined {
    const per = stateSlot8.words(L, B, k)
    checkLength(label, all, P * per)
    const at = r * per
    const rank = intAt(label, all, at, -1)
    if (rank < 0) return undefined
    const step = intAt(label, all, at + 1, 0)
    const W = Math.ceil(L / 4)
    const f = new Float32Array(all.buffer, all.byteOffset, all.length)
    const bytes = new Uint8Array(all.buffer, all.byteOffset, all.byteLength)
    return {
      rank,
      step,
      weights: len => f.slice(at + 2, at + 2 + Math.min(len, L)),
      codes: (which, len) => (which >= k ? new Uint8Array(0) : bytes.slice(4 * (at + 2 + L + which * W), 4 * (at + 2 + L + which * W) + Math.min(len, L))),
      scales: blocks => f.slice(at + 2 + L + k * W, at + 2 + L + k * W + k * Math.min(blocks, B))
    }
  }
}

/** `train/done`: the step the run finished at (u32). */
export const doneMessage = {
  bytes: 4,
  encode(step: number): Uint8Array {
    const out = new Uint8Array(4)
    new DataView(out.buffer).setUint32(0, step, true)
    return out
  }
}

/** `train/grow`: the ranks grow the run by `count` joiners of view `epoch` after `step` (three u32). */
export const growMessage = {
  bytes: 12,
  encode(g: { epoch: number; count: number; step: number }): Uint8Array {
    const msg = new Uint8Array(12)
    const d = new DataView(msg.buffer)
    d.setUint32(0, g.epoch, true)
    d.setUint32(4, g.count, true)
    d.setUint32(8, g.step, true)
    return msg
  },
  decode(data: Uint8Array): { epoch: number; count: number; step: number } {
    if (data.length !== 12) throw new TrainMessageError('TRAIN_MESSAGE_LENGTH', `train/grow: ${data.length} bytes, expected 12`)
    const d = new DataView(data.buffer, data.byteOffset, 12)
    return { epoch: d.getUint32(0, true), count: d.getUint32(4, true), step: d.getUint32(8, true) }
  }
}
