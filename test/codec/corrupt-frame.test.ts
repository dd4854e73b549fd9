import test from 'ava'
import { encodeTensorFrames, encodeQuantizedFrames, concatFrame, decodeFrame, FrameReader, quantize, quantizedChunk } from '../../codec/index.ts'
import { ProtocolError } from '../../core/index.ts'
import { seededRng } from '../helpers/seed.ts'
import { protocolCode } from '../helpers/bytes.ts'

const frame = concatFrame(encodeTensorFrames({ dtype: 'f32', shape: [2, 3], data: new Uint8Array(24).map((_, i) => i) })[0]!)

test('every single-bit flip of a frame is caught by a checksum or field check', t => {
  let caught = 0
  for (let bit = 0; bit < frame.length * 8; bit++) {
    const bad = frame.slice()
    bad[bit >> 3]! ^= 1 << (bit & 7)
    const r = protocolCode(() => decodeFrame(bad))
    t.not(r, 'ok', `flipping bit ${bit} was not detected`)
    if (r !== 'ok') caught++
  }
  t.is(caught, frame.length * 8)
})

test('every truncation of a frame is FRAME_TRUNCATED; the reader waits, then refuses at end', t => {
  for (let len = 0; len < frame.length; len++) {
    const r = protocolCode(() => decodeFrame(frame.subarray(0, len)))
    t.not(r, 'ok')
    t.is(r, 'FRAME_TRUNCATED', `length ${len}`)
    const reader = new FrameReader()
    t.deepEqual(reader.push(frame.subarray(0, len)), [])
    if (len === 0) t.notThrows(() => reader.end(), 'an empty stream is a clean end')
    else t.is(t.throws(() => reader.end(), { instanceOf: ProtocolError }).code, 'FRAME_TRUNCATED')
  }
  const extra = new Uint8Array(frame.length + 1)
  extra.set(frame)
  t.is(t.throws(() => decodeFrame(extra), { instanceOf: ProtocolError }).code, 'FRAME_TRAILING_BYTES')
})

test('a corrupted quantized body is refused before it is dequantized', t => {
  const q = quantize(
    Float32Array.from({ length: 100 }, (_, i) => i - 50),
    { bits: 4, blockSize: 10 }
  )
  const f = concatFrame(encodeQuantizedFrames(q)[0]!)
  const bad = f.slice()
  bad[bad.length - 3]! ^= 0x10
  t.is(t.throws(() => quantizedChunk(decodeFrame(bad)), { instanceOf: ProtocolError }).code, 'FRAME_BODY_CHECKSUM')
})

test('random garbage, splices and flips never crash or hang the decoders', t => {
  const { rng } = seededRng(t, 21)
  const frames = [
    frame,
    concatFrame(
      encodeQuantizedFrames(
        quantize(
          new Float32Array(300).map((_, i) => Math.cos(i)),
          { bits: 8, blockSize: 32 }
        )
      )[0]!
    )
  ]
  let ok = 0
  let typed = 0
  for (let i = 0; i < 5000; i++) {
    const base = rng.pick(frames)
    let bytes: Uint8Array
    switch (rng.int(0, 4)) {
      case 0:
        bytes = rng.fill(new Uint8Array(rng.int(0, 200)))
        break
      case 1: {
        // splice a random run of bytes
        bytes = base.slice()
        const at = rng.int(0, bytes.length)
        bytes.set(rng.fill(new Uint8Array(Math.min(rng.int(1, 16), bytes.length - at))), at)
        break
      }
      case 2:
        bytes = base.subarray(0, rng.int(0, base.length))
        break
      default: {
        // multi-bit flips
        bytes = base.slice()
        for (let j = rng.int(1, 8); j > 0; j--) bytes[rng.int(0, bytes.length)]! ^= 1 << rng.int(0, 8)
      }
    }
    const r = protocolCode(() => decodeFrame(bytes))
    const reader = new FrameReader()
    protocolCode(() => {
      reader.push(bytes)
      reader.end()
    })
    if (r === 'ok') ok++
    else typed++
  }
  t.is(ok + typed, 5000)
  t.log(`${typed} rejected with typed errors, ${ok} decoded (identical bytes or flips that cancelled out)`)
})

test('a reader that saw one bad frame stays poisoned', t => {
  const reader = new FrameReader()
  const bad = frame.slice()
  bad[0] = 0
  t.is(t.throws(() => reader.push(bad), { instanceOf: ProtocolError }).code, 'FRAME_BAD_MAGIC')
  t.throws(() => reader.push(frame), { instanceOf: ProtocolError })
})
