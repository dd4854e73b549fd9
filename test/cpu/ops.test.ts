import test from 'ava'
import { bf16ToF32, f32ToBf16 } from '../../codec/index.ts'
import { CpuBackend } from '../../gpu/index.ts'
import { seededRng, randomF32 } from '../helpers/seed.ts'
import { checkGradients, closeness, dot64, upload, uploadI32, readF32 } from './fd.ts'

// Backward checks: central differences of L = Σ w·out at eps = 1e-2 (f32 steps), accepted when
// |num - ana| <= 2e-4 + 2e-3·max(|num|, |ana|). The ops keep f64 sums inside and round once to
// f32, so the numeric side's noise is ~1e-6 / eps; the truncation error is ~eps² · f'''.
const FD = { eps: 1e-2, rtol: 2e-3, atol: 2e-4 }
// Forward checks against f64 naive formulas: one f32 rounding of the result, plus slack.
const FWD_RTOL = 1e-5
const FWD_ATOL = 1e-6

test('encoder forward matches wte[token] + wpe[t]; backward accumulates and matches finite differences', t => {
  const { rng } = seededRng(t, 101)
  const be = new CpuBackend()
  const B = 2
  const T = 3
  const C = 5
  const Vp = 7
  const tokHost = Int32Array.from({ length: B * T }, () => rng.int(0, Vp))
  tokHost[1] = tokHost[0]! // a repeated token: its rows must sum
  const wteH = randomF32(rng, Vp * C)
  const wpeH = randomF32(rng, 4 * C) // wpe has more rows (maxT) than T
  const wte = upload(be, wteH)
  const wpe = upload(be, wpeH)
  const tokens = uploadI32(be, tokHost)
  const out = be.alloc('f32', [B, T, C])
  be.encoderForward(out, tokens, wte, wpe, B, T, C)
  const expect = new Float32Array(B * T * C)
  for (let bt = 0; bt < B * T; bt++) for (let c = 0; c < C; c++) expect[bt * C + c] = wteH[tokHost[bt]! * C + c]! + wpeH[(bt % T) * C + c]!
  t.deepEqual(readF32(be, out), expect)

  const wH = randomF32(rng, B * T * C)
  const dout = upload(be, wH)
  const dwte = upload(be, new Float32Array(Vp * C).fill(0.5))
  const dwpe = upload(be, new Float32Array(4 * C).fill(-0.25))
  be.encoderBackward(dwte, dwpe, dout, tokens, B, T, C)
  const gw = readF32(be, dwte).map(x => x - 0.5)
  const gp = readF32(be, dwpe).map(x => x + 0.25)
  const loss = (): number => {
    be.encoderForward(out, tokens, wte, wpe, B, T, C)
    return dot64(wH, readF32(be, out))
  }
  checkGradients(
    t,
    be,
    rng,
    [
      { name: 'wte', tensor: wte, grad: gw },
      { name: 'wpe', tensor: wpe, grad: gp }
    ],
    loss,
    FD
  )
})

