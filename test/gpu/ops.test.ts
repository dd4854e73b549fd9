// Every CUDA op against the CPU reference (gpu/cpu.ts). Tolerances: f32 ops rtol 1e-4 (GEMMs run
// in true f32, no TF32); bf16 ops compare against the CPU on the same bf16-rounded inputs with
// rtol 2e-2 plus an atol of 1e-2 × the output's scale (one bf16 rounding of the output is 2^-8).
import { bf16ToF32, f32ToBf16 } from '../../codec/index.ts'
import type { Backend, Tensor } from '../../gpu/backend.ts'
import { absMax, close, cpu, down, gpuTest, rand, roundBf16, up } from './_cuda.ts'

type DT = 'f32' | 'bf16'
const DTYPES: DT[] = ['f32', 'bf16']
const tol = (dt: DT, want: Float32Array, f32rtol = 1e-4): [number, number] =>
  dt === 'f32' ? [f32rtol, 1e-6 * Math.max(1, absMax(want))] : [2e-2, 1e-2 * Math.max(1e-3, absMax(want))]
const inputs = (dt: DT, a: Float32Array): Float32Array => (dt === 'bf16' ? roundBf16(a) : a)

gpuTest('memory: alloc is zeroed; write/read/view/fill/copy round-trip every dtype', (t, be) => {
  const f = be.alloc('f32', [5])
  t.deepEqual(Array.from(be.read(f)), [0, 0, 0, 0, 0])
  be.write(f, new Float32Array([1, 2, 3]), 2)
  t.deepEqual(Array.from(be.read(f)), [0, 0, 1, 2, 3])
  const v = be.view(f, 1, [3])
  be.fill(v, 7.5)
  t.deepEqual(Array.from(be.read(f)), [0, 7.5, 7.5, 7.5, 3])
  const b = be.alloc('bf16', [3])
  be.fill(b, 1.00390625)
  t.deepEqual(Array.from(be.read(b)), [f32ToBf16(1.00390625), f32ToBf16(1.00390625), f32ToBf16(1.00390625)])
  const i = be.alloc('i32', [4])
  be.fill(i, -3)
  t.deepEqual(Array.from(be.read(i)), [-3, -3, -3, -3])
  const u = be.alloc('u8', [3])
  be.write(u, new Uint8Array([1, 255, 7]))
  const u2 = be.alloc('u8', [3])
  be.copy(u2, u)
  t.deepEqual(Array.from(be.read(u2)), [1, 255, 7])
  for (const x of [f, b, i, u, u2]) be.free(x)
  t.throws(() => be.read(f), { name: 'InvalidArgumentError' })
  t.throws(() => be.write(i, new Float32Array(1) as never), { name: 'InvalidArgumentError' })
})

gpuTest('cast f32↔bf16 is bit-exact with the CPU (round to nearest even)', (t, be) => {
  const src = rand(10007, 3, 100)
  src[0] = 1 + 2 ** -8
  src[1] = 1 + 3 * 2 ** -8
  src[2] = -0
  src[3] = 3.4e38
  src[4] = 1e-40
  const a = up(be, 'f32', src)
  const b = be.alloc('bf16', [src.length])
  const c = be.alloc('f32', [src.length])
  be.cast(b, a)
  be.cast(c, b)
  const ca = up(cpu, 'f32', src)
  const cb = cpu.alloc('bf16', [src.length])
  const cc = cpu.alloc('f32', [src.length])
  cpu.cast(cb, ca)
  cpu.cast(cc, cb)
  t.deepEqual(be.read(b), cpu.read(cb))
  t.deepEqual(be.read(c), cpu.read(cc))
})

for (const dt of DTYPES) {
  gpuTest(`add / residualForward / scale / gelu fwd+bwd (${dt}, seed 1)`, (t, be) => {
    const n = 4099 // odd: vector body plus a scalar tail
    const a = inputs(dt, rand(n, 1, 3))
    const b = inputs(dt, rand(n, 2, 3))
    const run = (x: Backend, d: DT): Record<string, Float32Array> => {
      const ta = up(x, d, a)
      const tb = up(x, d, b)
      const o = x.alloc(d, [n])
      const r: Record<string, Float32Array> = {}
      x.residualForward(o, ta, tb)
      r['residual'] = down(x, o)
      x.add(o, ta)
      r['add'] = down(x, o)
      x.scale(o, 0.5)
      r['scale'] = down(x, o)
      x.geluForward(o, ta)
      r['gelu'] = down(x, o)
      x.geluBackward(o, ta, tb)
      r['geluBackward'] = down(x, o)
      return r
    }
    const want = run(cpu, 'f32')
    const got = run(be, dt)
    for (const k of Object.keys(want)) {
      // add/scale chain on bf16 outputs: compare each step against the CPU on the GPU's previous value.
      if (dt === 'bf16' && (k === 'add' || k === 'scale')) continue
      close(t, got[k]!, want[k]!, ...tol(dt, want[k]!, 1e-5), `${k} ${dt}`)
    }
  })
}

