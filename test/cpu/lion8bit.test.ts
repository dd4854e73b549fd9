import test from 'ava'
import { f32ToBf16 } from '../../codec/index.ts'
import { CpuBackend, type LionParams } from '../../gpu/index.ts'
import { ADAM8_BLOCK, ADAM8_MAP_M, adam8Blocks, adam8Decode, adam8Encode } from '../../gpu/adam8.ts'
import { seededRng, randomF32 } from '../helpers/seed.ts'
import { upload, readF32 } from './fd.ts'

// 8-bit Lion (gpu/adam8.ts, gpu/host-optim.ts lion8bitHost): m as u8 codes of the signed map
// with one absmax per 2048-element block. A step is the f32 Lion step on the dequantized m,
// then m quantized again with its block's new absmax: the tests below hold it to exactly that,
// built from the f32 `lion` op and the format's own decode and encode.

const HP: LionParams = { lr: 1e-2, beta1: 0.9, beta2: 0.99, weightDecay: 0.1, gradScale: 0.5 }
const bytes = (a: ArrayBufferView): Uint8Array => new Uint8Array(a.buffer.slice(a.byteOffset, a.byteOffset + a.byteLength))

test('lion8bit = dequantize, the f32 lion op, quantize with the block absmax: bit for bit over 5 steps, partial last block, bf16 copy', t => {
  const { rng } = seededRng(t, 311)
  const n = 2 * ADAM8_BLOCK + 37 // two whole blocks and a partial one
  const B = adam8Blocks(n)
  const p0 = randomF32(rng, n)
  const grads = Array.from({ length: 5 }, (_, s) => randomF32(rng, n, s === 2 ? 1e-5 : 3))
  // Block 1 never sees a gradient: its absmax stays 0 and its codes those of 0.
  for (const g of grads) g.fill(0, ADAM8_BLOCK, 2 * ADAM8_BLOCK)
  const be = new CpuBackend()
  const params = upload(be, p0)
  const m = be.alloc('u8', [n])
  const scales = be.alloc('f32', [B])
  const low = be.alloc('bf16', [n])
  // The reference: f32 Lion on the values the codes stand for, requantized by adam8Encode (one moment).
  const ref = new CpuBackend()
  const rp = upload(ref, p0)
  let codes = new Uint8Array(n)
  let sc = new Float32Array(B)
  for (const [s, g] of grads.entries()) {
    be.lion8bit(params, upload(be, g), m, scales, HP, low)
    const mf = new Float32Array(n)
    adam8Decode(codes, sc, 1, 0, mf)
    const rm = upload(ref, mf)
    ref.lion(rp, upload(ref, g), rm, HP)
    codes = new Uint8Array(n)
    sc = new Float32Array(B)
    adam8Encode(readF32(ref, rm), 1, 0, codes, sc)
    t.deepEqual(bytes(readF32(be, params)), bytes(readF32(ref, rp)), `params after step ${s + 1}`)
    t.deepEqual(be.read(m), codes, `m codes after step ${s + 1}`)
    t.deepEqual(bytes(readF32(be, scales)), bytes(sc), `absmaxes after step ${s + 1}`)
  }
  const w = readF32(be, params)
  t.deepEqual(
    be.read(low),
    Uint16Array.from(w, x => f32ToBf16(x)),
    'bf16 copy'
  )
  const mc = be.read(m) as Uint8Array
  t.is(readF32(be, scales)[1], 0, 'a block without gradient keeps a zero absmax')
  t.true(
    mc.subarray(ADAM8_BLOCK, 2 * ADAM8_BLOCK).every(c => c === ADAM8_MAP_M.indexOf(0)),
    '... and the codes of 0'
  )
  t.true(new Set(mc).size > 100, 'the codes use much of the map')
})

