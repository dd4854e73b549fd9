// Shared set-up for the GPU suite: probe CUDA once per file; where there is no driver or
// device (CI), every test registers as skipped with the reason in its title.
import test, { type ExecutionContext } from 'ava'
import type { Backend, Tensor } from '../../gpu/backend.ts'
import type { CudaBackend } from '../../gpu/cuda/index.ts'
import { bf16ToF32, f32ToBf16 } from '../../codec/index.ts'
import { CpuBackend } from '../../gpu/cpu.ts'

let cuda: CudaBackend | null = null
let reason = ''
try {
  const mod = await import('../../gpu/cuda/index.ts')
  cuda = await mod.createCudaBackend()
} catch (err) {
  reason = `no CUDA here (${(err as Error).name}: ${(err as Error).message.split('\n')[0]})`
}
if (cuda === null) process.stderr.write(`test/gpu: skipping: ${reason}\n`)

export const cpu = new CpuBackend()

/** Registers a test that needs CUDA, or a skipped one naming why. */
export function gpuTest(title: string, fn: (t: ExecutionContext, be: CudaBackend) => void | Promise<void>): void {
  if (cuda === null) {
    test.skip(`${title} [skipped: ${reason}]`, () => {})
    return
  }
  const be = cuda
  test.serial(title, async t => {
    await fn(t, be)
  })
}

/** Seeded uniform / normal-ish generator (xorshift32) so failures reproduce; the seed is in the title. */
export function rand(n: number, seed: number, scale = 1): Float32Array {
  let x = (seed * 2654435761) >>> 0 || 1
  const out = new Float32Array(n)
  for (let i = 0; i < n; i++) {
    let s = 0
    for (let k = 0; k < 3; k++) {
      x ^= x << 13
      x >>>= 0
      x ^= x >>> 17
      x ^= x << 5
      x >>>= 0
      s += x / 4294967296 - 0.5
    }
    out[i] = s * 2 * scale
  }
  return out
}

/** Rounds to bf16 and back, so CPU and GPU see the same inputs. */
export function roundBf16(a: Float32Array): Float32Array {
  const out = new Float32Array(a.length)
  for (let i = 0; i < a.length; i++) out[i] = bf16ToF32(f32ToBf16(a[i]!))
  return out
}

/** Uploads f32 data as `dtype` (bf16: rounded). */
export function up(be: Backend, dtype: 'f32' | 'bf16', data: Float32Array, shape: number[] = [data.length]): Tensor {
  const t = be.alloc(dtype, shape)
  if (dtype === 'f32') be.write(t, data)
  else {
    const bits = new Uint16Array(data.length)
    for (let i = 0; i < data.length; i++) bits[i] = f32ToBf16(data[i]!)
    be.write(t, bits)
  }
  return t
}

/** Reads a float tensor as f32. */
export function down(be: Backend, t: Tensor): Float32Array {
  const h = be.read(t)
  if (h instanceof Float32Array) return h
  const out = new Float32Array(h.length)
  for (let i = 0; i < h.length; i++) out[i] = bf16ToF32(h[i]!)
  return out
}

/** |got − want| ≤ atol + rtol·|want| everywhere; reports the worst element. */
export function close(t: ExecutionContext, got: Float32Array, want: Float32Array, rtol: number, atol: number, label: string): void {
  t.is(got.length, want.length, `${label}: length`)
  let worst = -1
  let worstExcess = 0
  let maxErr = 0
  for (let i = 0; i < want.length; i++) {
    const err = Math.abs(got[i]! - want[i]!)
    if (!(err <= maxErr)) maxErr = err
    const excess = err - (atol + rtol * Math.abs(want[i]!))
    if (!(excess <= worstExcess) || Number.isNaN(got[i]!)) {
      worstExcess = Number.isNaN(excess) ? Infinity : excess
      worst = i
    }
  }
  if (worst >= 0) t.fail(`${label}: element ${worst} got ${got[worst]!}, want ${want[worst]!} (rtol ${rtol}, atol ${atol}; max abs err ${maxErr})`)
  else t.pass()
}

/** Max |x| (sets atol relative to the data's scale). */
export function absMax(a: Float32Array): number {
  let m = 0
  for (const v of a) m = Math.max(m, Math.abs(v))
  return m
}