gpuTest('sumSquares (f32 tree reduction vs f64 reference)', (t, be) => {
  const x = rand(1 << 20, 4)
  const want = cpu.sumSquares(up(cpu, 'f32', x))
  const got = be.sumSquares(up(be, 'f32', x))
  t.true(Math.abs(got - want) <= 1e-5 * want, `${got} vs ${want}`)
})

for (const dt of DTYPES) {
  gpuTest(`encoder forward/backward with repeated tokens (${dt}, seed 5)`, (t, be) => {
    const B = 3
    const T = 33
    const C = 64
    const V = 50
    const tokens = new Int32Array(B * T).map((_, i) => ((i * 7) % 11 === 0 ? 3 : (i * 13) % V))
    const wte = inputs(dt, rand(V * C, 5))
    const wpe = inputs(dt, rand(T * C, 6))
    const dout = inputs(dt, rand(B * T * C, 7))
    const run = (x: Backend, d: DT): [Float32Array, Float32Array, Float32Array] => {
      const tk = x.alloc('i32', [B * T])
      x.write(tk, tokens)
      const o = x.alloc(d, [B * T * C])
      x.encoderForward(o, tk, up(x, d, wte), up(x, d, wpe), B, T, C)
      const dwte = up(x, 'f32', new Float32Array(V * C).fill(0.25))
      const dwpe = x.alloc('f32', [T * C])
      x.encoderBackward(dwte, dwpe, up(x, d, dout), tk, B, T, C)
      return [down(x, o), down(x, dwte), down(x, dwpe)]
    }
    const want = run(cpu, 'f32')
    const got = run(be, dt)
    close(t, got[0], want[0], ...tol(dt, want[0]), 'out')
    close(t, got[1], want[1], 1e-5, 1e-5, 'dwte')
    close(t, got[2], want[2], 1e-5, 1e-5, 'dwpe')
  })
}

for (const dt of DTYPES) {
  for (const C of [768, 50, 36]) {
    gpuTest(`layernorm forward/backward (${dt}, C=${C}, seed 8)`, (t, be) => {
      const N = 37
      const x = inputs(dt, rand(N * C, 8, 2))
      const w = inputs(dt, rand(C, 9))
      const b = inputs(dt, rand(C, 10))
      const dy = inputs(dt, rand(N * C, 11))
      const dx0 = inputs(dt, rand(N * C, 12))
      const run = (be_: Backend, d: DT): Float32Array[] => {
        const o = be_.alloc(d, [N * C])
        const mu = be_.alloc('f32', [N])
        const rs = be_.alloc('f32', [N])
        const tx = up(be_, d, x)
        const tw = up(be_, d, w)
        be_.layernormForward(o, mu, rs, tx, tw, up(be_, d, b), N, C)
        const dx = up(be_, d, dx0)
        const dw = up(be_, 'f32', new Float32Array(C).fill(1))
        const db = be_.alloc('f32', [C])
        be_.layernormBackward(dx, dw, db, up(be_, d, dy), tx, tw, mu, rs, N, C)
        return [down(be_, o), down(be_, mu), down(be_, rs), down(be_, dx), down(be_, dw), down(be_, db)]
      }
      const want = run(cpu, 'f32')
      const got = run(be, dt)
      const names = ['out', 'mean', 'rstd', 'dinp', 'dweight', 'dbias']
      names.forEach((nm, i) => {
        const stat = nm === 'mean' || nm === 'rstd'
        const [r, a] = stat ? [1e-4, 1e-6] : tol(dt, want[i]!)
        close(t, got[i]!, want[i]!, nm === 'dweight' || nm === 'dbias' ? Math.max(r, 1e-4) : r, a, `${nm} ${dt}`)
      })
    })
  }
}

