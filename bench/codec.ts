// Codec throughput: checksums (the choice behind checksum64), tensor frames, quantization,
// envelopes. Every group has a baseline measured in the same run.
import { createHash } from 'node:crypto'
import { crc32c } from '@node-rs/crc32'
import { xxh64 } from '@node-rs/xxhash'
import { Packr } from 'msgpackr'
import { z } from 'zod'
import { encodeTensorFrames, decodeFrame, concatFrame, FrameReader, quantize, dequantize, dequantizeAccumulate, createEnvelopeCodec } from '../codec/index.ts'
import { timeIt, report, filled } from './harness.ts'

const MiB = 1024 * 1024

// --- checksums, baseline: memcpy of the same bytes ---
for (const size of [4096, MiB, 4 * MiB]) {
  const buf = filled(size)
  const dst = new Uint8Array(size)
  const memcpy = { impl: 'memcpy', seconds: timeIt(() => dst.set(buf)) }
  report({ bench: 'checksum', impl: 'memcpy', bytes: size, seconds: memcpy.seconds })
  const impls: Array<[string, () => unknown]> = [
    ['xxh64 (@node-rs/xxhash, chosen)', () => xxh64(buf)],
    ['crc32c (@node-rs/crc32, SSE4.2)', () => crc32c(buf)],
    ['sha256 (node:crypto)', () => createHash('sha256').update(buf).digest()]
  ]
  for (const [impl, fn] of impls) report({ bench: 'checksum', impl, bytes: size, seconds: timeIt(fn) }, memcpy)
}

// --- tensor frames: 64 MiB f32 in 4 MiB frames, baseline memcpy ---
{
  const size = 64 * MiB
  const data = filled(size)
  const copy = new Uint8Array(size)
  const memcpy = { impl: 'memcpy', seconds: timeIt(() => copy.set(data), { runs: 3 }) }
  report({ bench: 'frame', impl: 'memcpy', bytes: size, seconds: memcpy.seconds })
  const tensor = { dtype: 'f32' as const, shape: [size / 4], data }
  report(
    { bench: 'frame.encode', impl: 'zeromesh (header + xxh64, zero-copy body)', bytes: size, seconds: timeIt(() => encodeTensorFrames(tensor), { runs: 3 }) },
    memcpy
  )
  const wire = encodeTensorFrames(tensor).map(concatFrame)
  report(
    {
      bench: 'frame.decode',
      impl: 'zeromesh decodeFrame (verify, view)',
      bytes: size,
      seconds: timeIt(
        () => {
          for (const f of wire) decodeFrame(f)
        },
        { runs: 3 }
      )
    },
    memcpy
  )
  const reader = new FrameReader()
  const stream = Buffer.concat(wire)
  report(
    {
      bench: 'frame.stream',
      impl: 'zeromesh FrameReader (64 KiB pieces, copy, verify)',
      bytes: size,
      seconds: timeIt(
        () => {
          for (let p = 0; p < stream.length; p += 65536) reader.push(stream.subarray(p, p + 65536))
        },
        { runs: 3 }
      )
    },
    memcpy
  )
  const packr = new Packr({ useRecords: false })
  const f4 = new Float32Array(data.buffer, 0, MiB)
  const f16 = new Float32Array(data.buffer, 0, 4 * MiB)
  report(
    { bench: 'msgpackr.pack', impl: 'msgpackr Float32Array 4 MiB', bytes: 4 * MiB, seconds: timeIt(() => packr.pack(f4)) },
    { impl: 'memcpy', seconds: memcpy.seconds / 16 }
  )
  report(
    { bench: 'msgpackr.pack', impl: 'msgpackr Float32Array 16 MiB', bytes: 16 * MiB, seconds: timeIt(() => packr.pack(f16), { runs: 3 }) },
    { impl: 'memcpy', seconds: memcpy.seconds / 4 }
  )
}

// --- quantization: bytes are the f32 input; baseline a JS f32 scale-and-copy loop ---
{
  const n = 4 * MiB
  const src = new Float32Array(n)
  const bytes = filled(n, 7)
  for (let i = 0; i < n; i++) src[i] = (bytes[i]! - 128) / 17
  const out = new Float32Array(n)
  const loop = {
    impl: 'js f32 scale loop',
    seconds: timeIt(() => {
      for (let i = 0; i < n; i++) out[i] = Math.fround(src[i]! * 0.5)
    })
  }
  report({ bench: 'quant', impl: 'js f32 scale loop', bytes: n * 4, seconds: loop.seconds })
  for (const bits of [8, 4] as const) {
    for (const blockSize of [256, 4096]) {
      const q = quantize(src, { bits, blockSize })
      report({ bench: 'quant.quantize', impl: `int${bits}`, blockSize, bytes: n * 4, seconds: timeIt(() => quantize(src, { bits, blockSize }, q)) }, loop)
      report({ bench: 'quant.dequantize', impl: `int${bits}`, blockSize, bytes: n * 4, seconds: timeIt(() => dequantize(q, out)) }, loop)
      report({ bench: 'quant.dequantize_accumulate', impl: `int${bits}`, blockSize, bytes: n * 4, seconds: timeIt(() => dequantizeAccumulate(q, out)) }, loop)
    }
  }
}

// --- envelopes: a heartbeat-sized control message; baseline raw msgpackr pack+unpack ---
{
  const codec = createEnvelopeCodec({ heartbeat: z.strictObject({ step: z.int(), zone: z.string().max(64), peers: z.array(z.string().max(64)).max(64) }) })
  const msg = { step: 123456, zone: 'eu-west-1a', peers: Array.from({ length: 8 }, (_, i) => `12D3KooWpeer${i}`) }
  const bytes = codec.encode('heartbeat', msg)
  const packr = new Packr({ useRecords: false })
  const raw = { impl: 'msgpackr pack+unpack (no checks)', seconds: timeIt(() => packr.unpack(packr.pack({ v: 1, t: 'heartbeat', p: msg }))) }
  report({ bench: 'envelope', impl: raw.impl, bytes: bytes.length, seconds: raw.seconds, msgs_per_s: Math.round(1 / raw.seconds) })
  const s = timeIt(() => codec.decode(codec.encode('heartbeat', msg)))
  report({ bench: 'envelope', impl: 'zeromesh encode+decode (scan + strict schema)', bytes: bytes.length, seconds: s, msgs_per_s: Math.round(1 / s) }, raw)
}
