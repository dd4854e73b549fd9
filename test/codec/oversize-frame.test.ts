import test from 'ava'
import { encodeTensorFrames, concatFrame, decodeFrame, decodeFrameHeader, FrameReader, TensorAssembler, CODEC_LIMITS } from '../../codec/index.ts'
import { ProtocolError, LimitExceededError } from '../../core/index.ts'
import { forgeHeader } from '../helpers/bytes.ts'

const frame = concatFrame(encodeTensorFrames({ dtype: 'u8', shape: [16], data: new Uint8Array(16) })[0]!)

test('a header claiming a body over the cap is refused from the header alone (limit: maxFrameBodyBytes)', t => {
  const cap = CODEC_LIMITS.maxFrameBodyBytes
  const forged = forgeHeader(frame, v => {
    v.setBigUint64(56, BigInt(cap + 1), true) // dim
    v.setBigUint64(32, BigInt(cap + 1), true) // element count
    v.setBigUint64(40, BigInt(cap + 1), true) // body bytes
  })
  const header = forged.subarray(0, 72)
  t.is(t.throws(() => decodeFrameHeader(header), { instanceOf: ProtocolError }).code, 'FRAME_TOO_LARGE')
  const before = process.memoryUsage().arrayBuffers
  const reader = new FrameReader()
  t.is(t.throws(() => reader.push(header), { instanceOf: ProtocolError }).code, 'FRAME_TOO_LARGE')
  t.true(reader.buffered <= 72, 'the reader buffered only the header')
  t.true(process.memoryUsage().arrayBuffers - before < 1024 * 1024, 'no body-sized allocation happened')
  // A smaller per-connection cap is honoured too.
  t.is(t.throws(() => decodeFrame(frame, { maxBodyBytes: 8 }), { instanceOf: ProtocolError }).code, 'FRAME_TOO_LARGE')
  t.throws(() => new FrameReader({ maxBodyBytes: cap + 1 }), { instanceOf: LimitExceededError })
})

test('length bombs in 64-bit fields are refused, not converted (u64 beyond 2^53)', t => {
  const forged = forgeHeader(frame, v => v.setBigUint64(40, 0xffffffffffffffffn, true))
  t.is(t.throws(() => decodeFrame(forged), { instanceOf: ProtocolError }).code, 'FRAME_BAD_HEADER')
})

test('rank above the cap is refused after 8 bytes (limit: maxTensorRank)', t => {
  const forged = frame.slice()
  forged[6] = CODEC_LIMITS.maxTensorRank + 1
  const reader = new FrameReader()
  t.is(t.throws(() => reader.push(forged.subarray(0, 8)), { instanceOf: ProtocolError }).code, 'FRAME_TOO_LARGE')
})

test('a whole tensor over the cap is refused before the assembler allocates it (limit: maxTensorBytes)', t => {
  // Claims a 2^31-element f32 tensor (8 GiB) whose first chunk is 16 bytes.
  const small = concatFrame(encodeTensorFrames({ dtype: 'f32', shape: [4], data: new Uint8Array(16) })[0]!)
  const forged = forgeHeader(small, v => {
    v.setBigUint64(56, 2n ** 31n, true)
    v.setUint32(16, 2 ** 29, true) // chunk count = 2^31 / 4
  })
  const r = t.throws(() => new TensorAssembler().add(decodeFrame(forged)), { instanceOf: ProtocolError })
  t.is(r.code, 'CHUNK_MISMATCH', 'chunk count above maxChunksPerTensor (limit: maxChunksPerTensor)')
  const forged2 = forgeHeader(small, v => {
    v.setBigUint64(56, 2n ** 31n, true)
    v.setUint32(16, 2 ** 20, true)
    v.setBigUint64(32, 2048n, true)
    v.setBigUint64(40, 8192n, true)
  })
  // Body length now disagrees, so decodeFrameHeader is what we exercise: layout ok, size over cap.
  const h = decodeFrameHeader(forged2)
  const asm = new TensorAssembler()
  t.throws(() => asm.add({ header: h, body: new Uint8Array(8192) }), { instanceOf: LimitExceededError })
  t.throws(() => new TensorAssembler({ maxTensorBytes: 8 }).add(decodeFrame(small)), { instanceOf: LimitExceededError })
})
