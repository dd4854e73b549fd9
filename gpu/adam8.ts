import type { AdamWParams } from './backend.ts'

/**
 * 8-bit optimizer state (Dettmers et al. 2022, "8-bit Optimizers via Block-wise Quantization"):
 * each moment as one byte per parameter, in blocks of {@link ADAM8_BLOCK} elements that carry
 * one f32 absmax per moment each. 8-bit AdamW (`adamw8bit`) keeps two moments, m and v, and
 * its scales are absmax pairs (m's, v's) per block; 8-bit Lion (`lion8bit`) keeps m alone and
 * one absmax per block: block b of a state of k moments has moment j's absmax at
 * `scales[k·b + j]` ({@link Moments8}). A code is an index into a sorted map of 256 values in
 * [-1, 1] (m) or [0, 1] (v); the value it stands for is `map[code] · absmax`. The maps are the
 * paper's dynamic (tree) quantization: each code holds a decimal exponent and a linear
 * fraction, so a block keeps values 7 decades below its absmax (a linear map flushes everything
 * under absmax/254 to 0, and a zero v under a non-zero m is an update of lr·m/eps).
 *
 * One adamw8bit step of a block (every operation one IEEE f32 operation, in this order, no fused
 * multiply-add, so the CPU reference and the CUDA kernel agree bit for bit):
 *
 *   m0 = map_m[cm]·sm;  v0 = map_v[cv]·sv;  g = g·gradScale
 *   m = β1·m0 + (1−β1)·g;  v = β2·v0 + ((1−β2)·g)·g
 *   w = w − lr·((m / c1) / (sqrt(v / c2) + eps) + λ·w)        c1 = 1−β1^t, c2 = 1−β2^t
 *   sm = max |m| over the block, sv = max v (NaN never wins)
 *   cm = nearest(map_m, m / sm), cv = nearest(map_v, v / sv)   (0 when the absmax is 0)
 *
 * One lion8bit step of a block (Lion's f32 operations in gpu/host-optim.ts lionHost's order on
 * the dequantized m, then m requantized the same way):
 *
 *   m0 = map_m[cm]·sm;  g = g·gradScale
 *   c = β1·m0 + (1−β1)·g;  w = w − lr·(sign(c) + λ·w);  m = β2·m0 + (1−β2)·g
 *   sm = max |m| over the block;  cm = nearest(map_m, m / sm)
 *
 * `nearest` is a binary search for the last entry ≤ y, then the closer of it and the next one
 * (the lower on a tie, by f32 differences): comparisons and rounded differences only, so both
 * backends pick the same code. A fresh state is all zero bytes (every code times a 0 absmax).
 */
export const ADAM8_BLOCK = 2048

/** Moments an 8-bit state keeps as codes: 2 for adamw8bit (m and v), 1 for lion8bit (m). */
export type Moments8 = 1 | 2

/** The 8-bit optimizers and the moments each keeps as codes. */
export const MOMENTS8: Readonly<Record<'adamw8bit' | 'lion8bit', Moments8>> = { adamw8bit: 2, lion8bit: 1 }

/** The moments `optimizer` keeps as 8-bit codes: 0 unless it is one of {@link MOMENTS8}. */
export function moments8Of(optimizer: string | undefined): 0 | Moments8 {
  return optimizer === 'adamw8bit' || optimizer === 'lion8bit' ? MOMENTS8[optimizer] : 0
}

/** Blocks of an 8-bit state of `n` elements (each with one absmax per moment). */
export const adam8Blocks = (n: number): number => Math.ceil(n / ADAM8_BLOCK)

/**
 * The dynamic quantization map (bitsandbytes `create_dynamic_map`, 7 exponent decades): for
 * each decade i of 7, the midpoints of 2^i (signed, both signs) or 2^(i+1) (unsigned) equal
 * steps over [0.1, 1], times 10^(i−6); plus 0 and 1. 256 f32 values, sorted ascending.
 */
