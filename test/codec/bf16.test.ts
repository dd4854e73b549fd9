import test from 'ava'
import { bf16ToF32, f32ToBf16 } from '../../codec/index.ts'
import { seededRng } from '../helpers/seed.ts'

// codec's f32ToBf16 / bf16ToF32 replaced three copies of the conversion (the CPU backend's, the
// CUDA backend's fill, the collectives' bf16 wire). The copies are kept here verbatim as
// frozen references: the one definition must give the same bits as each of them on every
// input class (NaN of either sign and any payload, ±Inf, subnormals, ties to even, overflow,
// carries into the exponent, values that are not f32 yet).

/** gpu/cpu.ts's f32ToBf16 / bf16ToF32, verbatim. */
const cpuScratch = new Float32Array(1)
const cpuU32 = new Uint32Array(cpuScratch.buffer)
function cpuF32ToBf16(x: number): number {
  cpuScratch[0] = x
  const bits = cpuU32[0]!
  if ((bits & 0x7fffffff) > 0x7f800000) return ((bits >>> 16) | 0x40) & 0xffff
  return ((bits + 0x7fff + ((bits >>> 16) & 1)) >>> 16) & 0xffff
}
function cpuBf16ToF32(bits: number): number {
  cpuU32[0] = (bits & 0xffff) << 16
  return cpuScratch[0]!
}

/** gpu/cuda/backend.ts's bf16Bits (its fill), verbatim. */
const cudaScratch = new Float32Array(1)
const cudaU32 = new Uint32Array(cudaScratch.buffer)
function cudaBf16Bits(x: number): number {
  cudaScratch[0] = x
  const bits = cudaU32[0]!
  if ((bits & 0x7fffffff) > 0x7f800000) return ((bits >>> 16) | 0x40) & 0xffff
  return ((bits + 0x7fff + ((bits >>> 16) & 1)) >>> 16) & 0xffff
}

/** mesh/collective/wire.ts's toBf16 / fromBf16, verbatim (its NaN test is written differently). */
const f32 = new Float32Array(1)
const u32 = new Uint32Array(f32.buffer)
function wireToBf16(x: number): number {
  f32[0] = x
  const b = u32[0]!
  if ((b & 0x7f800000) === 0x7f800000 && (b & 0x7fffff) !== 0) return ((b >>> 16) | 0x40) & 0xffff
  return ((b + 0x7fff + ((b >>> 16) & 1)) >>> 16) & 0xffff
}
function wireFromBf16(h: number): number {
  u32[0] = h << 16
  return f32[0]!
}

const OLD_TO = { 'gpu/cpu.ts f32ToBf16': cpuF32ToBf16, 'gpu/cuda/backend.ts bf16Bits': cudaBf16Bits, 'mesh/collective/wire.ts toBf16': wireToBf16 }
const OLD_FROM = { 'gpu/cpu.ts bf16ToF32': cpuBf16ToF32, 'mesh/collective/wire.ts fromBf16': wireFromBf16 }

const bitsView = new Uint32Array(1)
const valueView = new Float32Array(bitsView.buffer)
const fromBits = (b: number): number => {
  bitsView[0] = b
  return valueView[0]!
}
const toBits = (x: number): number => {
  valueView[0] = x
  return bitsView[0]!
}

/**
 * Every bf16 upper half with the lower halves that decide the rounding (exact, just below /
 * at / just above the tie, all ones), then seeded random f32 bit patterns.
 */
function f32Inputs(random: () => number, count: number): number[] {
  const out: number[] = []
  for (let hi = 0; hi < 0x10000; hi++) {
    for (const lo of [0x0000, 0x0001, 0x7fff, 0x8000, 0x8001, 0xc000, 0xffff]) out.push(fromBits(((hi << 16) | lo) >>> 0))
  }
  for (let i = 0; i < count; i++) out.push(fromBits(random()))
  return out
}

/** Doubles that are not f32 values: the f32 rounding comes first, then the bf16 one. */
const DOUBLES = [
  0,
  -0,
  NaN,
  -NaN,
  Infinity,
  -Infinity,
  1,
  -1,
  1 + 2 ** -8,
  1 + 2 ** -8 + 2 ** -40,
  1 + 2 ** -24 + 2 ** -60,
  1e-50,
  -1e-50,
  1e-40,
  1e-45,
  2 ** -149,
  2 ** -150,
  2 ** -126,
  3.4028234663852886e38,
  3.5e38,
  1e300,
  -1e300,
  Number.MAX_VALUE,
  Number.MIN_VALUE,
  Math.PI,
  -Math.E,
  65504.5,
  0.1,
  1 / 3
]