for (const dt of DTYPES) {
  gpuTest(`matmul forward (bias / no bias) and backward (${dt}, seed 13)`, (t, be) => {
    const N = 70
    const C = 96
    const OC = 136
    const x = inputs(dt, rand(N * C, 13))
    const w = inputs(dt, rand(OC * C, 14, 0.2))
    const bias = inputs(dt, rand(OC, 15))
    const dy = inputs(dt, rand(N * OC, 16))
    const run = (be_: Backend, d: DT): Float32Array[] => {
      const tx = up(be_, d, x)
      const tw = up(be_, d, w)
      const o = be_.alloc(d, [N * OC])
      be_.matmulForward(o, tx, tw, up(be_, d, bias), N, C, OC)
      const o2 = be_.alloc(d, [N * OC])
      be_.matmulForward(o2, tx, tw, null, N, C, OC)
      const dx = be_.alloc(d, [N * C])
      const dw = up(be_, 'f32', new Float32Array(OC * C).fill(0.5))
      const db = up(be_, 'f32', new Float32Array(OC).fill(-1))
      be_.matmulBackward(dx, dw, db, up(be_, d, dy), tx, tw, N, C, OC)
      return [down(be_, o), down(be_, o2), down(be_, dx), down(be_, dw), down(be_, db)]
    }
    const want = run(cpu, 'f32')
    const got = run(be, dt)
    const names = ['out', 'outNoBias', 'dinp', 'dweight', 'dbias']
    names.forEach((nm, i) =>
      close(
        t,
        got[i]!,
        want[i]!,
        ...(nm === 'dweight' || nm === 'dbias' ? ([dt === 'f32' ? 1e-4 : 1e-3, 1e-4 * absMax(want[i]!)] as [number, number]) : tol(dt, want[i]!)),
        `${nm} ${dt}`
      )
    )
  })
}

gpuTest('gemm: transposes, alpha/beta, strided batch (f32, seed 17)', (t, be) => {
  const m = 19
  const n = 23
  const k = 29
  const batch = 3
  const a = rand(batch * m * k, 17)
  const b = rand(batch * k * n, 18)
  const c = rand(batch * m * n, 19)
  for (const transA of [false, true]) {
    for (const transB of [false, true]) {
      const run = (x: Backend): Float32Array => {
        const tc = up(x, 'f32', c)
        x.gemm({
          a: up(x, 'f32', a),
          b: up(x, 'f32', b),
          c: tc,
          m,
          n,
          k,
          transA,
          transB,
          alpha: 0.5,
          beta: 2,
          batch,
          strideA: m * k,
          strideB: k * n,
          strideC: m * n
        })
        return down(x, tc)
      }
      close(t, run(be), run(cpu), 1e-4, 1e-5, `gemm transA=${transA} transB=${transB}`)
    }
  }
})

const ATTN: Array<{ dt: DT; B: number; T: number; C: number; NH: number; what: string; warps?: string }> = [
  { dt: 'f32', B: 2, T: 17, C: 48, NH: 3, what: 'generic kernel, odd T' },
  { dt: 'bf16', B: 2, T: 17, C: 48, NH: 3, what: 'generic kernel' },
  { dt: 'bf16', B: 2, T: 192, C: 128, NH: 2, what: 'flash kernel, 4 warps (T % 128 != 0)' },
  { dt: 'bf16', B: 1, T: 256, C: 128, NH: 2, what: 'flash kernel, 4 warps, several tiles' },
  { dt: 'bf16', B: 1, T: 256, C: 128, NH: 2, what: 'flash kernel, 8 warps', warps: '8' }
]
for (const { dt, B, T, C, NH, what, warps } of ATTN) {
  gpuTest(`attention forward/backward (${dt}, B=${B} T=${T} C=${C} NH=${NH}: ${what}, seed 20)`, (t, be) => {
    const qkv = inputs(dt, rand(B * T * 3 * C, 20, 2))
    const dout = inputs(dt, rand(B * T * C, 21))
    const run = (x: Backend, d: DT, outIn?: Float32Array): Float32Array[] => {
      const tq = up(x, d, qkv)
      const o = x.alloc(d, [B * T * C])
      const lse = x.alloc('f32', [B * NH * T])
      x.attentionForward(o, lse, tq, B, T, C, NH)
      // The backward uses the forward's output: give the CPU the GPU's (rounded) output.
      const oUsed = outIn === undefined ? o : up(x, d, outIn)
      const dq = x.alloc(d, [B * T * 3 * C])
      x.attentionBackward(dq, up(x, d, dout), tq, oUsed, lse, B, T, C, NH)
      return [down(x, o), down(x, lse), down(x, dq)]
    }
    if (warps !== undefined) process.env['ZEROMESH_FLASH_WARPS'] = warps
    let got: Float32Array[]
    try {
      got = run(be, dt)
    } finally {
      delete process.env['ZEROMESH_FLASH_WARPS']
    }
    const want = run(cpu, 'f32', got[0])
    close(t, got[0]!, want[0]!, ...tol(dt, want[0]!), 'out')
    close(t, got[1]!, want[1]!, dt === 'f32' ? 1e-5 : 1e-2, dt === 'f32' ? 1e-5 : 2e-2, 'lse')
    close(t, got[2]!, want[2]!, dt === 'f32' ? 1e-4 : 5e-2, dt === 'f32' ? 1e-5 : 2e-2 * absMax(want[2]!), 'dqkv')
  })
}