function dynamicMap(signed: boolean): Float32Array {
  const out: number[] = [0, 1]
  for (let i = 0; i < 7; i++) {
    const items = signed ? 2 ** i : 2 ** (i + 1)
    for (let j = 0; j < items; j++) {
      const lo = 0.1 + (0.9 * j) / items
      const hi = 0.1 + (0.9 * (j + 1)) / items
      const x = 10 ** (i - 6) * ((lo + hi) / 2)
      out.push(x)
      if (signed) out.push(-x)
    }
  }
  const map = Float32Array.from(out).sort()
  if (map.length !== 256 || map.some((x, k) => k > 0 && x <= map[k - 1]!)) throw new Error('adam8: the dynamic map must be 256 distinct values')
  return map
}

/** The map of m's codes (signed): 127 negative values, 0 (code 127), 128 positive values up to 1. */
export const ADAM8_MAP_M: Readonly<Float32Array> = dynamicMap(true)
/** The map of v's codes (unsigned): 0 (code 0), then 255 positive values up to 1. */
export const ADAM8_MAP_V: Readonly<Float32Array> = dynamicMap(false)

/** The code whose map value is nearest to `y` (see {@link ADAM8_BLOCK}; the CUDA kernel does the same). */
export function adam8Nearest(map: Readonly<Float32Array>, y: number): number {
  let lo = 0
  // lo + step stays <= 255: after the steps before it, lo <= 256 - 2·step.
  for (let step = 128; step >= 1; step >>= 1) if (map[lo + step]! <= y) lo += step
  if (lo < 255 && Math.fround(map[lo + 1]! - y) < Math.fround(y - map[lo]!)) lo++
  return lo
}

/**
 * The f32 constants of one adamw8bit call, in the kernel's argument order: lr, β1, β2, 1−β1,
 * 1−β2, eps, λ, gradScale, c1 = 1−β1^t, c2 = 1−β2^t (the bias corrections computed in f64).
 */
export function adam8Constants(p: AdamWParams): number[] {
  const f = Math.fround
  const b1 = f(p.beta1)
  const b2 = f(p.beta2)
  return [f(p.lr), b1, b2, f(1 - b1), f(1 - b2), f(p.eps), f(p.weightDecay), f(p.gradScale), f(1 - p.beta1 ** p.step), f(1 - p.beta2 ** p.step)]
}

/**
 * The f32 values of one moment's codes (host side: re-sharding a state, node/train/adam8.ts):
 * `which` 0 is m (signed map), 1 is v; block b's absmax is `scales[k·b + which]` in a state of
 * `k` moments. Each value is the step's own dequantization, `map[code]·absmax`, one f32 multiply.
 */
export function adam8Decode(codes: Uint8Array, scales: Float32Array, k: Moments8, which: 0 | 1, out: Float32Array): void {
  const map = which === 0 ? ADAM8_MAP_M : ADAM8_MAP_V
  for (let i = 0; i < codes.length; i++) out[i] = Math.fround(map[codes[i]!]! * scales[k * Math.floor(i / ADAM8_BLOCK) + which]!)
}

/**
 * Quantizes one moment's f32 values into codes and block absmaxes exactly as the step ends
 * (the absmax over the block, NaN never winning; the nearest code of value / absmax, 0 when the
 * absmax is 0): the inverse of {@link adam8Decode} up to the rounding to the nearest code.
 */
export function adam8Encode(values: Float32Array, k: Moments8, which: 0 | 1, codes: Uint8Array, scales: Float32Array): void {
  const map = which === 0 ? ADAM8_MAP_M : ADAM8_MAP_V
  for (let base = 0; base < values.length; base += ADAM8_BLOCK) {
    const end = Math.min(values.length, base + ADAM8_BLOCK)
    let a = 0
    for (let i = base; i < end; i++) {
      const x = which === 0 ? Math.abs(values[i]!) : values[i]!
      if (x > a) a = x
    }
    scales[k * (base / ADAM8_BLOCK) + which] = a
    for (let i = base; i < end; i++) codes[i] = adam8Nearest(map, a === 0 ? 0 : Math.fround(values[i]! / a))
  }
}
