import test from 'ava'
import { TRAIN_LIMITS } from '../../node/train/limits.ts'
import {
  NONE,
  TrainMessageError,
  growCheck,
  growMessage,
  recoveryPoint,
  recoveryVerdict,
  resumeIndex,
  stateSlot,
  stateSlot8
} from '../../node/train/messages.ts'

// Each record keeps today's layout and byte length (the simulator's timing depends on them).
test('grow_check: two u32 words per rank; an out-of-range or short record is a TrainMessageError', t => {
  t.deepEqual([...growCheck.encode({ epoch: 7, count: 2 })], [7, 2])
  t.deepEqual([...growCheck.encode(undefined)], [0, 0])
  t.true(growCheck.encode(undefined) instanceof Uint32Array)
  t.is(growCheck.encode(undefined).byteLength, 8)
  t.deepEqual(growCheck.decode(Uint32Array.of(7, 2, 7, 2), 2), [
    { epoch: 7, count: 2 },
    { epoch: 7, count: 2 }
  ])
  const bad = (words: number[], P: number, code: string): void => {
    const err = t.throws(() => growCheck.decode(Uint32Array.from(words), P), { instanceOf: TrainMessageError })
    t.is(err?.code, code)
  }
  bad([NONE, 1], 1, 'TRAIN_MESSAGE_FIELD')
  bad([0x7fc00000, 1], 1, 'TRAIN_MESSAGE_FIELD')
  bad([TRAIN_LIMITS.maxRecordInteger, 1], 1, 'TRAIN_MESSAGE_FIELD')
  bad([7, 2, 7], 2, 'TRAIN_MESSAGE_LENGTH')
  t.throws(() => growCheck.encode({ epoch: 2 ** 25, count: 1 }), { instanceOf: TrainMessageError })
  t.throws(() => growCheck.encode({ epoch: 2.5, count: 1 }), { instanceOf: TrainMessageError })
  t.throws(() => growCheck.encode({ epoch: -1, count: 1 }), { instanceOf: TrainMessageError })
})

test('recovery_point and recovery_verdict: NONE marks an empty slot; a verdict is 0 or 1', t => {
  const K = 3
  const mine = recoveryPoint.encode([[9, 4], [9]], K)
  t.deepEqual([...mine], [9, 4, NONE, 9, NONE, NONE])
  const sets = recoveryPoint.decode(Uint32Array.from([...mine, 4, NONE, NONE, 9, 4, NONE]), 2, 2, K)
  t.deepEqual(
    sets.map(s => [...s].sort()),
    [
      [4, 9],
      [4, 9]
    ]
  )
  t.throws(() => recoveryPoint.decode(Uint32Array.of(NONE - 1, NONE, NONE), 1, 1, K), { instanceOf: TrainMessageError })
  t.throws(() => recoveryPoint.decode(Uint32Array.of(NONE, NONE), 1, 1, K), { instanceOf: TrainMessageError })
  t.is(recoveryVerdict.decode(Uint32Array.of(0, 1, 0), 3), 1)
  t.is(recoveryVerdict.decode(Uint32Array.of(0, 0), 2), -1)
  t.deepEqual([...recoveryVerdict.encode(true)], [1])
  t.throws(() => recoveryVerdict.decode(Uint32Array.of(0, 2), 2), { instanceOf: TrainMessageError })
})

test('resume_index: DISK_SLOTS triples per member; too many files or a bad world size are refused', t => {
  const S = TRAIN_LIMITS.diskSlots
  const mine = resumeIndex.encode([{ step: 8, rank: 1, worldSize: 3 }])
  t.is(mine.length, S * 3)
  t.deepEqual([...mine.subarray(3)], new Array(S * 3 - 3).fill(NONE))
  t.deepEqual(resumeIndex.decode(mine, 1), [[{ step: 8, rank: 1, worldSize: 3 }]])
  t.throws(() => resumeIndex.encode(Array.from({ length: S + 1 }, () => ({ step: 1, rank: 0, worldSize: 1 }))), { instanceOf: TrainMessageError })
  const bad = Uint32Array.from(mine)
  bad[2] = 0
  t.throws(() => resumeIndex.decode(bad, 1), { instanceOf: TrainMessageError })
  bad[2] = NONE
  t.throws(() => resumeIndex.decode(bad, 1), { instanceOf: TrainMessageError })
})

