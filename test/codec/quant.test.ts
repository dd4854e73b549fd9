import test from 'ava'
import {
  quantize,
  dequantize,
  dequantizeAccumulate,
  validateQuantized,
  quantizedSize,
  checksum64,
  NonFiniteError,
  type QuantBits,
  type Quantized
} from '../../codec/index.ts'
import { ProtocolError } from '../../core/index.ts'
import { seededRng, randomF32, hex } from '../helpers/seed.ts'

const FLT_MAX = 3.4028234663852886e38
const SMALLEST = 1.401298464324817e-45

/**
 * The stated bound: every element is within half a block scale of its original, plus one f32
 * rounding of the product q * scale (relative 2^-24) and one denormal step.
 */
function checkBound(t: { true: (c: boolean, m?: string) => void }, src: Float32Array, q: Quantized, label: string): void {
  const out = dequantize(q)
  let worst = 0
  for (let i = 0; i < src.length; i++) {
    const scale = q.scales[Math.floor(i / q.blockSize)]!
    const err = Math.abs(src[i]! - out[i]!)
    const bound = scale / 2 + Math.abs(out[i]!) * 2 ** -24 + SMALLEST
    if (!(err <= bound)) {
      t.true(false, `${label}: element ${i} = ${src[i]} dequantized to ${out[i]}, error ${err} > bound ${bound}`)
      return
    }
    worst = Math.max(worst, scale > 0 ? err / scale : 0)
  }
  t.true(worst <= 0.5 + 1e-6, `${label}: worst error ${worst} scales`)
}

for (const bits of [8, 4] as QuantBits[]) {
  test(`int${bits}: random inputs stay within scale/2 for many lengths and block sizes`, t => {
    const { rng } = seededRng(t, 1000 + bits)
    for (const blockSize of [2, 8, 64, 4096]) {
      for (const n of [0, 1, 2, 3, 7, 63, 64, 65, 1000, 4097, 20_000]) {
        const scale = 10 ** rng.int(-6, 6)
        const src = randomF32(rng, n, scale)
        const q = quantize(src, { bits, blockSize })
        const sizes = quantizedSize(n, { bits, blockSize })
        t.is(q.scales.length, sizes.blocks)
        t.is(q.data.length, bits === 8 ? n : Math.ceil(n / 2))
        checkBound(t, src, q, `n=${n} bs=${blockSize}`)
      }
    }
  })

  test(`int${bits}: constant, zero, denormal and huge blocks`, t => {
    const qmax = bits === 8 ? 127 : 7
    const cases: Array<[string, Float32Array]> = [
      ['constant', new Float32Array(100).fill(3.25)],
      ['negative constant', new Float32Array(100).fill(-0.75)],
      ['zero', new Float32Array(100)],
      ['negative zero', new Float32Array(100).fill(-0)],
      ['denormal', Float32Array.from({ length: 100 }, (_, i) => (i - 50) * 1e-41)],
      ['smallest denormal', Float32Array.from({ length: 10 }, (_, i) => (i % 2) * SMALLEST)],
      ['huge', Float32Array.from({ length: 100 }, (_, i) => (i % 2 === 0 ? FLT_MAX : -FLT_MAX * (i / 100)))],
      ['mixed magnitudes', Float32Array.from({ length: 100 }, (_, i) => (i === 0 ? 1e30 : 1e-30))]
    ]
    for (const [name, src] of cases) {
      const q = quantize(src, { bits, blockSize: 16 })
      checkBound(t, src, q, name)
      const out = dequantize(q)
      t.true(out.every(Number.isFinite), `${name}: dequantized values are finite`)
      if (name === 'zero' || name === 'negative zero') {
        t.true(q.scales.every(s => s === 0))
        t.true(out.every(x => x === 0))
      }
      if (name === 'constant') {
        t.true(
          out.every(x => Math.abs(x - 3.25) <= 3.25 * 2 ** -23),
          'a constant block comes back (almost) exactly'
        )
        t.is((q.data[0]! << 24) >> (bits === 8 ? 24 : 28), qmax, 'constant maps to +qmax')
      }
    }
  })

  test(`int${bits}: NaN and Inf are reported with index and count, not smeared`, t => {
    for (const bad of [Number.NaN, Infinity, -Infinity]) {
      const src = new Float32Array(50).fill(1)
      src[17] = bad
      src[40] = bad
      const err = t.throws(() => quantize(src, { bits, blockSize: 8 }), { instanceOf: NonFiniteError })
      t.is(err.index, 17)
      t.is(err.count, 2)
      t.true(Object.is(err.value, bad))
    }
  })

  test(`int${bits}: dequantize-accumulate adds in f32`, t => {
    const { rng } = seededRng(t, 77 + bits)
    const src = randomF32(rng, 999, 5)
    const acc = randomF32(rng, 999, 1)
    const q = quantize(src, { bits, blockSize: 32 })
    const deq = dequantize(q)
    const expected = acc.map((a, i) => Math.fround(a + deq[i]!))
    t.deepEqual(dequantizeAccumulate(q, acc.slice()), expected)
  })
}

