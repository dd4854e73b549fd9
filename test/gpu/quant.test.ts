// The CUDA quantizers are byte-identical to codec/quant.ts (through the CPU backend, which
// calls it): codes and scales compared as bytes, dequantized values as exact f32.
import { quantizedSize } from '../../codec/index.ts'
import type { Backend } from '../../gpu/backend.ts'
import { cpu, gpuTest, rand, up } from './_cuda.ts'

function special(n: number, seed: number): Float32Array {
  const x = rand(n, seed, 10)
  // Blocks that exercise the scale rules: all zero, tiny (denormal scale), near FLT_MAX, ties.
  for (let i = 0; i < Math.min(n, 64); i++) x[i] = 0
  for (let i = 64; i < Math.min(n, 128); i++) x[i] = (i % 2 === 0 ? 1 : -1) * 1e-44
  for (let i = 128; i < Math.min(n, 192); i++) x[i] = (i % 3 === 0 ? -1 : 1) * 3.4e38
  for (let i = 192; i < Math.min(n, 256); i++) x[i] = (i - 224) * 0.5
  // Exact halves of the scale (ties, rounded to even), where the kernels' reciprocal shortcut
  // must fall back to the exact division: absmax 127 gives scale 1 for int8, 7 for int4.
  for (let i = 256; i < Math.min(n, 320); i++) x[i] = i === 256 ? 127 : i - 288 + 0.5
  for (let i = 320; i < Math.min(n, 384); i++) x[i] = i === 320 ? 7 : (i % 14) - 7 + 0.5
  return x
}

function quant(
  be: Backend,
  x: Float32Array,
  bits: 8 | 4,
  bs: number,
  offset: number
): { codes: Uint8Array; scales: Float32Array; deq: Float32Array; acc: Float32Array } {
  const size = quantizedSize(x.length, { bits, blockSize: bs })
  // `offset` puts the source at an unaligned address to exercise the generic kernels.
  const base = be.alloc('f32', [x.length + offset])
  be.write(base, x, offset)
  const src = be.view(base, offset, [x.length])
  const codes = be.alloc('u8', [size.dataBytes])
  const scales = be.alloc('f32', [size.blocks])
  be.quantize(codes, scales, src, bits, bs)
  const dq = be.alloc('f32', [x.length])
  be.dequantize(dq, codes, scales, bits, bs, false)
  const acc = up(be, 'f32', rand(x.length, 99))
  be.dequantize(acc, codes, scales, bits, bs, true)
  return { codes: be.read(codes) as Uint8Array, scales: be.read(scales) as Float32Array, deq: be.read(dq) as Float32Array, acc: be.read(acc) as Float32Array }
}

for (const bits of [8, 4] as const) {
  for (const [bs, n, offset] of [
    [256, 100_003, 0],
    [2048, 1 << 20, 0],
    [64, 4099, 0],
    [6, 1001, 0],
    [256, 5000, 1],
    [4096, 50_001, 0],
    [32768, 70_000, 0]
  ] as const) {
    gpuTest(`quantize/dequantize int${bits} block ${bs}, n=${n}${offset > 0 ? ', unaligned' : ''}: byte-identical to codec (seed ${n})`, (t, be) => {
      const x = special(n, n)
      const g = quant(be, x, bits, bs, offset)
      const c = quant(cpu, x, bits, bs, 0)
      t.deepEqual(Buffer.from(g.scales.buffer), Buffer.from(c.scales.buffer), 'scales')
      t.deepEqual(Buffer.from(g.codes), Buffer.from(c.codes), 'codes')
      t.deepEqual(Buffer.from(g.deq.buffer), Buffer.from(c.deq.buffer), 'dequantized')
      t.deepEqual(Buffer.from(g.acc.buffer), Buffer.from(c.acc.buffer), 'dequantize-accumulate')
    })
  }
}

gpuTest('quantize reports a non-finite input as NonFiniteError (first index, count)', (t, be) => {
  const x = rand(1000, 1)
  x[10] = Number.NaN
  x[500] = Infinity
  const src = up(be, 'f32', x)
  const codes = be.alloc('u8', [1000])
  const scales = be.alloc('f32', [4])
  be.quantize(codes, scales, src, 8, 256)
  const err = t.throws(() => be.synchronize(), { name: 'NonFiniteError' }) as unknown as { index: number; count: number }
  t.is(err.index, 10)
  t.is(err.count, 2)
  t.notThrows(() => be.synchronize(), 'the flag is cleared once reported')
})

gpuTest('dequantize rejects the code -128 / -8 as a protocol error', (t, be) => {
  const codes = be.alloc('u8', [8])
  be.write(codes, new Uint8Array([0, 1, 0x80, 3, 0, 0, 0, 0]))
  const scales = up(be, 'f32', new Float32Array([1]))
  const dst = be.alloc('f32', [8])
  be.dequantize(dst, codes, scales, 8, 8, false)
  t.throws(() => be.synchronize(), { name: 'ProtocolError' })
  const c4 = be.alloc('u8', [4])
  be.write(c4, new Uint8Array([0x21, 0x08, 0, 0]))
  be.dequantize(dst, c4, scales, 4, 8, false)
  t.throws(() => be.read(dst), { name: 'ProtocolError' })
})
