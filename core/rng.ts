import { InvalidArgumentError } from './errors.ts'
import { CORE_LIMITS, checkCap } from './limits.ts'

/** A seed: a non-negative safe integer or a string (hashed). */
export type Seed = number | string

const encoder = new TextEncoder()

// splitmix32 finaliser: turns correlated inputs into independent-looking 32-bit words.
function mix32(x: number): number {
  x = (x + 0x9e3779b9) | 0
  x = Math.imul(x ^ (x >>> 16), 0x85ebca6b)
  x = Math.imul(x ^ (x >>> 13), 0xc2b2ae35)
  return (x ^ (x >>> 16)) >>> 0
}

/** Expands (key words, label bytes) into four well-mixed, not-all-zero state words. */
function deriveKey(parent: ArrayLike<number>, label: Uint8Array): Uint32Array {
  let h = 0x811c9dc5
  for (let i = 0; i < parent.length; i++) h = mix32(h ^ (parent[i]! >>> 0))
  h = mix32(h ^ label.length)
  for (let i = 0; i < label.length; i++) h = Math.imul(h ^ label[i]!, 0x01000193)
  const out = new Uint32Array(4)
  for (let i = 0; i < 4; i++) {
    h = mix32(h + i)
    out[i] = h
  }
  if ((out[0]! | out[1]! | out[2]! | out[3]!) === 0) out[0] = 1
  return out
}

function seedWords(seed: Seed): Uint32Array {
  if (typeof seed === 'string') return deriveKey([0x5eed], encoder.encode(seed))
  if (!Number.isSafeInteger(seed) || seed < 0) {
    throw new InvalidArgumentError(`seed must be a non-negative safe integer or a string, got ${seed}`)
  }
  return deriveKey([seed >>> 0, Math.floor(seed / 2 ** 32) >>> 0], new Uint8Array(0))
}

/**
 * Seeded, splittable pseudo-random generator (xoshiro128**, 2^128 - 1 period). Not for
 * cryptography. `split(label)` derives an independent child from this generator's *key*
 * (not its position), so a component's stream does not change when another component draws
 * more numbers: the property the simulator needs for replayable runs.
 */
export class Rng {
  private readonly key: Uint32Array
  private readonly s: Uint32Array
  private spareNormal: number | undefined

  private constructor(key: Uint32Array, state?: Uint32Array) {
    this.key = key
    this.s = state ?? Uint32Array.from(key)
  }

  /** A generator from a seed; the same seed always gives the same stream. */
  static fromSeed(seed: Seed): Rng {
    return new Rng(seedWords(seed))
  }

  /** Restores a generator saved with {@link state} (e.g. from a snapshot). */
  static fromState(saved: ArrayLike<number>): Rng {
    if (saved.length !== 8) throw new InvalidArgumentError(`rng state must have 8 words, got ${saved.length}`)
    const key = Uint32Array.from(Array.from(saved).slice(0, 4))
    const s = Uint32Array.from(Array.from(saved).slice(4, 8))
    if ((s[0]! | s[1]! | s[2]! | s[3]!) === 0) throw new InvalidArgumentError('rng state must not be all zero')
    return new Rng(key, s)
  }

  /** Independent child generator named by `label` (e.g. `'node-3'`, `'faults'`). */
  split(label: string | number): Rng {
    const bytes = encoder.encode(String(label))
    checkCap('rng split label bytes', bytes.length, CORE_LIMITS.maxRngLabelBytes)
    return new Rng(deriveKey(this.key, bytes))
  }

  /** The full state (key + position) as 8 words, for snapshots. */
  state(): Uint32Array {
    const out = new Uint32Array(8)
    out.set(this.key, 0)
    out.set(this.s, 4)
    return out
  }

  /** Next uniformly distributed unsigned 32-bit integer. */
  u32(): number {
    const s = this.s
    const result = Math.imul(rotl(Math.imul(s[1]!, 5), 7), 9) >>> 0
    const t = s[1]! << 9
    s[2]! ^= s[0]!
    s[3]! ^= s[1]!
    s[1]! ^= s[2]!
    s[0]! ^= s[3]!
    s[2]! ^= t
    s[3] = rotl(s[3]!, 11)
    return result
  }

  /** Uniform float in [0, 1) with 53 random bits. */
  float(): number {
    const hi = this.u32() >>> 5
    const lo = this.u32() >>> 6
    return (hi * 67108864 + lo) / 9007199254740992
  }

  /** Uniform integer in [min, max) without modulo bias. */
  int(min: number, max: number): number {
    if (!Number.isSafeInteger(min) || !Number.isSafeInteger(max) || max <= min) {
      throw new InvalidArgumentError(`int(min, max) needs safe integers with min < max, got ${min}, ${max}`)
    }
    const range = max - min
    if (range <= 2 ** 32) {
      const limit = Math.floor(2 ** 32 / range) * range
      for (;;) {
        const x = this.u32()
        if (x < limit) return min + (x % range)
      }
    }
    for (;;) {
      const x = Math.floor(this.float() * range)
      if (x < range) return min + x
    }
  }

  /** True with probability `p`. */
  bool(p = 0.5): boolean {
    return this.float() < p
  }

  /** Standard normal deviate (Box–Muller; deterministic given the stream). */
  normal(): number {
    if (this.spareNormal !== undefined) {
      const v = this.spareNormal
      this.spareNormal = undefined
      return v
    }
    let u = 0
    while (u === 0) u = this.float()
    const v = this.float()
    const r = Math.sqrt(-2 * Math.log(u))
    this.spareNormal = r * Math.sin(2 * Math.PI * v)
    return r * Math.cos(2 * Math.PI * v)
  }

  /** Fills `out` with random bytes and returns it. */
  fill(out: Uint8Array): Uint8Array {
    let i = 0
    for (; i + 4 <= out.length; i += 4) {
      const x = this.u32()
      out[i] = x
      out[i + 1] = x >>> 8
      out[i + 2] = x >>> 16
      out[i + 3] = x >>> 24
    }
    if (i < out.length) {
      let x = this.u32()
      for (; i < out.length; i++, x >>>= 8) out[i] = x
    }
    return out
  }

  /** Shuffles `items` in place (Fisher–Yates) and returns it. */
  shuffle<T>(items: T[]): T[] {
    for (let i = items.length - 1; i > 0; i--) {
      const j = this.int(0, i + 1)
      const tmp = items[i]!
      items[i] = items[j]!
      items[j] = tmp
    }
    return items
  }

  /** One element of a non-empty array. */
  pick<T>(items: readonly T[]): T {
    if (items.length === 0) throw new InvalidArgumentError('cannot pick from an empty array')
    return items[this.int(0, items.length)]!
  }
}

function rotl(x: number, k: number): number {
  return ((x << k) | (x >>> (32 - k))) >>> 0
}

/**
 * Reads a seed for a randomized test or run: `ZEROMESH_SEED` from the environment if set,
 * otherwise `fallback`. Tests print the seed they used so a failure can be replayed.
 */
export function seedFromEnv(fallback: number, env: Record<string, string | undefined> = process.env): number {
  const raw = env['ZEROMESH_SEED']
  if (raw === undefined || raw === '') return fallback
  const n = Number(raw)
  if (!Number.isSafeInteger(n) || n < 0) throw new InvalidArgumentError(`ZEROMESH_SEED must be a non-negative integer, got '${raw}'`)
  return n
}
