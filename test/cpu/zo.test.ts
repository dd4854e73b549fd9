import test from 'ava'
import { InvalidArgumentError } from '../../core/index.ts'
import { CpuBackend, Gpt, GPT_PRESETS, zoNegative, zoSeed } from '../../gpu/index.ts'

const be = new CpuBackend()

test('zeroth-order signs: deterministic, about half negative, different for another seed, step or index range', t => {
  const s0 = zoSeed(7, 0)
  t.deepEqual(zoSeed(7, 0), s0)
  t.notDeepEqual(zoSeed(7, 1), s0)
  t.notDeepEqual(zoSeed(8, 0), s0)
  t.true(s0.every(w => Number.isInteger(w) && w >= 0 && w <= 0xffff_ffff))
  const n = 200_000
  let neg = 0
  let agree = 0
  const s1 = zoSeed(7, 1)
  for (let i = 0; i < n; i++) {
    const a = zoNegative(s0, i)
    if (a) neg++
    if (a === zoNegative(s1, i)) agree++
  }
  t.true(Math.abs(neg / n - 0.5) < 0.01, `negative fraction ${neg / n}`)
  t.true(Math.abs(agree / n - 0.5) < 0.01, `two steps' signs agree on ${agree / n}`)
  // Indices past 2^32 are not those below it again.
  let same = 0
  for (let i = 0; i < 10_000; i++) if (zoNegative(s0, i) === zoNegative(s0, i + 2 ** 32)) same++
  t.true(Math.abs(same / 10_000 - 0.5) < 0.05, `indices i and i + 2^32 agree on ${same / 10_000}`)
})

test('addSigns adds ±scale, one rounded f32 addition per element, and a view at an offset gets the whole tensor’s signs', t => {
  const n = 4099
  const w0 = Float32Array.from({ length: n }, (_, i) => Math.fround(Math.sin(i) * 3))
  const seed = zoSeed(3, 9)
  const whole = be.alloc('f32', [n])
  be.write(whole, w0)
  const low = be.alloc('bf16', [n])
  be.addSigns(whole, 1e-3, seed, 0, low)
  const got = be.read(whole) as Float32Array
  const s = Math.fround(1e-3)
  for (let i = 0; i < n; i++) {
    const want = Math.fround(w0[i]! + (zoNegative(seed, i) ? -s : s))
    if (got[i] !== want) return t.fail(`element ${i}: ${got[i]} != ${want}`)
  }
  // The same through two views of one buffer with their offsets.
  const parts = be.alloc('f32', [n])
  be.write(parts, w0)
  be.addSigns(be.view(parts, 0, [1000]), 1e-3, seed, 0)
  be.addSigns(be.view(parts, 1000, [n - 1000]), 1e-3, seed, 1000)
  t.deepEqual(be.read(parts), got)
  t.true(
    (be.read(low) as Uint16Array).some(x => x !== 0),
    'the bf16 copy is written'
  )
})

test('addSigns refuses a bad scale, seed or offset with a typed error naming the op', t => {
  const x = be.alloc('f32', [8])
  for (const [scale, seed, offset] of [
    [Number.NaN, [1, 2], 0],
    [Infinity, [1, 2], 0],
    [1, [1], 0],
    [1, [1, -1], 0],
    [1, [1, 2 ** 32], 0],
    [1, [1, 1.5], 0],
    [1, [1, 2], -1],
    [1, [1, 2], 2 ** 53]
  ] as Array<[number, number[], number]>) {
    const e = t.throws(() => be.addSigns(x, scale, seed as unknown as [number, number], offset), { instanceOf: InvalidArgumentError })
    t.regex(e.message, /^addSigns: /)
  }
  const i32 = be.alloc('i32', [8])
  t.throws(() => be.addSigns(i32, 1, [1, 2], 0), { instanceOf: InvalidArgumentError })
})

test("a forward-only model (params 'forward') gives the full model's loss, holds no gradients or optimizer state, and refuses backward and update", t => {
  const cfg = { ...GPT_PRESETS.tiny, vocabSize: 64, paddedVocabSize: 64 }
  const opts = { B: 2, T: 8, dtype: 'f32' as const, seed: 5 }
  const full = new Gpt(be, cfg, opts)
  const fwd = new Gpt(be, cfg, { ...opts, params: 'forward' })
  const tokens = Int32Array.from({ length: 16 }, (_, i) => (i * 7) % 64)
  const targets = Int32Array.from({ length: 16 }, (_, i) => (i * 5 + 1) % 64)
  t.is(fwd.forward(tokens, targets), full.forward(tokens, targets))
  t.true(fwd.paramBytes() * 3.9 < full.paramBytes(), `${fwd.paramBytes()} vs ${full.paramBytes()} bytes`)
  const seed = zoSeed(5, 0)
  fwd.addSigns(1e-2, seed)
  full.addSigns(1e-2, seed)
  t.deepEqual(fwd.getParams(), full.getParams())
  t.is(fwd.forward(tokens, targets), full.forward(tokens, targets))
  t.throws(() => fwd.backward(), { instanceOf: InvalidArgumentError, message: /forward-only/ })
  t.throws(() => fwd.update({ lr: 1e-3, step: 1 }), { instanceOf: InvalidArgumentError, message: /forward-only/ })
  t.throws(() => fwd.getGrads(), { instanceOf: InvalidArgumentError, message: /forward-only/ })
  const dst = be.alloc('f32', [10])
  fwd.copyParams(dst, 3)
  t.deepEqual(be.read(dst), fwd.getParams().subarray(3, 13))
  t.throws(() => fwd.copyParams(dst, fwd.layout.length - 5), { instanceOf: InvalidArgumentError })
  full.dispose()
  fwd.dispose()
})