test('layernorm forward matches the formula; backward (dinp, dweight, dbias, all accumulating) matches finite differences', t => {
  const { rng } = seededRng(t, 102)
  const be = new CpuBackend()
  const N = 6
  const C = 10
  const xH = randomF32(rng, N * C, 2)
  const wH = randomF32(rng, C)
  const bH = randomF32(rng, C)
  const x = upload(be, xH)
  const w = upload(be, wH)
  const b = upload(be, bH)
  const out = be.alloc('f32', [N, C])
  const mean = be.alloc('f32', [N])
  const rstd = be.alloc('f32', [N])
  be.layernormForward(out, mean, rstd, x, w, b, N, C)
  const expect = new Float64Array(N * C)
  const expMean = new Float64Array(N)
  const expRstd = new Float64Array(N)
  for (let i = 0; i < N; i++) {
    let m = 0
    for (let c = 0; c < C; c++) m += xH[i * C + c]!
    m /= C
    let v = 0
    for (let c = 0; c < C; c++) v += (xH[i * C + c]! - m) ** 2
    const r = 1 / Math.sqrt(v / C + 1e-5)
    expMean[i] = m
    expRstd[i] = r
    for (let c = 0; c < C; c++) expect[i * C + c] = (xH[i * C + c]! - m) * r * wH[c]! + bH[c]!
  }
  t.true(closeness(readF32(be, out), expect, FWD_RTOL, FWD_ATOL).ratio <= 1)
  t.true(closeness(readF32(be, mean), expMean, FWD_RTOL, FWD_ATOL).ratio <= 1)
  t.true(closeness(readF32(be, rstd), expRstd, FWD_RTOL, FWD_ATOL).ratio <= 1)

  const gH = randomF32(rng, N * C)
  const dout = upload(be, gH)
  const dx = upload(be, new Float32Array(N * C).fill(1))
  const dw = upload(be, new Float32Array(C).fill(2))
  const db = upload(be, new Float32Array(C).fill(3))
  be.layernormBackward(dx, dw, db, dout, x, w, mean, rstd, N, C)
  const loss = (): number => {
    be.layernormForward(out, mean, rstd, x, w, b, N, C)
    return dot64(gH, readF32(be, out))
  }
  checkGradients(
    t,
    be,
    rng,
    [
      { name: 'inp', tensor: x, grad: readF32(be, dx).map(v => v - 1) },
      { name: 'weight', tensor: w, grad: readF32(be, dw).map(v => v - 2) },
      { name: 'bias', tensor: b, grad: readF32(be, db).map(v => v - 3) }
    ],
    loss,
    FD
  )
})

for (const withBias of [true, false]) {
  test(`matmul${withBias ? ' with bias' : ' without bias'}: forward matches inp·Wᵀ + b; backward matches finite differences (dinp overwritten, dweight/dbias accumulate)`, t => {
    const { rng } = seededRng(t, withBias ? 103 : 104)
    const be = new CpuBackend()
    const N = 5
    const C = 7
    const OC = 6
    const xH = randomF32(rng, N * C)
    const wH = randomF32(rng, OC * C)
    const bH = randomF32(rng, OC)
    const x = upload(be, xH)
    const w = upload(be, wH)
    const b = withBias ? upload(be, bH) : null
    const out = be.alloc('f32', [N, OC])
    be.matmulForward(out, x, w, b, N, C, OC)
    const expect = new Float64Array(N * OC)
    for (let i = 0; i < N; i++) {
      for (let j = 0; j < OC; j++) {
        let s = withBias ? bH[j]! : 0
        for (let c = 0; c < C; c++) s += xH[i * C + c]! * wH[j * C + c]!
        expect[i * OC + j] = s
      }
    }
    t.true(closeness(readF32(be, out), expect, FWD_RTOL, FWD_ATOL).ratio <= 1)

    const gH = randomF32(rng, N * OC)
    const dout = upload(be, gH)
    const dx = upload(be, new Float32Array(N * C).fill(NaN)) // overwritten: prior contents must not leak
    const dw = upload(be, new Float32Array(OC * C).fill(1))
    const db = withBias ? upload(be, new Float32Array(OC).fill(1)) : null
    be.matmulBackward(dx, dw, db, dout, x, w, N, C, OC)
    const loss = (): number => {
      be.matmulForward(out, x, w, b, N, C, OC)
      return dot64(gH, readF32(be, out))
    }
    const inputs = [
      { name: 'inp', tensor: x, grad: readF32(be, dx) },
      { name: 'weight', tensor: w, grad: readF32(be, dw).map(v => v - 1) }
    ]
    if (b !== null && db !== null) inputs.push({ name: 'bias', tensor: b, grad: readF32(be, db).map(v => v - 1) })
    checkGradients(t, be, rng, inputs, loss, FD)
  })
}

