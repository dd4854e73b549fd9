import test from 'ava'
import { TRAIN_LIMITS } from '../../node/train/limits.ts'
import { TrainMessageError, growCheck, growMessage, recoveryPoint, recoveryVerdict, resumeIndex, stateSlot } from '../../node/train/messages.ts'

// Each record keeps today's layout and byte length (the simulator's timing depends on them).
test('grow_check: two f32 words per rank; a non-integer, negative or short record is a TrainMessageError', t => {
  t.deepEqual([...growCheck.encode({ epoch: 7, count: 2 })], [7, 2])
  t.deepEqual([...growCheck.encode(undefined)], [0, 0])
  t.is(growCheck.encode(undefined).byteLength, 8)
  t.deepEqual(growCheck.decode(Float32Array.of(7, 2, 7, 2), 2), [
    { epoch: 7, count: 2 },
    { epoch: 7, count: 2 }
  ])
  const bad = (words: number[], P: number, code: string): void => {
    const err = t.throws(() => growCheck.decode(Float32Array.from(words), P), { instanceOf: TrainMessageError })
    t.is(err?.code, code)
  }
  bad([7, 2.5], 1, 'TRAIN_MESSAGE_FIELD')
  bad([-3, 1], 1, 'TRAIN_MESSAGE_FIELD')
  bad([Number.NaN, 1], 1, 'TRAIN_MESSAGE_FIELD')
  bad([TRAIN_LIMITS.maxRecordInteger, 1], 1, 'TRAIN_MESSAGE_FIELD')
  bad([7, 2, 7], 2, 'TRAIN_MESSAGE_LENGTH')
  t.throws(() => growCheck.encode({ epoch: 2 ** 25, count: 1 }), { instanceOf: TrainMessageError })
})

test('recovery_point and recovery_verdict: -1 marks an empty slot; a verdict is 0 or 1', t => {
  const K = 3
  const mine = recoveryPoint.encode([[9, 4], [9]], K)
  t.deepEqual([...mine], [9, 4, -1, 9, -1, -1])
  const sets = recoveryPoint.decode(Float32Array.from([...mine, 4, -1, -1, 9, 4, -1]), 2, 2, K)
  t.deepEqual(
    sets.map(s => [...s].sort()),
    [
      [4, 9],
      [4, 9]
    ]
  )
  t.throws(() => recoveryPoint.decode(Float32Array.of(-2, -1, -1), 1, 1, K), { instanceOf: TrainMessageError })
  t.is(recoveryVerdict.decode(Float32Array.of(0, 1, 0), 3), 1)
  t.is(recoveryVerdict.decode(Float32Array.of(0, 0), 2), -1)
  t.throws(() => recoveryVerdict.decode(Float32Array.of(0, 2), 2), { instanceOf: TrainMessageError })
})

test('resume_index: DISK_SLOTS triples per member; too many files or a bad world size are refused', t => {
  const S = TRAIN_LIMITS.diskSlots
  const mine = resumeIndex.encode([{ step: 8, rank: 1, worldSize: 3 }])
  t.is(mine.length, S * 3)
  t.deepEqual(resumeIndex.decode(mine, 1), [[{ step: 8, rank: 1, worldSize: 3 }]])
  t.throws(() => resumeIndex.encode(Array.from({ length: S + 1 }, () => ({ step: 1, rank: 0, worldSize: 1 }))), { instanceOf: TrainMessageError })
  const bad = Float32Array.from(mine)
  bad[2] = 0
  t.throws(() => resumeIndex.decode(bad, 1), { instanceOf: TrainMessageError })
})

test('state slots: old rank, step, then weights, m, v; all -1 when a member holds none', t => {
  const L = 2
  const own = { rank: 1, step: 5, weights: Float32Array.of(1, 2), adamM: Float32Array.of(3, 4), adamV: Float32Array.of(5, 6) }
  const a = stateSlot.encode('grow_state', own, L)
  const b = stateSlot.encode('grow_state', undefined, L)
  t.deepEqual([...b], new Array(2 + 3 * L).fill(-1))
  const all = Float32Array.from([...b, ...a])
  t.is(stateSlot.decode('grow_state', all, 2, L, 0), undefined)
  const s = stateSlot.decode('grow_state', all, 2, L, 1)!
  t.is(s.rank, 1)
  t.is(s.step, 5)
  t.deepEqual([...s.part(2, 1)], [5])
  t.throws(() => stateSlot.decode('grow_state', all.subarray(1), 2, L, 0), { instanceOf: TrainMessageError })
})

test('train/grow: three little-endian u32; any other length is refused', t => {
  const msg = growMessage.encode({ epoch: 3, count: 1, step: 9 })
  t.deepEqual([...msg], [3, 0, 0, 0, 1, 0, 0, 0, 9, 0, 0, 0])
  t.deepEqual(growMessage.decode(msg), { epoch: 3, count: 1, step: 9 })
  t.throws(() => growMessage.decode(msg.subarray(1)), { instanceOf: TrainMessageError })
})
