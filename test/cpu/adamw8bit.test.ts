import test from 'ava'
import { f32ToBf16 } from '../../codec/index.ts'
import { CpuBackend } from '../../gpu/index.ts'
import { ADAM8_BLOCK, ADAM8_MAP_M, ADAM8_MAP_V, adam8Blocks } from '../../gpu/adam8.ts'
import { seededRng, randomF32 } from '../helpers/seed.ts'
import { upload, readF32 } from './fd.ts'

const f = Math.fround
const HP = { lr: 1e-2, beta1: 0.9, beta2: 0.95, eps: 1e-8, weightDecay: 0.1, gradScale: 0.5 }

test('the dynamic maps: 256 sorted values, m signed with 0 at code 127 and 1 at 255, v unsigned from 0 to 1, 7 decades', t => {
  for (const map of [ADAM8_MAP_M, ADAM8_MAP_V]) {
    t.is(map.length, 256)
    t.true(map.every((x, k) => k === 0 || x > map[k - 1]!))
    t.is(map[255], 1)
  }
  t.is(ADAM8_MAP_M.indexOf(0), 127)
  t.is(ADAM8_MAP_V[0], 0)
  t.true(ADAM8_MAP_M[128]! < 1e-6 && ADAM8_MAP_V[1]! < 1e-6, 'the smallest non-zero values are 6-7 decades below the absmax')
})

test('adamw8bit step 1 from a zero state: the f32 AdamW update exactly; scales are the absmax and every code is the nearest', t => {
  const { rng } = seededRng(t, 211)
  const be = new CpuBackend()
  const n = 2 * ADAM8_BLOCK + 37 // two whole blocks and a partial one
  const p0 = randomF32(rng, n)
  const g0 = randomF32(rng, n, 3)
  g0.fill(0, ADAM8_BLOCK, 2 * ADAM8_BLOCK) // block 1 sees no gradient
  const params = upload(be, p0)
  const m = be.alloc('u8', [n])
  const v = be.alloc('u8', [n])
  const scales = be.alloc('f32', [2 * adam8Blocks(n)])
  const low = be.alloc('bf16', [n])
  be.adamw8bit(params, upload(be, g0), m, v, scales, { ...HP, step: 1 }, low)
  const w = readF32(be, params)
  // 1 − β with β rounded to f32 first (gpu/adam8.ts adam8Constants); the bias corrections from f64.
  const c1 = f(1 - f(HP.beta1))
  const c2 = f(1 - f(HP.beta2))
  const mx = new Float32Array(n)
  const vx = new Float32Array(n)
  for (let i = 0; i < n; i++) {
    const g = f(g0[i]! * HP.gradScale)
    mx[i] = f(f(f(HP.beta1) * 0) + f(c1 * g))
    vx[i] = f(f(f(HP.beta2) * 0) + f(f(c2 * g) * g))
    const u = f(f(mx[i]! / f(1 - HP.beta1)) / f(f(Math.sqrt(f(vx[i]! / f(1 - HP.beta2)))) + f(HP.eps)))
    const want = f(p0[i]! - f(f(HP.lr) * f(u + f(f(HP.weightDecay) * p0[i]!))))
    if (w[i] !== want) return t.fail(`params[${i}] = ${w[i]}, want ${want}`)
  }
  t.deepEqual(
    be.read(low),
    Uint16Array.from(w, x => f32ToBf16(x)),
    'bf16 copy'
  )
  const sc = readF32(be, scales)
  const mc = be.read(m) as Uint8Array
  const vc = be.read(v) as Uint8Array
  for (let b = 0; b < adam8Blocks(n); b++) {
    const lo = b * ADAM8_BLOCK
    const hi = Math.min(n, lo + ADAM8_BLOCK)
    const am = Math.max(...Array.from(mx.subarray(lo, hi), Math.abs))
    const av = Math.max(...vx.subarray(lo, hi))
    t.is(sc[2 * b], am, `block ${b} m absmax`)
    t.is(sc[2 * b + 1], av, `block ${b} v absmax`)
    for (let i = lo; i < hi; i++) {
      for (const [map, code, x, s] of [
        [ADAM8_MAP_M, mc[i]!, mx[i]!, am],
        [ADAM8_MAP_V, vc[i]!, vx[i]!, av]
      ] as const) {
        const y = s === 0 ? 0 : f(x / s)
        const d = Math.abs(y - map[code]!)
        if ((code > 0 && Math.abs(y - map[code - 1]!) < d) || (code < 255 && Math.abs(y - map[code + 1]!) < d))
          return t.fail(`code ${code} of ${y} at ${i} is not the nearest`)
      }
    }
  }
  t.is(sc[2], 0, 'a block without gradient keeps a zero absmax')
  t.true(
    mc.subarray(ADAM8_BLOCK, 2 * ADAM8_BLOCK).every(c => c === 127) && vc.subarray(ADAM8_BLOCK, 2 * ADAM8_BLOCK).every(c => c === 0),
    '... and the codes of 0'
  )
})

test('adamw8bit tracks f32 AdamW over 200 steps of a noisy quadratic (the quantization costs little) and is deterministic', t => {
  const { rng } = seededRng(t, 212)
  const n = 3000
  const target = randomF32(rng, n)
  const noise = Array.from({ length: 200 }, () => randomF32(rng, n, 0.3))
  const run = (eight: boolean): { w: Float32Array; state: Uint8Array[] } => {
    const be = new CpuBackend()
    const w = new Float32Array(n)
    const params = upload(be, w)
    const grads = be.alloc('f32', [n])
    const m = be.alloc(eight ? 'u8' : 'f32', [n])
    const v = be.alloc(eight ? 'u8' : 'f32', [n])
    const scales = be.alloc('f32', [2 * adam8Blocks(n)])
    for (let s = 1; s <= 200; s++) {
      const cur = readF32(be, params)
      be.write(
        grads,
        Float32Array.from(cur, (x, i) => x - target[i]! + noise[s - 1]![i]!)
      )
      const hp = { ...HP, lr: 1e-2, weightDecay: 0, gradScale: 1, step: s }
      if (eight) be.adamw8bit(params, grads, m, v, scales, hp)
      else be.adamw(params, grads, m, v, hp)
    }
    return { w: readF32(be, params), state: [be.read(m), be.read(v), be.read(scales)].map(a => new Uint8Array(a.buffer.slice(0))) }
  }
  const err = (w: Float32Array): number => Math.sqrt(w.reduce((s, x, i) => s + (x - target[i]!) ** 2, 0) / n)
  const a = run(false)
  const b = run(true)
  t.log(`rms distance to the optimum: adamw ${err(a.w).toFixed(4)}, adamw8bit ${err(b.w).toFixed(4)} (from ${err(new Float32Array(n)).toFixed(4)})`)
  t.true(err(b.w) < 0.3 * err(new Float32Array(n)), 'adamw8bit converges')
  t.true(err(b.w) < 1.1 * err(a.w) + 0.01, 'within 10% of f32 AdamW')
  t.deepEqual(run(true), b, 'the same inputs give the same bytes')
})