test('gelu (tanh approximation) forward matches the formula; backward matches finite differences', t => {
  const { rng } = seededRng(t, 105)
  const be = new CpuBackend()
  const n = 50
  const xH = randomF32(rng, n, 4)
  const x = upload(be, xH)
  const out = be.alloc('f32', [n])
  be.geluForward(out, x)
  const expect = xH.map(v => 0.5 * v * (1 + Math.tanh(Math.sqrt(2 / Math.PI) * (v + 0.044715 * v ** 3))))
  t.true(closeness(readF32(be, out), expect, FWD_RTOL, FWD_ATOL).ratio <= 1)
  const gH = randomF32(rng, n)
  const dx = upload(be, new Float32Array(n).fill(7))
  be.geluBackward(dx, x, upload(be, gH))
  const loss = (): number => {
    be.geluForward(out, x)
    return dot64(gH, readF32(be, out))
  }
  checkGradients(t, be, rng, [{ name: 'inp', tensor: x, grad: readF32(be, dx) }], loss, FD)
})

/** Naive causal attention: softmax(q kᵀ / √hs + mask) v per (b, h), and each row's log-sum-exp. */
function naiveAttention(qkv: Float32Array, B: number, T: number, C: number, NH: number): { out: Float64Array; lse: Float64Array } {
  const hs = C / NH
  const out = new Float64Array(B * T * C)
  const lse = new Float64Array(B * NH * T)
  const at = (b: number, t: number, part: number, h: number, i: number): number => qkv[(b * T + t) * 3 * C + part * C + h * hs + i]!
  for (let b = 0; b < B; b++) {
    for (let h = 0; h < NH; h++) {
      for (let t = 0; t < T; t++) {
        const s: number[] = []
        for (let u = 0; u < T; u++) {
          let d = 0
          for (let i = 0; i < hs; i++) d += at(b, t, 0, h, i) * at(b, u, 1, h, i)
          s.push(u <= t ? d / Math.sqrt(hs) : -Infinity)
        }
        const mx = Math.max(...s)
        const e = s.map(v => Math.exp(v - mx))
        const z = e.reduce((a, v) => a + v, 0)
        lse[(b * NH + h) * T + t] = mx + Math.log(z)
        for (let i = 0; i < hs; i++) {
          let o = 0
          for (let u = 0; u < T; u++) o += (e[u]! / z) * at(b, u, 2, h, i)
          out[(b * T + t) * C + h * hs + i] = o
        }
      }
    }
  }
  return { out, lse }
}

test('attention forward matches naive softmax(QKᵀ/√d + causal mask)·V and its log-sum-exp; backward matches finite differences', t => {
  const { rng } = seededRng(t, 106)
  const be = new CpuBackend()
  const B = 2
  const T = 5
  const C = 12
  const NH = 3
  const qkvH = randomF32(rng, B * T * 3 * C, 1.5)
  const qkv = upload(be, qkvH)
  const out = be.alloc('f32', [B, T, C])
  const lse = be.alloc('f32', [B, NH, T])
  be.attentionForward(out, lse, qkv, B, T, C, NH)
  const ref = naiveAttention(qkvH, B, T, C, NH)
  const o = closeness(readF32(be, out), ref.out, FWD_RTOL, FWD_ATOL)
  t.true(o.ratio <= 1, `out worst at ${o.at}: ratio ${o.ratio}`)
  t.true(closeness(readF32(be, lse), ref.lse, FWD_RTOL, FWD_ATOL).ratio <= 1)

  const gH = randomF32(rng, B * T * C)
  const dout = upload(be, gH)
  const dqkv = upload(be, new Float32Array(B * T * 3 * C).fill(NaN)) // overwritten
  be.attentionBackward(dqkv, dout, qkv, out, lse, B, T, C, NH)
  const grad = readF32(be, dqkv)
  // The first query sees only its own key (softmax of one score is 1), so its gradient is 0.
  for (let i = 0; i < C; i++) t.is(grad[i], 0)
  const loss = (): number => {
    be.attentionForward(out, lse, qkv, B, T, C, NH)
    return dot64(gH, readF32(be, out))
  }
  checkGradients(t, be, rng, [{ name: 'qkv', tensor: qkv, grad }], loss, { ...FD, maxProbes: 120 })
})