test('state slots: old rank, step, then weights, m, v as f32 bits; all NONE when a member holds none', t => {
  const L = 2
  // NaN payloads (a signalling one too) and -0 travel bit for bit: the vectors are never read
  // as JS numbers, which could quiet or canonicalize a NaN. The inputs are built from words.
  const f32 = (...words: number[]): Float32Array => new Float32Array(Uint32Array.from(words).buffer)
  const own = { rank: 1, step: 5, weights: f32(0x3f800000, 0x80000000), adamM: f32(0x7fa00001, 0x40800000), adamV: f32(0x40a00000, 0xffc12345) }
  const a = stateSlot.encode('grow_state', own, L)
  const b = stateSlot.encode('grow_state', undefined, L)
  t.true(a instanceof Uint32Array)
  t.deepEqual([...b], new Array(2 + 3 * L).fill(NONE))
  t.deepEqual([...a.subarray(0, 2)], [1, 5])
  const all = Uint32Array.from([...b, ...a])
  t.is(stateSlot.decode('grow_state', all, 2, L, 0), undefined)
  const s = stateSlot.decode('grow_state', all, 2, L, 1)!
  t.is(s.rank, 1)
  t.is(s.step, 5)
  const bits = (f: Float32Array): number[] => [...new Uint32Array(f.buffer, f.byteOffset, f.length)]
  t.deepEqual(bits(s.part(0, 2)), [0x3f800000, 0x80000000])
  t.deepEqual(bits(s.part(1, 2)), [0x7fa00001, 0x40800000])
  t.deepEqual(bits(s.part(2, 2)), [0x40a00000, 0xffc12345])
  t.deepEqual(bits(s.part(2, 1)), [0x40a00000])
  t.throws(() => stateSlot.decode('grow_state', all.subarray(1), 2, L, 0), { instanceOf: TrainMessageError })
  const badRank = Uint32Array.from(all)
  badRank[0] = TRAIN_LIMITS.maxRecordInteger
  t.throws(() => stateSlot.decode('grow_state', badRank, 2, L, 0), { instanceOf: TrainMessageError })
})

test('8-bit state slots: old rank, step, weights (f32 bits), m and v codes (bytes), absmax pairs (8-bit Lion: m codes, one absmax a block); a state larger than the slot is refused', t => {
  const L = 5
  const B = 2
  const f32 = (...words: number[]): Float32Array => new Float32Array(Uint32Array.from(words).buffer)
  const own = {
    rank: 2,
    step: 7,
    weights: f32(0x3f800000, 0x80000000, 0x7fa00001, 1, 2),
    adamM: new Float32Array(0),
    adamV: new Float32Array(0),
    adam8: { m: Uint8Array.from([0, 127, 255, 1, 9]), v: Uint8Array.from([3, 4, 5, 6, 7]), scales: f32(0x3f000000, 0xffc12345) }
  }
  const a = stateSlot8.encode('resume_state', own, L, B, 2)
  t.is(a.length, stateSlot8.words(L, B, 2))
  t.is(a.length, 2 + 5 + 2 * 2 + 4)
  const b = stateSlot8.encode('resume_state', undefined, L, B, 2)
  t.true(b.every(w => w === NONE))
  const all = Uint32Array.from([...b, ...a])
  t.is(stateSlot8.decode('resume_state', all, 2, L, B, 2, 0), undefined)
  const s = stateSlot8.decode('resume_state', all, 2, L, B, 2, 1)!
  t.deepEqual([s.rank, s.step], [2, 7])
  const bits = (f: Float32Array): number[] => [...new Uint32Array(f.buffer, f.byteOffset, f.length)]
  t.deepEqual(bits(s.weights(5)), [0x3f800000, 0x80000000, 0x7fa00001, 1, 2])
  t.deepEqual([...s.codes(0, 5)], [0, 127, 255, 1, 9])
  t.deepEqual([...s.codes(1, 4)], [3, 4, 5, 6])
  // One block of the slot's two: the pair is the state's, the second pair's words are NONE.
  t.deepEqual(bits(s.scales(1)), [0x3f000000, 0xffc12345])
  t.throws(() => stateSlot8.encode('resume_state', own, L, 0, 2), { instanceOf: TrainMessageError })
  t.throws(() => stateSlot8.encode('resume_state', { ...own, adam8: undefined }, L, B, 2), { instanceOf: TrainMessageError })
  t.throws(() => stateSlot8.decode('resume_state', all.subarray(1), 2, L, B, 2, 0), { instanceOf: TrainMessageError })
  // 8-bit Lion (one moment): m codes and one absmax per block, no v; a state with v codes does not fit.
  const lion = { ...own, adam8: { m: own.adam8.m, v: new Uint8Array(0), scales: f32(0x3f000000, 0x40000000) } }
  const c = stateSlot8.encode('grow_state', lion, L, B, 1)
  t.is(c.length, stateSlot8.words(L, B, 1))
  t.is(c.length, 2 + 5 + 2 + 2)
  const one = stateSlot8.decode('grow_state', c, 1, L, B, 1, 0)!
  t.deepEqual(bits(one.weights(5)), [0x3f800000, 0x80000000, 0x7fa00001, 1, 2])
  t.deepEqual([...one.codes(0, 5)], [0, 127, 255, 1, 9])
  t.is(one.codes(1, 5).length, 0)
  t.deepEqual(bits(one.scales(2)), [0x3f000000, 0x40000000])
  t.deepEqual(bits(one.scales(1)), [0x3f000000])
  t.throws(() => stateSlot8.encode('grow_state', own, L, B, 1), { instanceOf: TrainMessageError, message: /does not fit a slot/ })
})

test('train/grow: three little-endian u32; any other length is refused', t => {
  const msg = growMessage.encode({ epoch: 3, count: 1, step: 9 })
  t.deepEqual([...msg], [3, 0, 0, 0, 1, 0, 0, 0, 9, 0, 0, 0])
  t.deepEqual(growMessage.decode(msg), { epoch: 3, count: 1, step: 9 })
  t.throws(() => growMessage.decode(msg.subarray(1)), { instanceOf: TrainMessageError })
})