test('f32ToBf16 gives the bits of each of the three old conversions on every input class', t => {
  const { rng } = seededRng(t, 1401)
  const xs = [...DOUBLES, ...f32Inputs(() => rng.int(0, 2 ** 32), 200_000)]
  for (const [name, old] of Object.entries(OLD_TO)) {
    let bad = 0
    for (const x of xs) {
      const got = f32ToBf16(x)
      const want = old(x)
      // For a NaN input only "a quiet NaN" is the conversion's: the payload and sign a JS number
      // carries into the function may differ between two calls (V8 may canonicalize NaNs).
      const same = Number.isNaN(x) ? (got & 0x7fc0) === 0x7fc0 && (want & 0x7fc0) === 0x7fc0 : got === want
      if (!same && bad++ < 5) t.fail(`${name}: x = ${x} (f32 bits 0x${toBits(x).toString(16)}): 0x${got.toString(16)}, old gives 0x${want.toString(16)}`)
    }
    t.is(bad, 0, name)
  }
})

test('f32ToBf16: hand-checked cases (ties to even, carry, overflow, NaN kept with its sign, subnormals)', t => {
  t.is(f32ToBf16(1), 0x3f80)
  t.is(f32ToBf16(1 + 2 ** -8), 0x3f80, 'a tie between 1 and 1 + 2^-7 goes to the even mantissa')
  t.is(f32ToBf16(1 + 3 * 2 ** -8), 0x3f82, 'a tie between odd and even goes up to even')
  t.is(f32ToBf16(fromBits(0x3fffffff)), 0x4000, 'the carry goes into the exponent')
  t.is(f32ToBf16(fromBits(0x7f7fffff)), 0x7f80, 'past the largest bf16: +Inf')
  t.is(f32ToBf16(-Infinity), 0xff80)
  t.is(f32ToBf16(-0), 0x8000)
  // A NaN read into a JS number may lose its payload and sign (V8 may canonicalize it), so only
  // "a quiet NaN, never Inf" is a property of the conversion.
  const quietNaN = (w: number): boolean => (w & 0x7fc0) === 0x7fc0
  t.true(quietNaN(f32ToBf16(fromBits(0x7f800001))), 'a NaN with its payload in the low half stays NaN (not +Inf)')
  t.true(quietNaN(f32ToBf16(fromBits(0xff800001))), 'of either sign')
  t.is(f32ToBf16(fromBits(0x00008000)), 0x0000, 'the smallest subnormal tie goes to even (zero)')
  t.is(f32ToBf16(fromBits(0x00018000)), 0x0002, 'an odd subnormal tie goes up')
  t.is(f32ToBf16(fromBits(0x007fffff)), 0x0080, 'the largest subnormal rounds up to the smallest normal')
})

test('bf16ToF32 gives the value of each old conversion for all 65,536 bf16 words, and inverts f32ToBf16', t => {
  for (const [name, old] of Object.entries(OLD_FROM)) {
    let bad = 0
    for (let h = 0; h < 0x10000; h++) {
      // The result is a JS number: a NaN's payload is not observable reliably there (V8 may
      // canonicalize it depending on how optimized the reading code is), so NaN only must stay NaN.
      const got = bf16ToF32(h)
      const want = old(h)
      if (Number.isNaN(want) ? !Number.isNaN(got) : !Object.is(got, want) || toBits(got) !== toBits(want)) bad++
    }
    t.is(bad, 0, name)
  }
  let notInverse = 0
  for (let h = 0; h < 0x10000; h++) {
    const back = f32ToBf16(bf16ToF32(h))
    // A NaN word comes back as a quiet NaN (its payload and sign are not kept by a JS number);
    // every other word exactly.
    const ok = (h & 0x7fff) > 0x7f80 ? (back & 0x7fc0) === 0x7fc0 : back === h
    if (!ok) notInverse++
  }
  t.is(notInverse, 0)
})
