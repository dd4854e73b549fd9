import test from 'ava'
import { CODEC_LIMITS, createSimdErasureCoder, createWasmErasureCoder, TooFewFragmentsError } from '../../codec/index.ts'
import type { Rng } from '../../core/index.ts'
import { hex, seededRng } from '../helpers/seed.ts'

// The simd coder's multi-row kernel against the wasm coder (the Rust crate) on random shapes:
// codes with m past one kernel round (4 rows), sizes that are not multiples of the kernel's
// stride, and stripes long enough to be cut into several cache blocks.

const randomData = (rng: Rng, k: number, size: number): Uint8Array[] => Array.from({ length: k }, () => rng.fill(new Uint8Array(size)))
const randomLoss = (rng: Rng, k: number, m: number): number[] => rng.shuffle(Array.from({ length: k + m }, (_, i) => i)).slice(0, rng.int(1, m + 1))

test('simd and wasm produce the same parity and rebuild each other on random codes, sizes and losses', t => {
  const { rng } = seededRng(t, 1901)
  for (let trial = 0; trial < 40; trial++) {
    const k = rng.int(1, 21)
    const m = rng.int(1, 10)
    // Mostly small and ragged; some long enough for several blocks when m > 4.
    const size = rng.bool(0.25) ? rng.int(40_000, 70_000) : rng.int(1, 2000)
    const what = `trial ${trial}: RS(${k},${m}) × ${size} B`
    const data = randomData(rng, k, size)
    const simd = createSimdErasureCoder({ k, m })
    const wasm = createWasmErasureCoder({ k, m })
    const ps = simd.encode(data)
    const pw = wasm.encode(data)
    if (!ps.every((p, j) => Buffer.from(p).equals(Buffer.from(pw[j]!)))) {
      t.fail(`${what}: parity differs from wasm`)
      return
    }
    const lost = randomLoss(rng, k, m)
    const frags = [...data, ...pw].map((f, i) => (lost.includes(i) ? undefined : f))
    const out = simd.reconstruct(frags)
    if (!out.every((o, i) => o.length === size && Buffer.from(o).equals(Buffer.from(data[i]!)))) {
      t.fail(`${what}: lost [${lost}] not rebuilt`)
      return
    }
  }
  t.pass()
})

test('simd in-place stripe: parity equals the wasm coder and lost data is rebuilt where it lies', t => {
  const { rng } = seededRng(t, 1902)
  for (const [k, m, size] of [
    [10, 4, 100_000],
    [4, 2, 33],
    [3, 7, 5000]
  ] as const) {
    const coder = createSimdErasureCoder({ k, m })
    const stripe = coder.stripe(size)
    t.is(stripe.fragments.length, k + m)
    const data = randomData(rng, k, size)
    data.forEach((d, i) => stripe.fragments[i]!.set(d))
    stripe.encode()
    const pw = createWasmErasureCoder({ k, m }).encode(data)
    t.deepEqual(stripe.fragments.slice(k).map(hex), pw.map(hex), `RS(${k},${m}) parity`)
    for (let trial = 0; trial < 5; trial++) {
      const lost = randomLoss(rng, k, m)
      for (const i of lost) stripe.fragments[i]!.fill(0xa5)
      stripe.reconstruct(stripe.fragments.map((_, i) => !lost.includes(i)))
      t.deepEqual(stripe.fragments.slice(0, k).map(hex), data.map(hex), `RS(${k},${m}) lost [${lost}]`)
      stripe.encode()
    }
  }
})

test('simd in-place stripe: fragments stay valid while the shared coder memory grows', t => {
  const coder = createSimdErasureCoder({ k: 2, m: 1 })
  const stripe = coder.stripe(64)
  stripe.fragments[0]!.fill(1)
  stripe.fragments[1]!.fill(2)
  // A larger stripe through the copying API grows the shared kernel memory, not the stripe's.
  coder.encode([new Uint8Array(4 << 20), new Uint8Array(4 << 20)])
  stripe.encode()
  t.is(stripe.fragments[2]!.byteLength, 64)
  t.deepEqual(stripe.fragments[2], Uint8Array.from(createWasmErasureCoder({ k: 2, m: 1 }).encode([stripe.fragments[0]!, stripe.fragments[1]!])[0]!))
})

test('simd in-place stripe: too few present is a typed error naming the missing fragments', t => {
  const stripe = createSimdErasureCoder({ k: 3, m: 2 }).stripe(16)
  const err = t.throws(() => stripe.reconstruct([false, true, false, true, false]), { instanceOf: TooFewFragmentsError })
  t.deepEqual(err.missing, [0, 2, 4])
  t.throws(() => stripe.reconstruct([true, true]), { name: 'InvalidArgumentError' }, 'wrong flag count')
})

test('simd in-place stripe: sizes are validated and caps checked before allocating (limit: maxStripeBytes)', t => {
  const coder = createSimdErasureCoder({ k: 4, m: 2 })
  t.throws(() => coder.stripe(0), { name: 'InvalidArgumentError' })
  t.throws(() => coder.stripe(1.5), { name: 'InvalidArgumentError' })
  t.throws(() => coder.stripe(CODEC_LIMITS.maxFragmentBytes + 1), { name: 'LimitExceededError' })
  t.throws(() => coder.stripe(Math.floor(CODEC_LIMITS.maxStripeBytes / 6) + 1), { name: 'LimitExceededError' })
})
