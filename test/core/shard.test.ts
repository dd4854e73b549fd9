import test from 'ava'
import { assembleFlat, shardRange } from '../../core/index.ts'
import { GPT_PRESETS, gptLayout } from '../../gpu/index.ts'

// The one shard layout: the collectives split by it, and export / the simulator join shards
// back with assembleFlat. A world size that does not divide the length is the case two
// layouts once disagreed on (balanced in the collectives, padded to the ceiling in export).

const P = 5
const n = 1001 // odd, and 1001 % 5 = 1: one shard longer than the rest

test('shardRange with 5 ranks and an odd length tiles [0, n) in rank order, lengths differing by at most one', t => {
  let at = 0
  const lengths: number[] = []
  for (let r = 0; r < P; r++) {
    const s = shardRange(n, P, r)
    t.is(s.start, at, `rank ${r} starts where rank ${r - 1} ends`)
    lengths.push(s.length)
    at += s.length
  }
  t.is(at, n)
  t.deepEqual(lengths, [201, 200, 200, 200, 200])
  // Fewer elements than ranks: the last ranks hold empty shards, still tiling.
  t.deepEqual(
    Array.from({ length: P }, (_, r) => shardRange(3, P, r)),
    [
      { start: 0, length: 1 },
      { start: 1, length: 1 },
      { start: 2, length: 1 },
      { start: 3, length: 0 },
      { start: 3, length: 0 }
    ]
  )
})

test('assembleFlat inverts the sharding (5 ranks, odd length, and the tiny GPT layout)', t => {
  for (const len of [n, 4, 0, gptLayout(GPT_PRESETS.tiny).length]) {
    const flat = Float32Array.from({ length: len }, (_, i) => i * 0.5 - 7)
    const shards = Array.from({ length: P }, (_, r) => {
      const s = shardRange(len, P, r)
      return flat.slice(s.start, s.start + s.length)
    })
    t.deepEqual(assembleFlat(shards, len), flat, `length ${len}`)
  }
})

test('assembleFlat refuses a shard of the wrong length for its rank (a padded layout included)', t => {
  const padded = Array.from({ length: P }, () => new Float32Array(Math.ceil(n / P)))
  const err = t.throws(() => assembleFlat(padded, n), { name: 'InvalidArgumentError' })
  t.regex(err.message, /shard 1 has 201 elements, expected 200/)
  const right = Array.from({ length: P }, (_, r) => new Float32Array(shardRange(n, P, r).length))
  t.notThrows(() => assembleFlat(right, n), 'positive control: the balanced shards are accepted')
  t.throws(() => assembleFlat([], n), { name: 'InvalidArgumentError' })
})
