import test from 'ava'
import { Rng, seedFromEnv, LimitExceededError } from '../../core/index.ts'

const draw = (r: Rng, n: number): number[] => Array.from({ length: n }, () => r.u32())

test('same seed gives the same stream; different seeds differ', t => {
  t.deepEqual(draw(Rng.fromSeed(42), 64), draw(Rng.fromSeed(42), 64))
  t.notDeepEqual(draw(Rng.fromSeed(42), 64), draw(Rng.fromSeed(43), 64))
  t.deepEqual(draw(Rng.fromSeed('run-a'), 8), draw(Rng.fromSeed('run-a'), 8))
  t.notDeepEqual(draw(Rng.fromSeed('run-a'), 8), draw(Rng.fromSeed('run-b'), 8))
  t.notDeepEqual(draw(Rng.fromSeed(0), 8), draw(Rng.fromSeed(2 ** 32), 8), 'high seed bits matter')
})

test('golden stream: the generator must not change silently (replays depend on it)', t => {
  // xoshiro128** reference output for state {1, 2, 3, 4} (the authors' C code).
  t.deepEqual(draw(Rng.fromState([9, 9, 9, 9, 1, 2, 3, 4]), 6), [11520, 0, 5927040, 70819200, 2031721883, 1637235492])
  // Seeding and splitting are ours: pinned so a refactor cannot change every recorded seed.
  t.deepEqual(draw(Rng.fromSeed(1), 6), [4137312682, 3272325513, 1211030949, 849055244, 3619756483, 744770198])
  t.is(Rng.fromSeed(1).split('node-3').u32(), 779190231)
})

test('split is keyed by label, independent of how much the parent drew', t => {
  const a = Rng.fromSeed(7)
  const b = Rng.fromSeed(7)
  draw(b, 1000)
  t.deepEqual(draw(a.split('node-1'), 16), draw(b.split('node-1'), 16))
  t.notDeepEqual(draw(a.split('node-1'), 16), draw(a.split('node-2'), 16))
  t.notDeepEqual(draw(a.split('x'), 16), draw(a, 16), 'child differs from parent')
  t.throws(() => a.split('x'.repeat(2000)), { instanceOf: LimitExceededError })
})

test('state round-trips mid-stream', t => {
  const r = Rng.fromSeed(99)
  draw(r, 37)
  const saved = r.state()
  const next = draw(r, 20)
  t.deepEqual(draw(Rng.fromState(saved), 20), next)
  t.throws(() => Rng.fromState([1, 2, 3]), { name: 'InvalidArgumentError' })
  t.throws(() => Rng.fromState([1, 2, 3, 4, 0, 0, 0, 0]), { name: 'InvalidArgumentError' })
})

test('int is in range and roughly uniform; float in [0,1); bytes fill; shuffle permutes', t => {
  const r = Rng.fromSeed(5)
  const counts = new Array(6).fill(0)
  for (let i = 0; i < 60_000; i++) {
    const x = r.int(0, 6)
    t.true(x >= 0 && x < 6)
    counts[x]++
  }
  for (const c of counts) t.true(Math.abs(c - 10_000) < 500, `bucket count ${c}`)
  for (let i = 0; i < 1000; i++) {
    const f = r.float()
    t.true(f >= 0 && f < 1)
  }
  const big = r.int(0, 2 ** 40)
  t.true(big >= 0 && big < 2 ** 40)
  t.throws(() => r.int(3, 3), { name: 'InvalidArgumentError' })
  const bytes = r.fill(new Uint8Array(11))
  t.true(bytes.some(b => b !== 0))
  const items = Array.from({ length: 50 }, (_, i) => i)
  const shuffled = r.shuffle([...items])
  t.notDeepEqual(shuffled, items)
  t.deepEqual(
    [...shuffled].sort((x, y) => x - y),
    items
  )
  let sum = 0
  let sq = 0
  for (let i = 0; i < 20_000; i++) {
    const z = r.normal()
    sum += z
    sq += z * z
  }
  t.true(Math.abs(sum / 20_000) < 0.05)
  t.true(Math.abs(sq / 20_000 - 1) < 0.05)
})

test('bad seeds are refused', t => {
  t.throws(() => Rng.fromSeed(-1), { name: 'InvalidArgumentError' })
  t.throws(() => Rng.fromSeed(1.5), { name: 'InvalidArgumentError' })
  t.is(seedFromEnv(3, {}), 3)
  t.is(seedFromEnv(3, { ZEROMESH_SEED: '17' }), 17)
  t.throws(() => seedFromEnv(3, { ZEROMESH_SEED: 'abc' }), { name: 'InvalidArgumentError' })
})