for (const dt of DTYPES) {
  gpuTest(`crossEntropy, losses and in-place dlogits with padding (${dt}, seed 22)`, (t, be) => {
    const N = 9
    const V = 1000
    const Vp = 1024
    const logits = inputs(dt, rand(N * Vp, 22, 4))
    const targets = new Int32Array(N).map((_, i) => (i * 97) % V)
    const run = (x: Backend, d: DT): Float32Array[] => {
      const tl = up(x, d, logits)
      const lo = x.alloc('f32', [N])
      const tg = x.alloc('i32', [N])
      x.write(tg, targets)
      const lo2 = x.alloc('f32', [N])
      x.crossEntropy(lo2, null, tl, tg, N, V, Vp, 1)
      x.crossEntropy(lo, tl, tl, tg, N, V, Vp, 1 / N)
      return [down(x, lo), down(x, lo2), down(x, tl)]
    }
    const want = run(cpu, 'f32')
    const got = run(be, dt)
    close(t, got[0]!, want[0]!, 1e-5, 1e-5, 'losses')
    close(t, got[1]!, want[1]!, 1e-5, 1e-5, 'losses without dlogits')
    close(t, got[2]!, want[2]!, ...tol(dt, want[2]!), 'dlogits')
  })
}

gpuTest('lion (f32, with and without the bf16 copy, seed 27): bit-identical to the CPU reference', (t, be) => {
  const n = 1031
  const p = rand(n, 27)
  const g = rand(n, 28)
  const m = rand(n, 29, 0.1)
  const hp = { lr: 1e-3, beta1: 0.9, beta2: 0.99, weightDecay: 0.1, gradScale: 0.5 }
  const run = (x: Backend, withLow: boolean): { out: Float32Array[]; low: Tensor | null } => {
    const tp = up(x, 'f32', p)
    const tm = up(x, 'f32', m)
    const low = withLow ? x.alloc('bf16', [n]) : null
    x.lion(tp, up(x, 'f32', g), tm, hp, low)
    x.lion(tp, up(x, 'f32', g), tm, { ...hp, weightDecay: 0 }, low)
    return { out: [down(x, tp), down(x, tm)], low }
  }
  const want = run(cpu, false).out
  const got = run(be, true)
  t.deepEqual(Array.from(got.out[0]!), Array.from(want[0]!), 'params')
  t.deepEqual(Array.from(got.out[1]!), Array.from(want[1]!), 'm')
  const low = be.read(got.low!) as Uint16Array
  t.deepEqual(
    Array.from(low, bf16ToF32),
    Array.from(got.out[0]!, x => bf16ToF32(f32ToBf16(x))),
    'bf16 copy = cast of the updated params'
  )
})

gpuTest('adamw (f32, with and without the bf16 copy, seed 23)', (t, be) => {
  const n = 1031
  const p = rand(n, 23)
  const g = rand(n, 24)
  const m = rand(n, 25, 0.1)
  const v = rand(n, 26, 0.1).map(Math.abs)
  const hp = { lr: 1e-3, beta1: 0.9, beta2: 0.95, eps: 1e-8, weightDecay: 0.1, step: 3, gradScale: 0.5 }
  const run = (x: Backend, withLow: boolean): { out: Float32Array[]; low: Tensor | null } => {
    const tp = up(x, 'f32', p)
    const tm = up(x, 'f32', m)
    const tv = up(x, 'f32', v)
    const low = withLow ? x.alloc('bf16', [n]) : null
    x.adamw(tp, up(x, 'f32', g), tm, tv, hp, low)
    x.adamw(tp, up(x, 'f32', g), tm, tv, { ...hp, step: 4 }, low)
    return { out: [down(x, tp), down(x, tm), down(x, tv)], low }
  }
  const want = run(cpu, false).out
  const got = run(be, true)
  ;['params', 'm', 'v'].forEach((nm, i) => close(t, got.out[i]!, want[i]!, 1e-5, 1e-7, nm))
  const low = be.read(got.low!) as Uint16Array
  const expect = got.out[0]!.map(x => bf16ToF32(f32ToBf16(x)))
  t.deepEqual(Array.from(low, bf16ToF32), Array.from(expect), 'bf16 copy = cast of the updated params')
})
