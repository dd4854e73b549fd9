import test from 'ava'
import {
  encodeTensorFrames,
  encodeQuantizedFrames,
  concatFrame,
  decodeFrame,
  FrameReader,
  TensorAssembler,
  quantize,
  dequantize,
  quantizedChunk,
  byteLength,
  type DType,
  type TensorView
} from '../../codec/index.ts'
import { seededRng, hex } from '../helpers/seed.ts'

const DTYPES: DType[] = ['f32', 'bf16', 'f16', 'i8', 'u8', 'i4', 'i32']

test('every dtype round-trips through frames in any order, including scalars and empty tensors', t => {
  const { rng } = seededRng(t, 11)
  const shapes = [[], [0], [3, 0, 2], [1], [7], [5, 3], [2, 3, 4, 5], [1001]]
  for (const dtype of DTYPES) {
    for (const shape of shapes) {
      for (const maxBodyBytes of [8, 64, 4 * 1024 * 1024]) {
        const n = shape.reduce((a, b) => a * b, 1)
        const data = rng.fill(new Uint8Array(byteLength(dtype, n)))
        if (dtype === 'i4' && n % 2 === 1 && data.length > 0) data[data.length - 1]! &= 0x0f
        const frames = encodeTensorFrames({ dtype, shape, data }, { tag: 9, maxBodyBytes })
        t.true(frames.every(f => f.body.length <= maxBodyBytes))
        const asm = new TensorAssembler({ dtype, shape, tag: 9 })
        let out: TensorView | undefined
        for (const f of rng.shuffle(frames.map(concatFrame))) {
          t.is(out, undefined, 'nothing is returned before the last chunk')
          out = asm.add(decodeFrame(f))
        }
        t.truthy(out, `${dtype}[${shape.join(',')}] max ${maxBodyBytes} completes`)
        t.deepEqual(out!.shape, shape)
        t.true(Buffer.from(out!.data).equals(Buffer.from(data)), `${dtype}[${shape.join(',')}] bytes equal`)
      }
    }
  }
})

test('frame header layout is pinned (golden bytes)', t => {
  const data = new Uint8Array(new Float32Array([1, -2, 0.5]).buffer)
  const [f] = encodeTensorFrames({ dtype: 'f32', shape: [3], data }, { tag: 0x01020304 })
  // magic 'ZMTF', v1, f32, rank 1, flags 0, tag, chunk 0 of 1, block 0, offset 0, count 3,
  // 12 body bytes, body xxh64, dim 3, header xxh64: all little-endian.
  t.is(
    hex(f!.header),
    '5a4d5446' +
      '01' +
      '01' +
      '01' +
      '00' +
      '04030201' +
      '00000000' +
      '01000000' +
      '00000000' +
      '0000000000000000' +
      '0300000000000000' +
      '0c00000000000000' +
      '1ae7c6bdc0c61893' +
      '0300000000000000' +
      'c8d6437e4f6e9842'
  )
  t.is(f!.header.length, 72)
})

test('quantized frames carry whole blocks and dequantize on receipt to the same values', t => {
  const { rng } = seededRng(t, 12)
  for (const bits of [8, 4] as const) {
    for (const n of [1, 63, 64, 65, 5000]) {
      const src = Float32Array.from({ length: n }, () => rng.normal())
      const q = quantize(src, { bits, blockSize: 16 })
      const frames = encodeQuantizedFrames(q, { maxBodyBytes: 100, tag: 3 })
      const out = new Float32Array(n)
      for (const f of rng.shuffle(frames.map(concatFrame))) {
        const d = decodeFrame(f)
        t.true(d.header.quantized)
        t.is(d.header.elementOffset % 16, 0)
        const chunk = quantizedChunk(d)
        out.set(dequantize(chunk), d.header.elementOffset)
      }
      t.deepEqual(out, dequantize(q), `int${bits} n=${n}`)
    }
  }
})

test('FrameReader splits a byte stream cut at random points into verified frames', t => {
  const { rng } = seededRng(t, 13)
  const tensors = Array.from({ length: 20 }, (_, i) => {
    const n = rng.int(0, 3000)
    return { dtype: 'f32' as DType, shape: [n], data: rng.fill(new Uint8Array(4 * n)), tag: i }
  })
  const frames = tensors.flatMap(x => encodeTensorFrames(x, { tag: x.tag, maxBodyBytes: 1024 }).map(concatFrame))
  const stream = Buffer.concat(frames)
  const reader = new FrameReader()
  const got: Uint8Array[] = []
  let pos = 0
  while (pos < stream.length) {
    const len = rng.int(1, 3000)
    for (const d of reader.push(stream.subarray(pos, pos + len)))
      got.push(concatFrame({ header: frames[got.length]!.subarray(0, d.header.headerBytes), body: d.body }))
    pos += len
  }
  reader.end()
  t.is(got.length, frames.length)
  got.forEach((g, i) => t.true(Buffer.from(g).equals(Buffer.from(frames[i]!)), `frame ${i}`))
  t.is(reader.buffered, 0)
})

test('encoding refuses inconsistent input with typed errors', t => {
  t.throws(() => encodeTensorFrames({ dtype: 'f32', shape: [3], data: new Uint8Array(11) }), { name: 'InvalidArgumentError' })
  t.throws(() => encodeTensorFrames({ dtype: 'x' as DType, shape: [1], data: new Uint8Array(1) }), { name: 'InvalidArgumentError' })
  t.throws(() => encodeTensorFrames({ dtype: 'u8', shape: [-1], data: new Uint8Array(0) }), { name: 'InvalidArgumentError' })
  t.throws(
    () => encodeTensorFrames({ dtype: 'u8', shape: [1, 1, 1, 1, 1, 1, 1, 1, 1], data: new Uint8Array(1) }),
    { name: 'InvalidArgumentError' },
    'limit: maxTensorRank'
  )
  t.throws(() => encodeTensorFrames({ dtype: 'u8', shape: [1], data: new Uint8Array(1) }, { tag: -1 }), { name: 'InvalidArgumentError' })
  t.throws(
    () => encodeTensorFrames({ dtype: 'u8', shape: [1], data: new Uint8Array(1) }, { maxBodyBytes: 4 * 1024 * 1024 + 1 }),
    { name: 'InvalidArgumentError' },
    'limit: maxFrameBodyBytes'
  )
  const q = quantize(new Float32Array(10), { bits: 8, blockSize: 64 })
  t.throws(() => encodeQuantizedFrames(q, { maxBodyBytes: 32 }), { name: 'InvalidArgumentError' }, 'a block larger than a frame')
  t.throws(() => encodeQuantizedFrames(q, { shape: [3, 3] }), { name: 'InvalidArgumentError' })
})
