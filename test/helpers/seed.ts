import type { ExecutionContext } from 'ava'
import { Rng, seedFromEnv } from '../../core/index.ts'

/**
 * A seeded Rng for a randomized test. The seed comes from ZEROMESH_SEED when set, else the
 * fallback; it is logged (ava prints logs of failing tests) with the command that replays it.
 */
export function seededRng(t: ExecutionContext, fallback: number): { rng: Rng; seed: number } {
  const seed = seedFromEnv(fallback)
  t.log(`seed ${seed}; replay: ZEROMESH_SEED=${seed} npx ava --match '${t.title}'`)
  return { rng: Rng.fromSeed(seed), seed }
}

/** Random f32 values in [-scale, scale). */
export function randomF32(rng: Rng, n: number, scale = 1): Float32Array {
  const out = new Float32Array(n)
  for (let i = 0; i < n; i++) out[i] = (rng.float() * 2 - 1) * scale
  return out
}

/** Hex of a byte array (for golden vectors and messages). */
export function hex(b: Uint8Array): string {
  return Buffer.from(b.buffer, b.byteOffset, b.byteLength).toString('hex')
}