test('cross-entropy: losses match -log softmax over the first V columns; padding is ignored and its gradient is 0; dlogits may alias logits', t => {
  const { rng } = seededRng(t, 107)
  const be = new CpuBackend()
  const N = 4
  const V = 6
  const Vp = 9
  const scale = 0.25
  const xH = randomF32(rng, N * Vp, 3)
  for (let i = 0; i < N; i++) for (let v = V; v < Vp; v++) xH[i * Vp + v] = v === V ? 1e30 : NaN // padding must never be read
  const tgH = Int32Array.from({ length: N }, () => rng.int(0, V))
  const logits = upload(be, xH)
  const targets = uploadI32(be, tgH)
  const losses = be.alloc('f32', [N])
  const dlogits = upload(be, new Float32Array(N * Vp).fill(5))
  be.crossEntropy(losses, dlogits, logits, targets, N, V, Vp, scale)
  const expLoss = new Float64Array(N)
  const expGrad = new Float64Array(N * Vp)
  for (let i = 0; i < N; i++) {
    const row = Array.from(xH.subarray(i * Vp, i * Vp + V))
    const mx = Math.max(...row)
    const z = row.reduce((a, v) => a + Math.exp(v - mx), 0)
    expLoss[i] = mx + Math.log(z) - row[tgH[i]!]!
    for (let v = 0; v < V; v++) expGrad[i * Vp + v] = (Math.exp(row[v]! - mx) / z - (v === tgH[i] ? 1 : 0)) * scale
  }
  t.true(closeness(readF32(be, losses), expLoss, FWD_RTOL, FWD_ATOL).ratio <= 1)
  const g = readF32(be, dlogits)
  t.true(closeness(g, expGrad, FWD_RTOL, FWD_ATOL).ratio <= 1, 'dlogits, padding columns 0')
  // Without dlogits only the losses are written; aliasing gives the same gradient.
  const lossesOnly = be.alloc('f32', [N])
  be.crossEntropy(lossesOnly, null, logits, targets, N, V, Vp, scale)
  t.deepEqual(readF32(be, lossesOnly), readF32(be, losses))
  const aliased = upload(be, xH)
  be.crossEntropy(lossesOnly, aliased, aliased, targets, N, V, Vp, scale)
  t.deepEqual(readF32(be, aliased), g)

  // Finite differences of Σ scale·loss over the real columns (padding set finite so probes work).
  const fin = upload(
    be,
    xH.map(v => (Number.isFinite(v) && Math.abs(v) < 1e3 ? v : 0))
  )
  const gradFin = be.alloc('f32', [N * Vp])
  be.crossEntropy(losses, gradFin, fin, targets, N, V, Vp, scale)
  const lossFn = (): number => {
    be.crossEntropy(losses, null, fin, targets, N, V, Vp, scale)
    return scale * dot64(new Float64Array(N).fill(1), readF32(be, losses))
  }
  checkGradients(t, be, rng, [{ name: 'logits', tensor: fin, grad: readF32(be, gradFin) }], lossFn, FD)
})

test('cross-entropy: a target outside [0, V) is an InvalidArgumentError naming the op, even when it is < Vp, and nothing is written', t => {
  const be = new CpuBackend()
  const N = 3
  const V = 5
  const Vp = 8
  const logits = upload(be, new Float32Array(N * Vp))
  const losses = upload(be, new Float32Array(N).fill(42))
  for (const bad of [V, Vp - 1, Vp, -1, 2 ** 31 - 1]) {
    const targets = uploadI32(be, Int32Array.of(0, bad, 1))
    const err = t.throws(() => be.crossEntropy(losses, null, logits, targets, N, V, Vp, 1), { name: 'InvalidArgumentError' })
    t.regex(err.message, /crossEntropy/)
  }
  t.deepEqual(readF32(be, losses), new Float32Array(N).fill(42))
})

