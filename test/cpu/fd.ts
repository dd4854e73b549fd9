import type { ExecutionContext } from 'ava'
import type { Rng } from '../../core/index.ts'
import type { Backend, Tensor } from '../../gpu/index.ts'

/**
 * Finite-difference gradient checks for ops whose inputs and outputs live in f32 tensors.
 *
 * The scalar checked is L = Σ w·out (f64 on the host, w random), so the analytic gradient of an
 * input is what the op's backward returns for dout = w. Each probed coordinate x is moved to
 * f32(x ± eps); the quotient divides by the actual (f32) step, not by 2·eps.
 */
export interface FdInput {
  name: string
  tensor: Tensor
  /** Analytic gradient of L for this input. */
  grad: Float32Array
}

export interface FdOptions {
  eps: number
  /** |num - ana| <= atol + rtol * max(|num|, |ana|). */
  rtol: number
  atol: number
  /** At most this many coordinates per input (all when the input is smaller). */
  maxProbes?: number
}

/** Σ w·x in f64. */
export function dot64(w: ArrayLike<number>, x: ArrayLike<number>): number {
  let s = 0
  for (let i = 0; i < w.length; i++) s += w[i]! * x[i]!
  return s
}

/** Compares analytic against numeric gradients; reports the worst coordinate per input. */
export function checkGradients(t: ExecutionContext, be: Backend, rng: Rng, inputs: FdInput[], loss: () => number, opts: FdOptions): void {
  for (const inp of inputs) {
    const base = be.read(inp.tensor) as Float32Array
    const n = base.length
    const max = opts.maxProbes ?? 64
    const idx = n <= max ? Array.from({ length: n }, (_, i) => i) : Array.from({ length: max }, () => rng.int(0, n))
    let worst = 0
    let worstMsg = ''
    let bad = 0
    for (const i of idx) {
      const x = base[i]!
      const xp = Math.fround(x + opts.eps)
      const xm = Math.fround(x - opts.eps)
      be.write(inp.tensor, Float32Array.of(xp), i)
      const lp = loss()
      be.write(inp.tensor, Float32Array.of(xm), i)
      const lm = loss()
      be.write(inp.tensor, Float32Array.of(x), i)
      const num = (lp - lm) / (xp - xm)
      const ana = inp.grad[i]!
      const err = Math.abs(num - ana)
      const allowed = opts.atol + opts.rtol * Math.max(Math.abs(num), Math.abs(ana))
      const ratio = err / allowed
      if (ratio > worst) {
        worst = ratio
        worstMsg = `${inp.name}[${i}]: numeric ${num}, analytic ${ana}`
      }
      if (!(err <= allowed)) bad++
    }
    t.is(bad, 0, `${inp.name}: ${bad} of ${idx.length} coordinates outside tolerance; worst ${worstMsg}`)
    t.log(`${inp.name}: worst error / allowed = ${worst.toFixed(3)} (${worstMsg})`)
  }
}

/** Max |a - b| / (atol + rtol |b|) over all elements; <= 1 means within tolerance. */
export function closeness(a: ArrayLike<number>, b: ArrayLike<number>, rtol: number, atol: number): { ratio: number; at: number } {
  let ratio = 0
  let at = -1
  if (a.length !== b.length) return { ratio: Infinity, at: -1 }
  for (let i = 0; i < a.length; i++) {
    const r = Math.abs(a[i]! - b[i]!) / (atol + rtol * Math.abs(b[i]!))
    if (!(r <= ratio)) {
      ratio = r
      at = i
    }
  }
  return { ratio, at }
}

/** Uploads a host array to a new f32 tensor. */
export function upload(be: Backend, data: Float32Array, shape?: number[]): Tensor {
  const t = be.alloc('f32', shape ?? [data.length])
  be.write(t, data)
  return t
}

export function uploadI32(be: Backend, data: Int32Array): Tensor {
  const t = be.alloc('i32', [data.length])
  be.write(t, data)
  return t
}

export function readF32(be: Backend, t: Tensor): Float32Array {
  return be.read(t) as Float32Array
}
