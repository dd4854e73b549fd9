import test from 'ava'
import { quantize, dequantize, dequantizeAccumulate, quantizedSize, type QuantBits } from '../../codec/index.ts'
import { CpuBackend } from '../../gpu/index.ts'
import { seededRng, randomF32 } from '../helpers/seed.ts'
import { upload, readF32 } from './fd.ts'

// The backend's quantizers must be byte-identical to codec/quant.ts (the wire format).
for (const bits of [8, 4] as QuantBits[]) {
  test(`int${bits} quantize / dequantize / dequantize-accumulate on the backend are byte-identical to codec`, t => {
    const { rng } = seededRng(t, 300 + bits)
    const be = new CpuBackend()
    for (const blockSize of [2, 32, 256]) {
      for (const n of [1, 2, 31, 257, 1000]) {
        const src = randomF32(rng, n, 10 ** rng.int(-3, 3))
        if (n > 10) src.fill(0, 0, Math.min(n, blockSize)) // an all-zero block (scale 0)
        const size = quantizedSize(n, { bits, blockSize })
        const codes = be.alloc('u8', [size.dataBytes])
        const scales = be.alloc('f32', [size.blocks])
        be.quantize(codes, scales, upload(be, src), bits, blockSize)
        const ref = quantize(src, { bits, blockSize })
        t.deepEqual(be.read(codes), ref.data, `codes n=${n} bs=${blockSize}`)
        t.deepEqual(readF32(be, scales), ref.scales, `scales n=${n} bs=${blockSize}`)

        const dst = upload(be, new Float32Array(n).fill(NaN))
        be.dequantize(dst, codes, scales, bits, blockSize, false)
        t.deepEqual(readF32(be, dst), dequantize(ref))
        const accH = randomF32(rng, n)
        const acc = upload(be, accH)
        be.dequantize(acc, codes, scales, bits, blockSize, true)
        t.deepEqual(readF32(be, acc), dequantizeAccumulate(ref, accH.slice()))
      }
    }
  })
}

test('quantizer arguments: bad bits / block size / buffer sizes are InvalidArgumentError; NaN input is codec NonFiniteError', t => {
  const be = new CpuBackend()
  const src = upload(be, new Float32Array(10))
  const codes = be.alloc('u8', [10])
  const scales = be.alloc('f32', [5])
  t.throws(() => be.quantize(codes, scales, src, 3 as 8, 2), { name: 'InvalidArgumentError', message: /quantize/ })
  t.throws(() => be.quantize(codes, scales, src, 4, 3), { name: 'InvalidArgumentError', message: /quantize/ })
  t.throws(() => be.quantize(codes, scales, src, 8, 4), { name: 'InvalidArgumentError', message: /quantize: scales/ })
  t.throws(() => be.quantize(codes, be.alloc('f32', [3]), src, 4, 4), { name: 'InvalidArgumentError', message: /quantize: codes/ })
  t.throws(() => be.dequantize(be.alloc('f32', [11]), codes, scales, 8, 2, false), { name: 'InvalidArgumentError', message: /dequantize/ })
  be.write(src, Float32Array.of(NaN), 3)
  t.throws(() => be.quantize(codes, scales, src, 8, 2), { name: 'NonFiniteError' })
})