test('adamw matches a scalar f64 reference over several steps (gradScale, weight decay) and writes the bf16 copy', t => {
  const { rng } = seededRng(t, 108)
  const be = new CpuBackend()
  const n = 257
  const p0 = randomF32(rng, n)
  const params = upload(be, p0)
  const grads = be.alloc('f32', [n])
  const m = be.alloc('f32', [n])
  const v = be.alloc('f32', [n])
  const low = be.alloc('bf16', [n])
  const hp = { lr: 1e-2, beta1: 0.9, beta2: 0.95, eps: 1e-8, weightDecay: 0.1, gradScale: 0.5 }
  const rp = Float64Array.from(p0)
  const rm = new Float64Array(n)
  const rv = new Float64Array(n)
  for (let step = 1; step <= 5; step++) {
    const gH = randomF32(rng, n, 3)
    be.write(grads, gH)
    be.adamw(params, grads, m, v, { ...hp, step }, low)
    for (let i = 0; i < n; i++) {
      const g = gH[i]! * hp.gradScale
      rm[i] = hp.beta1 * rm[i]! + (1 - hp.beta1) * g
      rv[i] = hp.beta2 * rv[i]! + (1 - hp.beta2) * g * g
      const mh = rm[i]! / (1 - hp.beta1 ** step)
      const vh = rv[i]! / (1 - hp.beta2 ** step)
      rp[i] = rp[i]! - hp.lr * (mh / (Math.sqrt(vh) + hp.eps) + hp.weightDecay * rp[i]!)
    }
  }
  const got = readF32(be, params)
  const c = closeness(got, rp, 1e-5, 1e-6)
  t.true(c.ratio <= 1, `params worst at ${c.at}: ${got[c.at]} vs ${rp[c.at]}`)
  t.true(closeness(readF32(be, m), rm, 1e-5, 1e-7).ratio <= 1)
  t.true(closeness(readF32(be, v), rv, 1e-5, 1e-7).ratio <= 1)
  t.deepEqual(
    be.read(low),
    Uint16Array.from(got, x => f32ToBf16(x))
  )
  t.not(got[0], p0[0], 'params moved')
})

test('lion matches a scalar f64 reference over several steps (sign update, weight decay, gradScale) and writes the bf16 copy', t => {
  const { rng } = seededRng(t, 109)
  const be = new CpuBackend()
  const n = 257
  const p0 = randomF32(rng, n)
  const params = upload(be, p0)
  const grads = be.alloc('f32', [n])
  const m = be.alloc('f32', [n])
  const low = be.alloc('bf16', [n])
  const hp = { lr: 1e-3, beta1: 0.9, beta2: 0.99, weightDecay: 0.1, gradScale: 0.5 }
  const rp = Float64Array.from(p0)
  const rm = new Float64Array(n)
  for (let step = 1; step <= 5; step++) {
    const gH = randomF32(rng, n, 3)
    be.write(grads, gH)
    be.lion(params, grads, m, hp, low)
    for (let i = 0; i < n; i++) {
      const g = gH[i]! * hp.gradScale
      const c = hp.beta1 * rm[i]! + (1 - hp.beta1) * g
      rp[i] = rp[i]! - hp.lr * (Math.sign(c) + hp.weightDecay * rp[i]!)
      rm[i] = hp.beta2 * rm[i]! + (1 - hp.beta2) * g
    }
  }
  const got = readF32(be, params)
  const c = closeness(got, rp, 1e-5, 1e-6)
  t.true(c.ratio <= 1, `params worst at ${c.at}: ${got[c.at]} vs ${rp[c.at]}`)
  t.true(closeness(readF32(be, m), rm, 1e-5, 1e-7).ratio <= 1)
  t.deepEqual(
    be.read(low),
    Uint16Array.from(got, x => f32ToBf16(x))
  )
  // Every step moves a parameter by lr (the sign) plus its decay: the update's size does not
  // depend on the gradient's.
  const one = upload(be, new Float32Array([1, 1, 1]))
  const g3 = upload(be, new Float32Array([1e-6, -50, 0]))
  const m1 = be.alloc('f32', [3])
  be.lion(one, g3, m1, { ...hp, weightDecay: 0, gradScale: 1 })
  t.deepEqual([...readF32(be, one)], [Math.fround(1 - 1e-3), Math.fround(1 + 1e-3), 1])
})

