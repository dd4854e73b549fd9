import { f32ToBf16 } from '../codec/index.ts'
import { ADAM8_BLOCK, ADAM8_MAP_M, ADAM8_MAP_V, adam8Constants, adam8Nearest } from './adam8.ts'
import type { AdamWParams, LionParams } from './backend.ts'

/**
 * The optimizers' update rules on plain host arrays, element by element: one definition for
 * the CPU backend's ops (which check their tensors and call these) and for `--offload cpu`'s
 * worker threads (gpu/host-optim-threads.ts), which run them on slices of shared memory. An
 * element's result depends on that element alone (the 8-bit optimizers': on its block), so any split
 * into slices gives the same bits as one call over the whole array.
 */

/** Fused AdamW over w/g/m/v (same length); `low` (bf16 bits) receives the updated w when given. */
export function adamwHost(w: Float32Array, g: Float32Array, mm: Float32Array, vv: Float32Array, p: AdamWParams, low: Uint16Array | null): void {
  const { lr, beta1, beta2, eps, weightDecay, step, gradScale } = p
  const c1 = 1 - beta1 ** step
  const c2 = 1 - beta2 ** step
  for (let i = 0; i < w.length; i++) {
    const gi = g[i]! * gradScale
    // Round m and v to f32 first, so the update uses exactly the stored moments.
    const mi = Math.fround(beta1 * mm[i]! + (1 - beta1) * gi)
    const vi = Math.fround(beta2 * vv[i]! + (1 - beta2) * gi * gi)
    mm[i] = mi
    vv[i] = vi
    const wi = w[i]!
    w[i] = wi - lr * (mi / c1 / (Math.sqrt(vi / c2) + eps) + weightDecay * wi)
    if (low !== null) low[i] = f32ToBf16(w[i]!)
  }
}

/**
 * The f32 constants of one Lion call, in the kernels' argument order: lr, β1, β2, 1−β1, 1−β2, λ,
 * gradScale (1−β computed from the f32 β and rounded to f32, as every operation of the step).
 */
export function lionConstants(p: LionParams): [number, number, number, number, number, number, number] {
  const f = Math.fround
  const b1 = f(p.beta1)
  const b2 = f(p.beta2)
  return [f(p.lr), b1, b2, f(1 - b1), f(1 - b2), f(p.weightDecay), f(p.gradScale)]
}

/** Fused Lion over w/g/m, every operation an f32 one in the order of LionParams (no fused multiply-add). */
export function lionHost(w: Float32Array, g: Float32Array, mm: Float32Array, p: LionParams, low: Uint16Array | null): void {
  const f = Math.fround
  const [lr, b1, b2, c1, c2, wd, gs] = lionConstants(p)
  for (let i = 0; i < w.length; i++) {
    const gi = f(g[i]! * gs)
    const mi = mm[i]!
    const c = f(f(b1 * mi) + f(c1 * gi))
    const s = c > 0 ? 1 : c < 0 ? -1 : 0
    const wi = w[i]!
    w[i] = f(wi - f(lr * f(s + f(wd * wi))))
    mm[i] = f(f(b2 * mi) + f(c2 * gi))
    if (low !== null) low[i] = f32ToBf16(w[i]!)
  }
}

/**
 * Fused 8-bit AdamW (gpu/adam8.ts's format): w/g f32 [n], m/v u8 codes [n], sc the blocks'
 * absmax pairs [2·ceil(n / ADAM8_BLOCK)], blocks counted from w[0].
 */
export function adamw8bitHost(
  w: Float32Array,
  g: Float32Array,
  mc: Uint8Array,
  vc: Uint8Array,
  sc: Float32Array,
  p: AdamWParams,
  low: Uint16Array | null
): void {
  const n = w.length
  const f = Math.fround
  const [lr, b1, b2, ob1, ob2, eps, wd, gs, c1, c2] = adam8Constants(p) as [number, number, number, number, number, number, number, number, number, number]
  const MM = ADAM8_MAP_M
  const MV = ADAM8_MAP_V
  const mt = new Float32Array(ADAM8_BLOCK)
  const vt = new Float32Array(ADAM8_BLOCK)
  for (let b = 0; b * ADAM8_BLOCK < n; b++) {
    const base = b * ADAM8_BLOCK
    const len = Math.min(ADAM8_BLOCK, n - base)
    const sm = sc[2 * b]!
    const sv = sc[2 * b + 1]!
    let am = 0
    let av = 0
    for (let j = 0; j < len; j++) {
      const i = base + j
      const gi = f(g[i]! * gs)
      const mi = f(f(b1 * f(MM[mc[i]!]! * sm)) + f(ob1 * gi))
      const vi = f(f(b2 * f(MV[vc[i]!]! * sv)) + f(f(ob2 * gi) * gi))
      const wi = w[i]!
      const u = f(f(mi / c1) / f(f(Math.sqrt(f(vi / c2))) + eps))
      w[i] = f(wi - f(lr * f(u + f(wd * wi))))
      if (low !== null) low[i] = f32ToBf16(w[i]!)
      mt[j] = mi
      vt[j] = vi
      // The absmax never takes a NaN (a comparison with NaN is false), whatever the order.
      const a = Math.abs(mi)
      if (a > am) am = a
      if (vi > av) av = vi
    }
    sc[2 * b] = am
    sc[2 * b + 1] = av
    for (let j = 0; j < len; j++) {
      mc[base + j] = adam8Nearest(MM, am === 0 ? 0 : f(mt[j]! / am))
      vc[base + j] = adam8Nearest(MV, av === 0 ? 0 : f(vt[j]! / av))
    }
  }
}

/**
 * Fused 8-bit Lion (gpu/adam8.ts's format, one moment): w/g f32 [n], m u8 codes [n], sc the
 * blocks' m absmaxes [ceil(n / ADAM8_BLOCK)], blocks counted from w[0]. Each block's m is
 * dequantized, updated by {@link lionHost}'s f32 operations in its order, and requantized with
 * the block's new absmax.
 */
export function lion8bitHost(w: Float32Array, g: Float32Array, mc: Uint8Array, sc: Float32Array, p: LionParams, low: Uint16Array | null): void {
  const n = w.length
  const f = Math.fround
  const [lr, b1, b2, c1, c2, wd, gs] = lionConstants(p)
  const MM = ADAM8_MAP_M
  const mt = new Float32Array(ADAM8_BLOCK)
  for (let b = 0; b * ADAM8_BLOCK < n; b++) {
    const base = b * ADAM8_BLOCK
    const len = Math.min(ADAM8_BLOCK, n - base)
    const sm = sc[b]!
    let am = 0
    for (let j = 0; j < len; j++) {
      const i = base + j
      const gi = f(g[i]! * gs)
      const mi = f(MM[mc[i]!]! * sm)
      const c = f(f(b1 * mi) + f(c1 * gi))
      const s = c > 0 ? 1 : c < 0 ? -1 : 0
      const wi = w[i]!
      w[i] = f(wi - f(lr * f(s + f(wd * wi))))
      if (low !== null) low[i] = f32ToBf16(w[i]!)
      const m = f(f(b2 * mi) + f(c2 * gi))
      mt[j] = m
      // The absmax never takes a NaN (a comparison with NaN is false), whatever the order.
      const a = Math.abs(m)
      if (a > am) am = a
    }
    sc[b] = am
    for (let j = 0; j < len; j++) mc[base + j] = adam8Nearest(MM, am === 0 ? 0 : f(mt[j]! / am))
  }
}
