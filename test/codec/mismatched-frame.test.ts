import test from 'ava'
import { encodeTensorFrames, concatFrame, decodeFrame, TensorAssembler, DTYPE_CODES } from '../../codec/index.ts'
import { forgeHeader, protocolCode } from '../helpers/bytes.ts'

const f32 = concatFrame(encodeTensorFrames({ dtype: 'f32', shape: [2, 3], data: new Uint8Array(24) })[0]!)

test('wrong dtype: unknown codes and unexpected dtypes are typed errors', t => {
  t.is(
    protocolCode(() => decodeFrame(forgeHeader(f32, v => v.setUint8(5, 200)))),
    'DTYPE_UNKNOWN'
  )
  t.is(
    protocolCode(() => new TensorAssembler({ dtype: 'bf16' }).add(decodeFrame(f32))),
    'DTYPE_MISMATCH'
  )
  // Relabel as bf16 without fixing the length: the body length no longer matches.
  t.is(
    protocolCode(() => decodeFrame(forgeHeader(f32, v => v.setUint8(5, DTYPE_CODES.bf16)))),
    'LENGTH_MISMATCH'
  )
  t.is(
    protocolCode(() => decodeFrame(forgeHeader(f32, v => v.setUint8(7, 1)))),
    'DTYPE_MISMATCH',
    'quantized flag on f32'
  )
  t.is(
    protocolCode(() => decodeFrame(forgeHeader(f32, v => v.setUint8(7, 4)))),
    'FRAME_BAD_HEADER',
    'unknown flag'
  )
})

test('wrong shape and wrong length are typed errors', t => {
  t.is(
    protocolCode(() => new TensorAssembler({ shape: [3, 2] }).add(decodeFrame(f32))),
    'SHAPE_MISMATCH'
  )
  t.is(
    protocolCode(() => new TensorAssembler({ shape: [2, 3, 1] }).add(decodeFrame(f32))),
    'SHAPE_MISMATCH'
  )
  t.is(
    protocolCode(() => decodeFrame(forgeHeader(f32, v => v.setBigUint64(40, 20n, true)))),
    'LENGTH_MISMATCH'
  )
  t.is(
    protocolCode(() => decodeFrame(forgeHeader(f32, v => v.setBigUint64(56, 3n, true)))),
    'CHUNK_MISMATCH',
    'count no longer tiles the shape'
  )
  t.is(
    protocolCode(() => decodeFrame(forgeHeader(f32, v => v.setUint32(20, 16, true)))),
    'FRAME_BAD_HEADER',
    'block size on a dense frame'
  )
  t.is(
    protocolCode(() => decodeFrame(forgeHeader(f32, v => v.setUint8(4, 2)))),
    'FRAME_BAD_VERSION'
  )
})

test('chunk lies: duplicates, overlaps, gaps and layout changes are refused', t => {
  const data = new Uint8Array(40).map((_, i) => i)
  const frames = encodeTensorFrames({ dtype: 'u8', shape: [40], data }, { maxBodyBytes: 16 }).map(concatFrame)
  t.is(frames.length, 3)
  const asm = new TensorAssembler()
  asm.add(decodeFrame(frames[0]!))
  t.is(
    protocolCode(() => asm.add(decodeFrame(frames[0]!))),
    'CHUNK_MISMATCH',
    'duplicate chunk'
  )
  // Chunk 1 claiming to start at 8 (overlapping chunk 0): its own layout check refuses it.
  t.is(
    protocolCode(() => decodeFrame(forgeHeader(frames[1]!, v => v.setBigUint64(24, 8n, true)))),
    'CHUNK_MISMATCH'
  )
  // Index past the count.
  t.is(
    protocolCode(() => decodeFrame(forgeHeader(frames[1]!, v => v.setUint32(12, 3, true)))),
    'CHUNK_MISMATCH'
  )
  // A frame of another tensor layout (one chunk of 40) mixed into this assembly.
  const other = concatFrame(encodeTensorFrames({ dtype: 'u8', shape: [40], data }, { maxBodyBytes: 64 })[0]!)
  t.is(
    protocolCode(() => asm.add(decodeFrame(other))),
    'CHUNK_MISMATCH'
  )
  t.is(
    protocolCode(() => new TensorAssembler({ tag: 5 }).add(decodeFrame(frames[0]!))),
    'CHUNK_MISMATCH',
    'wrong tag'
  )
  t.is(asm.add(decodeFrame(frames[2]!)), undefined)
  const done = asm.add(decodeFrame(frames[1]!))
  t.deepEqual(done?.data, data)
})