test('rounding is half-to-even and codes stay in the symmetric range', t => {
  // absmax 127 gives scale exactly 1, so x / scale = x.
  const src = Float32Array.from([127, 2.5, 3.5, -2.5, -3.5, 0.5, 1.5, -126.5, -127])
  const q = quantize(src, { bits: 8, blockSize: 16 })
  t.is(q.scales[0], 1)
  t.deepEqual(Array.from(new Int8Array(q.data.buffer)), [127, 2, 4, -2, -4, 0, 2, -126, -127])
  const q4 = quantize(Float32Array.from([7, -7, 2.5, 0.5, 1.5]), { bits: 4, blockSize: 6 })
  t.is(q4.scales[0], 1)
  // pairs (7,-7) (2,0) (2,pad): low nibble first, two's complement.
  t.deepEqual(Array.from(q4.data), [0x97, 0x02, 0x02])
})

test('golden bytes: the format must not change silently (GPU kernels must match it)', t => {
  const src = Float32Array.from({ length: 1000 }, (_, i) => Math.sin(i * 0.37) * (1 + (i % 13)))
  const q8 = quantize(src, { bits: 8, blockSize: 64 })
  const q4 = quantize(src, { bits: 4, blockSize: 64 })
  t.is(hex(q8.data.subarray(0, 16)), '000714233139372910eec7a285f6efec')
  t.is(checksum64(q8.data).toString(16), 'ff6199e5fddc94f8')
  t.is(checksum64(new Uint8Array(q8.scales.buffer)).toString(16), '7c047ff5ddf12df3')
  t.is(checksum64(q4.data).toString(16), '8af9426ab9e70860')
})

test('validation of received quantized vectors', t => {
  const q = quantize(Float32Array.from([1, -2, 3, 0.5, 0.25]), { bits: 4, blockSize: 2 })
  t.notThrows(() => validateQuantized(q))
  const bad = (mut: (x: Quantized) => void, what: string): void => {
    const c: Quantized = { ...q, scales: q.scales.slice(), data: q.data.slice() }
    mut(c)
    const err = t.throws(() => dequantize(c), { instanceOf: ProtocolError }, what)
    t.is(err.code, 'QUANT_INVALID', what)
  }
  bad(c => {
    c.scales[1] = Number.NaN
  }, 'NaN scale')
  bad(c => {
    c.scales[0] = -1
  }, 'negative scale')
  bad(c => {
    c.scales[0] = Infinity
  }, 'infinite scale')
  bad(c => {
    c.data = c.data.subarray(1)
  }, 'short data')
  bad(c => {
    c.scales = c.scales.subarray(1)
  }, 'missing scale')
  bad(c => {
    c.data[2] = 0x13
  }, 'padding nibble set')
  bad(c => {
    c.data[0] = 0x08
  }, 'code -8')
  bad(c => {
    c.blockSize = 3
  }, 'odd int4 block size')
  const q8 = quantize(Float32Array.from([1, 2]), { bits: 8, blockSize: 2 })
  q8.data[1] = 0x80
  t.throws(() => dequantize(q8), { instanceOf: ProtocolError }, 'code -128')
  t.throws(() => quantize(new Float32Array(4), { bits: 8, blockSize: 0 }), { name: 'InvalidArgumentError' })
  t.throws(() => quantize(new Float32Array(4), { bits: 8, blockSize: 65537 }), { name: 'InvalidArgumentError' }, 'limit: maxQuantBlockSize')
  t.throws(() => quantize(new Float32Array(4), { bits: 5 as QuantBits, blockSize: 4 }), { name: 'InvalidArgumentError' })
  t.throws(() => dequantize(q, new Float32Array(3)), { name: 'InvalidArgumentError' })
})