test('lion8bit step 1 from a zero state: w moves by lr·(sign(g) + λ·w) exactly; m is (1 − β2)·g to the nearest code of its block absmax', t => {
  const { rng } = seededRng(t, 312)
  const n = ADAM8_BLOCK + 5
  const p0 = randomF32(rng, n)
  const g0 = randomF32(rng, n, 2)
  g0[3] = 0
  const be = new CpuBackend()
  const params = upload(be, p0)
  const m = be.alloc('u8', [n])
  const scales = be.alloc('f32', [adam8Blocks(n)])
  be.lion8bit(params, upload(be, g0), m, scales, HP)
  const f = Math.fround
  const w = readF32(be, params)
  const c2 = f(1 - f(HP.beta2))
  const mx = Float32Array.from(g0, g => f(f(f(HP.beta2) * 0) + f(c2 * f(g * f(HP.gradScale)))))
  for (let i = 0; i < n; i++) {
    const s = Math.sign(g0[i]!)
    const want = f(p0[i]! - f(f(HP.lr) * f(s + f(f(HP.weightDecay) * p0[i]!))))
    if (w[i] !== want) return t.fail(`params[${i}] = ${w[i]}, want ${want}`)
  }
  const sc = readF32(be, scales)
  const mc = be.read(m) as Uint8Array
  for (let b = 0; b < adam8Blocks(n); b++) {
    const lo = b * ADAM8_BLOCK
    const hi = Math.min(n, lo + ADAM8_BLOCK)
    const am = Math.max(...Array.from(mx.subarray(lo, hi), Math.abs))
    t.is(sc[b], am, `block ${b} absmax`)
    for (let i = lo; i < hi; i++) {
      const y = f(mx[i]! / am)
      const c = mc[i]!
      const d = Math.abs(y - ADAM8_MAP_M[c]!)
      if ((c > 0 && Math.abs(y - ADAM8_MAP_M[c - 1]!) < d) || (c < 255 && Math.abs(y - ADAM8_MAP_M[c + 1]!) < d))
        return t.fail(`code ${c} of ${y} at ${i} is not the nearest`)
    }
  }
  t.is(mc[3], ADAM8_MAP_M.indexOf(0), 'a zero gradient: the code of 0')
  t.true(mc.some(c => c === 255) && mc.some(c => c === 0), 'the block absmax takes code 255 (or 0 for a negative one)')
})

test('lion8bit tracks f32 Lion over 200 steps of a noisy quadratic (the quantization costs little) and is deterministic', t => {
  const { rng } = seededRng(t, 313)
  const n = 3000
  const target = randomF32(rng, n)
  const noise = Array.from({ length: 200 }, () => randomF32(rng, n, 0.3))
  const run = (eight: boolean): { w: Float32Array; state: Uint8Array[] } => {
    const be = new CpuBackend()
    const params = upload(be, new Float32Array(n))
    const grads = be.alloc('f32', [n])
    const m = be.alloc(eight ? 'u8' : 'f32', [n])
    const scales = be.alloc('f32', [adam8Blocks(n)])
    for (let s = 1; s <= 200; s++) {
      const cur = readF32(be, params)
      be.write(
        grads,
        Float32Array.from(cur, (x, i) => x - target[i]! + noise[s - 1]![i]!)
      )
      const hp = { ...HP, lr: 1e-2, weightDecay: 0, gradScale: 1 }
      if (eight) be.lion8bit(params, grads, m, scales, hp)
      else be.lion(params, grads, m, hp)
    }
    return { w: readF32(be, params), state: [be.read(m), be.read(scales)].map(bytes) }
  }
  const err = (w: Float32Array): number => Math.sqrt(w.reduce((s, x, i) => s + (x - target[i]!) ** 2, 0) / n)
  const a = run(false)
  const b = run(true)
  t.log(`rms distance to the optimum: lion ${err(a.w).toFixed(4)}, lion8bit ${err(b.w).toFixed(4)} (from ${err(new Float32Array(n)).toFixed(4)})`)
  t.true(err(b.w) < 0.3 * err(new Float32Array(n)), 'lion8bit converges')
  t.true(err(b.w) < 1.1 * err(a.w) + 0.01, 'within 10% of f32 Lion')
  t.deepEqual(run(true), b, 'the same inputs give the same bytes')
})
