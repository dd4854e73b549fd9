// The CUDA quantizers are byte-identical to codec/quant.ts (through the CPU backend, which
// calls it): codes and scales compared as bytes, dequantized values as exact f32.
import { quantizedSize } from '../../codec/index.ts'
import type { Backend } from '../../gpu/backend.ts'
import { cpu, gpuTest, rand, up } from './_cuda.ts'

// Blocks that exercise the scale rules, one kind per block whatever the block size: all zero,
// tiny (denormal scale), near FLT_MAX, exact halves of the scale (ties, rounded to even, where
// the kernels' reciprocal shortcut must fall back to the exact division: absmax 127 gives scale
// 1 for int8, absmax 7 for int4), then random blocks.
function special(n: number, bs: number, seed: number): Float32Array {
  const x = rand(n, seed, 10)
  const fill = (block: number, f: (i: number) => number): void => {
    for (let i = block * bs, j = 0; i < Math.min(n, (block + 1) * bs); i++, j++) x[i] = f(j)
  }
  fill(0, () => 0)
  fill(1, j => (j % 2 === 0 ? 1 : -1) * 1e-44)
  fill(2, j => (j % 3 === 0 ? -1 : 1) * 3.4e38)
  fill(3, j => (j === 0 ? 127 : (j % 254) - 127 + 0.5))
  fill(4, j => (j === 0 ? 7 : (j % 14) - 7 + 0.5))
  fill(5, j => (j % 5 === 0 ? Math.fround(1e-40) : (j % 7) - 3))
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

const VARIANTS = [
  { quant: 'u4p', dequant: 'k4' },
  { quant: 'u8', dequant: 'k4' },
  { quant: 'u8p', dequant: 'k4' },
  { quant: 'u4', dequant: 'k4' }
] as const

for (const bits of [8, 4] as const) {
  // Odd lengths leave a partial last block and a partial last unit of 4 (n % 4 = 1, 2, 3).
  for (const [bs, n, offset] of [
    [256, 100_003, 0],
    [1024, 300_001, 0],
    [1024, 1001, 0],
    [2048, 1 << 20, 0],
    [2048, 100_002, 0],
    [64, 4099, 0],
    [6, 1001, 0],
    [256, 5000, 1],
    [4096, 50_001, 0],
    [4096, 1_000_003, 0],
    [32768, 70_000, 0]
  ] as const) {
    for (const v of VARIANTS) {
      gpuTest(
        `quantize/dequantize int${bits} block ${bs}, n=${n}${offset > 0 ? ', unaligned' : ''} [${v.quant}/${v.dequant}]: byte-identical to codec (seed ${n})`,
        (t, be) => {
          be.quantKernels = { ...v }
          const x = special(n, bs, n)
          const g = quant(be, x, bits, bs, offset)
          const c = quant(cpu, x, bits, bs, 0)
          t.deepEqual(Buffer.from(g.scales.buffer), Buffer.from(c.scales.buffer), 'scales')
          t.deepEqual(Buffer.from(g.codes), Buffer.from(c.codes), 'codes')
          t.deepEqual(Buffer.from(g.deq.buffer), Buffer.from(c.deq.buffer), 'dequantized')
          t.deepEqual(Buffer.from(g.acc.buffer), Buffer.from(c.acc.buffer), 'dequantize-accumulate')
        }
      )
    }
  }
}

for (const bits of [8, 4] as const) {
  for (const bs of [256, 4096]) {
    for (const v of VARIANTS) {
      gpuTest(`quantize int${bits} block ${bs} [${v.quant}] reports every non-finite input once (first index, count)`, (t, be) => {
        be.quantKernels = { ...v }
        const n = 3 * bs + 7
        const x = rand(n, 2)
        for (const i of [bs + 3, bs + 9, 2 * bs + 1, n - 1]) x[i] = Number.NaN
        x[2 * bs + 5] = -Infinity
        const src = up(be, 'f32', x)
        const size = quantizedSize(n, { bits, blockSize: bs })
        be.quantize(be.alloc('u8', [size.dataBytes]), be.alloc('f32', [size.blocks]), src, bits, bs)
        const err = t.throws(() => be.synchronize(), { name: 'NonFiniteError' }) as unknown as { index: number; count: number }
        t.is(err.index, bs + 3)
        t.is(err.count, 5)
      })
    }
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