test('cast rounds f32 to bf16 to nearest even, keeps NaN and ±Inf; bf16 → f32 is exact', t => {
  const be = new CpuBackend()
  const cases = Float32Array.of(1, 1 + 2 ** -8, 1 + 3 * 2 ** -8, 1 + 2 ** -8 + 2 ** -20, -2.5, 0, -0, Infinity, -Infinity, NaN, 3.4028234663852886e38, 1e-40)
  const src = upload(be, cases)
  const low = be.alloc('bf16', [cases.length])
  be.cast(low, src)
  const bits = be.read(low) as Uint16Array
  // 1 + 2^-8 is a tie between 1 and 1 + 2^-7: even mantissa (1) wins; 1 + 3·2^-8 rounds up to 1 + 2^-6.
  t.deepEqual(Array.from(bits.subarray(0, 9)), [0x3f80, 0x3f80, 0x3f82, 0x3f81, 0xc020, 0x0000, 0x8000, 0x7f80, 0xff80])
  t.true(Number.isNaN(bf16ToF32(bits[9]!)))
  t.is(bits[10], 0x7f80, 'FLT_MAX rounds up to Inf in bf16')
  const back = be.alloc('f32', [cases.length])
  be.cast(back, low)
  t.deepEqual(Array.from(readF32(be, back).subarray(0, 5)), [1, 1, 1 + 2 ** -6, 1 + 2 ** -7, -2.5])
  for (let i = 0; i < cases.length; i++) t.is(f32ToBf16(cases[i]!), bits[i]!)
})

test('add, residualForward, scale, sumSquares, fill and copy', t => {
  const { rng } = seededRng(t, 109)
  const be = new CpuBackend()
  const aH = randomF32(rng, 33)
  const bH = randomF32(rng, 33)
  const a = upload(be, aH)
  const b = upload(be, bH)
  const out = be.alloc('f32', [33])
  be.residualForward(out, a, b)
  t.deepEqual(
    readF32(be, out),
    aH.map((x, i) => x + bH[i]!)
  )
  be.add(out, a)
  t.deepEqual(
    readF32(be, out),
    aH.map((x, i) => Math.fround(x + bH[i]!) + x)
  )
  be.scale(a, -2)
  t.deepEqual(
    readF32(be, a),
    aH.map(x => -2 * x)
  )
  t.is(be.sumSquares(b), dot64(bH, bH))
  be.fill(b, 1.5)
  t.deepEqual(readF32(be, b), new Float32Array(33).fill(1.5))
  be.copy(out, b)
  t.deepEqual(readF32(be, out), new Float32Array(33).fill(1.5))
  const i = be.alloc('i32', [4])
  be.fill(i, -3)
  t.deepEqual(be.read(i), new Int32Array(4).fill(-3))
  const h = be.alloc('bf16', [4])
  be.fill(h, 1 + 2 ** -8)
  t.deepEqual(be.read(h), new Uint16Array(4).fill(0x3f80))
  // Views share memory with their base.
  const base = be.alloc('f32', [10])
  const v = be.view(base, 4, [2, 3])
  be.fill(v, 9)
  t.deepEqual(Array.from(readF32(be, base)), [0, 0, 0, 0, 9, 9, 9, 9, 9, 9])
  t.deepEqual(v.shape, [2, 3])
  t.is(v.length, 6)
})
