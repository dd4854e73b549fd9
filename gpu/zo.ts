/**
 * The perturbation of zeroth-order training (MeZO, Malladi et al. 2023): a direction z with one
 * sign per parameter, drawn from a step's seed by a counter-based hash, so every rank and every
 * backend makes the same z from two u32 words and a parameter's index, without storing it.
 *
 * MeZO draws z from a Gaussian; zeromesh uses Rademacher signs (±1, the same mean and variance
 * per coordinate): a Gaussian needs log and cos, whose results differ between a CPU's and a
 * GPU's libraries, while `w + s·scale` with s = ±1 is one correctly rounded f32 addition on
 * every backend, so ranks on different hardware stay bit-identical.
 */

/** A step's seed: two u32 words. */
export type ZoSeed = readonly [number, number]

/** A 32-bit avalanche mix (the "lowbias32" constants); u32 in, u32 out. */
function mix32(x: number): number {
  x ^= x >>> 16
  x = Math.imul(x, 0x7feb352d)
  x ^= x >>> 15
  x = Math.imul(x, 0x846ca68b)
  x ^= x >>> 16
  return x >>> 0
}

/** Whether parameter `index` (a safe integer ≥ 0, its place in the flat layout) gets −1 under `seed` (else +1). */
export function zoNegative(seed: ZoSeed, index: number): boolean {
  const lo = index >>> 0
  const hi = Math.floor(index / 0x1_0000_0000) >>> 0
  return mix32((mix32((lo ^ seed[0]) >>> 0) ^ hi ^ seed[1]) >>> 0) >= 0x8000_0000
}

/** The seed of step `step` (from 0) of a run seeded `runSeed` (any safe integer). */
export function zoSeed(runSeed: number, step: number): ZoSeed {
  const a = mix32((runSeed >>> 0) ^ 0x5a17_e0a1)
  const b = mix32((Math.floor(runSeed / 0x1_0000_0000) >>> 0) ^ mix32(step >>> 0))
  return [mix32(a ^ Math.imul(step >>> 0, 0x9e3779b9)), mix32(b ^ (Math.floor(step / 0x1_0000_0000) >>> 0))]
}
