import { checkCap } from '../core/index.ts'
import {
  quantize as codecQuantize,
  dequantize as codecDequantize,
  dequantizeAccumulate as codecDequantizeAccumulate,
  quantizedSize,
  validateQuantOptions,
  f32ToBf16,
  bf16ToF32,
  type Quantized
} from '../codec/index.ts'
import { deviceMemoryExceeded } from './errors.ts'
import type { AdamWParams, Backend, Fence, GemmParams, HostArray, LionParams, Tensor, TensorDType } from './backend.ts'
import { GPT_LAYERNORM_EPS } from './gpt.ts'
import { zoNegative, type ZoSeed } from './zo.ts'
import { adam8Blocks } from './adam8.ts'
import { adamw8bitHost, adamwHost, lion8bitHost, lionHost } from './host-optim.ts'
import {
  PASSED_FENCE,
  allocSize,
  checkAdamW,
  checkDownload,
  checkFinite,
  checkGemmOperands,
  checkInt,
  checkLion,
  checkSigns,
  fail,
  gemmShape,
  hostArrayOf,
  isHostOf,
  shapeLength
} from './validate.ts'

/**
 * The CPU reference backend: plain TypeScript over typed arrays, llm.c semantics.
 *
 * Numerics: tensors are stored as f32 (bf16 as raw Uint16 bits, i32, u8)
 inside an op every
 * sum is carried in a JS double and rounded to f32 once when stored. That makes this backend a
 * slightly *more* accurate reference than llm.c's CPU code, which is what the CUDA comparison
 * tolerances assume. Compute ops accept only f32 activations (bf16 exists here for
 * alloc / view / read / write / fill / copy / cast, so bf16 buffers can be checked bit for bit).
 */

/** Caps on what the CPU backend allocates
checked before allocating (LimitExceededError). */
export const CPU_LIMITS = Object.freeze({
  /** Largest single tensor (bytes). V8 typed arrays top out near here anyway. */
  maxTensorBytes: 2 ** 31,
  /** All live allocations of one backend together (bytes). */
  maxTotalBytes: 16 * 2 ** 30,
  /** Highest tensor rank. */
  maxRank: 8
})

/** Options for {@link CpuBackend}
the caps default to {@link CPU_LIMITS}. */
export interface CpuBackendInit {
  maxTensorBytes?: number
  maxTotalBytes?: number
  /**
   * Tensors in SharedArrayBuffer memory, which worker threads can update in place (`--offload
   * cpu`'s shard: gpu/host-optim-threads.ts reads {@link CpuBackend.storage}).
   */
  shared?: boolean
  /** `--device-memory`: live tensor bytes beyond this are a DeviceOutOfMemoryError, as on a device that full. */
  deviceMemoryBytes?: number
}

type Storage = Float32Array | Uint16Array | Int32Array | Uint8Array

interface Allocation {
  bytes: number
  freed: boolean
}

class CpuTensor implements Tensor {
  readonly dtype: TensorDType
  readonly shape: readonly number[]
  readonly length: number
  /** This tensor's elements (a subarray for views). */
  readonly data: Storage
  readonly alloc: Allocation
  readonly owner: CpuBackend
  readonly isView: boolean

  constructor(owner: CpuBackend, dtype: TensorDType, shape: readonly number[], data: Storage, alloc: Allocation, isView: boolean) {
    this.owner = owner
    this.dtype = dtype
    this.shape = Object.freeze([...shape])
    this.length = data.length
    this.data = data
    this.alloc = alloc
    this.isView = isView
  }
}

// ---- validation helpers -------------------------------------------------------------------

const GELU_SCALE = Math.sqrt(2 / Math.PI)
const LN_EPS = GPT_LAYERNORM_EPS

/**
 * The reference backend. Every op validates all of its arguments (ownership, dtype, length,
 * sizes, liveness) before it writes anything.
 */
export class CpuBackend implements Backend {
  readonly kind = 'cpu' as const
  readonly description: string
  private readonly maxTensorBytes: number
  private readonly maxTotalBytes: number
  private readonly shared: boolean
  private readonly deviceMemoryBytes: number | undefined
  private liveBytes = 0
  private peakBytes = 0
  private readonly live = new Set<Allocation>()
  private disposed = false

  constructor(init: CpuBackendInit = {}) {
    this.maxTensorBytes = init.maxTensorBytes ?? CPU_LIMITS.maxTensorBytes
    this.maxTotalBytes = init.maxTotalBytes ?? CPU_LIMITS.maxTotalBytes
    this.shared = init.shared === true
    this.deviceMemoryBytes = init.deviceMemoryBytes
    this.description = `cpu: TypeScript reference backend (f32 compute), node ${process.versions.node}`
  }

  /** Bytes held by live allocations (for tests and doctor). */
  get allocatedBytes(): number {
    return this.liveBytes
  }
  /** The most bytes live allocations ever held at once (what a `--device-memory` cap must allow). */
  get peakAllocatedBytes(): number {
    return this.peakBytes
  }

  // ---- argument checks --------------------------------------------------------------------

  private live_(op: string): void {
    if (this.disposed) fail(op, 'the backend has been disposed')
  }

  /** Checks that `t` is a live tensor of this backend with one of the dtypes (and a length). */
  private arg(op: string, name: string, t: Tensor | null | undefined, dtypes: readonly TensorDType[], length?: number): CpuTensor {
    if (!(t instanceof CpuTensor) || t.owner !== this) fail(op, `${name} is not a tensor of this cpu backend`)
    if (t.alloc.freed) fail(op, `${name} has been freed`)
    if (!dtypes.includes(t.dtype)) fail(op, `${name} must be ${dtypes.join(' or ')}, got ${t.dtype}`)
    if (length !== undefined && t.length !== length) fail(op, `${name} must have ${length} elements, got ${t.length}`)
    return t
  }

  private f32(op: string, name: string, t: Tensor | null | undefined, length?: number): Float32Array {
    return this.arg(op, name, t, ['f32'], length).data as Float32Array
  }

  /** An optimizer's optional bf16 copy of the params (`length` elements), or null without one. */
  private lowp(op: string, t: Tensor | null | undefined, length: number): Uint16Array | null {
    return t === undefined || t === null ? null : (this.arg(op, 'paramsLowp', t, ['bf16'], length).data as Uint16Array)
  }

  private i32(op: string, name: string, t: Tensor | null | undefined, length?: number): Int32Array {
    return this.arg(op, name, t, ['i32'], length).data as Int32Array
  }

  // ---- memory -----------------------------------------------------------------------------

  alloc(dtype: TensorDType, shape: readonly number[]): Tensor {
    this.live_('alloc')
    const { n, bytes } = allocSize(dtype, shape, CPU_LIMITS.maxRank, 'cpu tensor bytes', this.maxTensorBytes)
    checkCap('cpu backend total bytes', this.liveBytes + bytes, this.maxTotalBytes)
    const cap = this.deviceMemoryBytes
    if (cap !== undefined && this.liveBytes + bytes > cap) throw deviceMemoryExceeded(cap, bytes, this.liveBytes)
    const data = hostArrayOf(dtype, n, this.shared ? new SharedArrayBuffer(bytes) : undefined)
    const a: Allocation = { bytes, freed: false }
    this.live.add(a)
    this.liveBytes += bytes
    if (this.liveBytes > this.peakBytes) this.peakBytes = this.liveBytes
    return new CpuTensor(this, dtype, shape, data, a, false)
  }

  /**
   * A tensor's own memory (no copy): what `--offload cpu` hands its optimizer threads and the
   * device's copies. Writes to it are the tensor's.
   */
  storage(t: Tensor): HostArray {
    this.live_('storage')
    return this.arg('storage', 't', t, ['f32', 'bf16', 'i32', 'u8']).data
  }

  view(base: Tensor, offset: number, shape: readonly number[]): Tensor {
    this.live_('view')
    const b = this.arg('view', 'base', base, ['f32', 'bf16', 'i32', 'u8'])
    const n = shapeLength('view', shape, CPU_LIMITS.maxRank)
    checkInt('view', 'offset', offset, 0)
    if (offset + n > b.length) fail('view', `offset ${offset} + ${n} elements exceeds the base's ${b.length}`)
    return new CpuTensor(this, b.dtype, shape, b.data.subarray(offset, offset + n), b.alloc, true)
  }

  free(t: Tensor): void {
    this.live_('free')
    const x = this.arg('free', 't', t, ['f32', 'bf16', 'i32', 'u8'])
    if (x.isView) return
    x.alloc.freed = true
    if (this.live.delete(x.alloc)) this.liveBytes -= x.alloc.bytes
  }

  write(t: Tensor, src: HostArray, offset = 0): void {
    this.live_('write')
    const x = this.arg('write', 't', t, ['f32', 'bf16', 'i32', 'u8'])
    const want = hostTypeName(x.dtype)
    if (!isHostOf(src, x.dtype)) fail('write', `src must be a ${want} for a ${x.dtype} tensor`)
    checkInt('write', 'offset', offset, 0)
    if (offset + src.length > x.length) fail('write', `offset ${offset} + ${src.length} elements exceeds the tensor's ${x.length}`)
    x.data.set(src as never, offset)
  }

  read(t: Tensor): HostArray {
    this.live_('read')
    return this.arg('read', 't', t, ['f32', 'bf16', 'i32', 'u8']).data.slice()
  }

  fill(t: Tensor, value: number): void {
    this.live_('fill')
    const x = this.arg('fill', 't', t, ['f32', 'bf16', 'i32', 'u8'])
    if (typeof value !== 'number') fail('fill', 'value must be a number')
    switch (x.dtype) {
      case 'f32':
        x.data.fill(value)
        break
      case 'bf16':
        x.data.fill(f32ToBf16(value))
        break
      case 'i32':
        if (!Number.isInteger(value) || value < -(2 ** 31) || value >= 2 ** 31) fail('fill', `value ${value} is not an i32`)
        x.data.fill(value)
        break
      case 'u8':
        if (!Number.isInteger(value) || value < 0 || value > 255) fail('fill', `value ${value} is not a u8`)
        x.data.fill(value)
        break
    }
  }

  copy(dst: Tensor, src: Tensor): void {
    this.live_('copy')
    const s = this.arg('copy', 'src', src, ['f32', 'bf16', 'i32', 'u8'])
    const d = this.arg('copy', 'dst', dst, [s.dtype], s.length)
    d.data.set(s.data as never)
  }

  synchronize(): void {
    this.live_('synchronize')
  }

  // Synchronous: every op is done when it returns, so each fence is passed when made.
  fence(): Fence {
    this.live_('fence')
    return PASSED_FENCE
  }

  hostAlloc(dtype: TensorDType, length: number): HostArray {
    this.live_('hostAlloc')
    const { n } = allocSize(dtype, [length], 1, 'cpu host array bytes', this.maxTensorBytes)
    return hostArrayOf(dtype, n)
  }

  hostRegister(a: HostArray): void {
    this.live_('hostRegister')
    if (!(a.buffer instanceof SharedArrayBuffer)) fail('hostRegister', 'the array must be in shared memory (a SharedArrayBuffer)')
  }

  freeHost(_a: HostArray): void {
    this.live_('freeHost') // garbage-collected memory: nothing to release
  }

  download(dst: HostArray, src: Tensor, dstOffset = 0): Fence {
    this.live_('download')
    const s = this.arg('download', 'src', src, ['f32', 'bf16', 'i32', 'u8'])
    checkDownload(dst, s.dtype, s.length, dstOffset)
    dst.set(s.data as never, dstOffset)
    return PASSED_FENCE
  }

  warmup(): void {
    this.live_('warmup') // no kernels to prepare
  }

  dispose(): void {
    for (const a of this.live) a.freed = true
    this.live.clear()
    this.liveBytes = 0
    this.disposed = true
  }

  // ---- generic math -----------------------------------------------------------------------

  gemm(p: GemmParams): void {
    const op = 'gemm'
    this.live_(op)
    const g = gemmShape(op, p)
    const { m, n, k, batch, sA, sB, sC, alpha, beta } = g
    const A = this.f32(op, 'a', p.a)
    const Bm = this.f32(op, 'b', p.b)
    const C = this.f32(op, 'c', p.c)
    checkGemmOperands(op, g, A.length, Bm.length, C.length)
    const transA = p.transA === true
    const transB = p.transB === true
    const arow = new Float64Array(k)
    const acc = new Float64Array(n)
    for (let bt = 0; bt < batch; bt++) {
      const oA = bt * sA
      const oB = bt * sB
      const oC = bt * sC
      for (let i = 0; i < m; i++) {
        if (transA) for (let kk = 0; kk < k; kk++) arow[kk] = A[oA + kk * m + i]!
        else for (let kk = 0; kk < k; kk++) arow[kk] = A[oA + i * k + kk]!
        if (transB) {
          // B stored [n, k]: each output is a dot product of two contiguous rows.
          for (let j = 0; j < n; j++) {
            const ob = oB + j * k
            let s = 0
            for (let kk = 0; kk < k; kk++) s += arow[kk]! * Bm[ob + kk]!
            acc[j] = s
          }
        } else {
          // B stored [k, n]: i-k-j order, streaming rows of B into the accumulator row.
          acc.fill(0)
          for (let kk = 0; kk < k; kk++) {
            const a = arow[kk]!
            const ob = oB + kk * n
            for (let j = 0; j < n; j++) acc[j]! += a * Bm[ob + j]!
          }
        }
        const oc = oC + i * n
        // beta = 0 means C is not read (BLAS convention: NaN in C does not propagate).
        if (beta === 0) for (let j = 0; j < n; j++) C[oc + j] = alpha * acc[j]!
        else for (let j = 0; j < n; j++) C[oc + j] = alpha * acc[j]! + beta * C[oc + j]!
      }
    }
  }

  add(dst: Tensor, src: Tensor): void {
    const op = 'add'
    this.live_(op)
    const s = this.f32(op, 'src', src)
    const d = this.f32(op, 'dst', dst, s.length)
    for (let i = 0; i < d.length; i++) d[i] = d[i]! + s[i]!
  }

  residualForward(out: Tensor, a: Tensor, b: Tensor): void {
    const op = 'residualForward'
    this.live_(op)
    const x = this.f32(op, 'a', a)
    const y = this.f32(op, 'b', b, x.length)
    const o = this.f32(op, 'out', out, x.length)
    for (let i = 0; i < o.length; i++) o[i] = x[i]! + y[i]!
  }

  scale(t: Tensor, s: number): void {
    const op = 'scale'
    this.live_(op)
    checkFinite(op, 's', s)
    const x = this.f32(op, 't', t)
    for (let i = 0; i < x.length; i++) x[i] = x[i]! * s
  }

  sumSquares(t: Tensor): number {
    const op = 'sumSquares'
    this.live_(op)
    const x = this.f32(op, 't', t)
    let s = 0
    for (let i = 0; i < x.length; i++) s += x[i]! * x[i]!
    return s
  }

  cast(dst: Tensor, src: Tensor): void {
    const op = 'cast'
    this.live_(op)
    const s = this.arg(op, 'src', src, ['f32', 'bf16'])
    const d = this.arg(op, 'dst', dst, ['f32', 'bf16'], s.length)
    if (s.dtype === d.dtype) {
      d.data.set(s.data as never)
    } else if (s.dtype === 'f32') {
      const sd = s.data as Float32Array
      const dd = d.data as Uint16Array
      for (let i = 0; i < sd.length; i++) dd[i] = f32ToBf16(sd[i]!)
    } else {
      const sd = s.data as Uint16Array
      const dd = d.data as Float32Array
      for (let i = 0; i < sd.length; i++) dd[i] = bf16ToF32(sd[i]!)
    }
  }

  // ---- GPT ops ----------------------------------------------------------------------------

  encoderForward(out: Tensor, tokens: Tensor, wte: Tensor, wpe: Tensor, B: number, T: number, C: number): void {
    const op = 'encoderForward'
    this.live_(op)
    checkInt(op, 'B', B)
    checkInt(op, 'T', T)
    checkInt(op, 'C', C)
    const o = this.f32(op, 'out', out, B * T * C)
    const tok = this.i32(op, 'tokens', tokens, B * T)
    const e = this.f32(op, 'wte', wte)
    const p = this.f32(op, 'wpe', wpe)
    const V = this.tableRows(op, 'wte', e.length, C, 1)
    this.tableRows(op, 'wpe', p.length, C, T)
    checkTokens(op, tok, V)
    for (let bt = 0; bt < B * T; bt++) {
      const t = bt % T
      const oe = tok[bt]! * C
      const op_ = t * C
      const oo = bt * C
      for (let c = 0; c < C; c++) o[oo + c] = e[oe + c]! + p[op_ + c]!
    }
  }

  encoderBackward(dwte: Tensor, dwpe: Tensor, dout: Tensor, tokens: Tensor, B: number, T: number, C: number): void {
    const op = 'encoderBackward'
    this.live_(op)
    checkInt(op, 'B', B)
    checkInt(op, 'T', T)
    checkInt(op, 'C', C)
    const d = this.f32(op, 'dout', dout, B * T * C)
    const tok = this.i32(op, 'tokens', tokens, B * T)
    const de = this.f32(op, 'dwte', dwte)
    const dp = this.f32(op, 'dwpe', dwpe)
    const V = this.tableRows(op, 'dwte', de.length, C, 1)
    this.tableRows(op, 'dwpe', dp.length, C, T)
    checkTokens(op, tok, V)
    for (let bt = 0; bt < B * T; bt++) {
      const t = bt % T
      const oe = tok[bt]! * C
      const op_ = t * C
      const od = bt * C
      for (let c = 0; c < C; c++) {
        const g = d[od + c]!
        de[oe + c] = de[oe + c]! + g
        dp[op_ + c] = dp[op_ + c]! + g
      }
    }
  }

  /** An embedding table is [rows, C] with at least `minRows` rows
  returns rows. */
  private tableRows(op: string, name: string, length: number, C: number, minRows: number): number {
    if (length % C !== 0) fail(op, `${name} has ${length} elements, not a multiple of C = ${C}`)
    const rows = length / C
    if (rows < minRows) fail(op, `${name} has ${rows} rows, needs at least ${minRows}`)
    return rows
  }

  layernormForward(out: Tensor, mean: Tensor, rstd: Tensor, inp: Tensor, weight: Tensor, bias: Tensor, N: number, C: number): void {
    const op = 'layernormForward'
    this.live_(op)
    checkInt(op, 'N', N)
    checkInt(op, 'C', C)
    const o = this.f32(op, 'out', out, N * C)
    const mu = this.f32(op, 'mean', mean, N)
    const rs = this.f32(op, 'rstd', rstd, N)
    const x = this.f32(op, 'inp', inp, N * C)
    const w = this.f32(op, 'weight', weight, C)
    const b = this.f32(op, 'bias', bias, C)
    for (let i = 0; i < N; i++) {
      const ox = i * C
      let s = 0
      for (let c = 0; c < C; c++) s += x[ox + c]!
      const m = s / C
      let v = 0
      for (let c = 0; c < C; c++) {
        const d = x[ox + c]! - m
        v += d * d
      }
      const r = 1 / Math.sqrt(v / C + LN_EPS)
      for (let c = 0; c < C; c++) o[ox + c] = (x[ox + c]! - m) * r * w[c]! + b[c]!
      mu[i] = m
      rs[i] = r
    }
  }

  layernormBackward(
    dinp: Tensor,
    dweight: Tensor,
    dbias: Tensor,
    dout: Tensor,
    inp: Tensor,
    weight: Tensor,
    mean: Tensor,
    rstd: Tensor,
    N: number,
    C: number
  ): void {
    const op = 'layernormBackward'
    this.live_(op)
    checkInt(op, 'N', N)
    checkInt(op, 'C', C)
    const dx = this.f32(op, 'dinp', dinp, N * C)
    const dw = this.f32(op, 'dweight', dweight, C)
    const db = this.f32(op, 'dbias', dbias, C)
    const dy = this.f32(op, 'dout', dout, N * C)
    const x = this.f32(op, 'inp', inp, N * C)
    const w = this.f32(op, 'weight', weight, C)
    const mu = this.f32(op, 'mean', mean, N)
    const rs = this.f32(op, 'rstd', rstd, N)
    const dwAcc = new Float64Array(C)
    const dbAcc = new Float64Array(C)
    for (let i = 0; i < N; i++) {
      const o = i * C
      const m = mu[i]!
      const r = rs[i]!
      let dnormMean = 0
      let dnormNormMean = 0
      for (let c = 0; c < C; c++) {
        const norm = (x[o + c]! - m) * r
        const dnorm = w[c]! * dy[o + c]!
        dnormMean += dnorm
        dnormNormMean += dnorm * norm
      }
      dnormMean /= C
      dnormNormMean /= C
      for (let c = 0; c < C; c++) {
        const norm = (x[o + c]! - m) * r
        const g = dy[o + c]!
        dbAcc[c]! += g
        dwAcc[c]! += norm * g
        const dnorm = w[c]! * g
        dx[o + c] = dx[o + c]! + (dnorm - dnormMean - norm * dnormNormMean) * r
      }
    }
    for (let c = 0; c < C; c++) {
      dw[c] = dw[c]! + dwAcc[c]!
      db[c] = db[c]! + dbAcc[c]!
    }
  }

  matmulForward(out: Tensor, inp: Tensor, weight: Tensor, bias: Tensor | null, N: number, C: number, OC: number): void {
    const op = 'matmulForward'
    this.live_(op)
    checkInt(op, 'N', N)
    checkInt(op, 'C', C)
    checkInt(op, 'OC', OC)
    const o = this.f32(op, 'out', out, N * OC)
    const x = this.f32(op, 'inp', inp, N * C)
    const w = this.f32(op, 'weight', weight, OC * C)
    const b = bias === null ? null : this.f32(op, 'bias', bias, OC)
    const row = new Float64Array(C)
    for (let i = 0; i < N; i++) {
      const ox = i * C
      for (let c = 0; c < C; c++) row[c] = x[ox + c]!
      const oo = i * OC
      for (let j = 0; j < OC; j++) {
        const ow = j * C
        let s = b === null ? 0 : b[j]!
        for (let c = 0; c < C; c++) s += row[c]! * w[ow + c]!
        o[oo + j] = s
      }
    }
  }

  matmulBackward(dinp: Tensor, dweight: Tensor, dbias: Tensor | null, dout: Tensor, inp: Tensor, weight: Tensor, N: number, C: number, OC: number): void {
    const op = 'matmulBackward'
    this.live_(op)
    checkInt(op, 'N', N)
    checkInt(op, 'C', C)
    checkInt(op, 'OC', OC)
    const dx = this.f32(op, 'dinp', dinp, N * C)
    const dw = this.f32(op, 'dweight', dweight, OC * C)
    const db = dbias === null ? null : this.f32(op, 'dbias', dbias, OC)
    const dy = this.f32(op, 'dout', dout, N * OC)
    const x = this.f32(op, 'inp', inp, N * C)
    const w = this.f32(op, 'weight', weight, OC * C)
    // dinp[n, :] = Σ_oc dout[n, oc] · weight[oc, :]   (i-k-j into a row accumulator)
    const acc = new Float64Array(C)
    for (let i = 0; i < N; i++) {
      acc.fill(0)
      const oy = i * OC
      for (let j = 0; j < OC; j++) {
        const g = dy[oy + j]!
        const ow = j * C
        for (let c = 0; c < C; c++) acc[c]! += g * w[ow + c]!
      }
      const ox = i * C
      for (let c = 0; c < C; c++) dx[ox + c] = acc[c]!
    }
    // dweight[oc, :] += Σ_n dout[n, oc] · inp[n, :]
    for (let j = 0; j < OC; j++) {
      acc.fill(0)
      let bsum = 0
      for (let i = 0; i < N; i++) {
        const g = dy[i * OC + j]!
        bsum += g
        const ox = i * C
        for (let c = 0; c < C; c++) acc[c]! += g * x[ox + c]!
      }
      const ow = j * C
      for (let c = 0; c < C; c++) dw[ow + c] = dw[ow + c]! + acc[c]!
      if (db !== null) db[j] = db[j]! + bsum
    }
  }

  geluForward(out: Tensor, inp: Tensor): void {
    const op = 'geluForward'
    this.live_(op)
    const x = this.f32(op, 'inp', inp)
    const o = this.f32(op, 'out', out, x.length)
    for (let i = 0; i < x.length; i++) {
      const v = x[i]!
      o[i] = 0.5 * v * (1 + Math.tanh(GELU_SCALE * (v + 0.044715 * v * v * v)))
    }
  }

  geluBackward(dinp: Tensor, inp: Tensor, dout: Tensor): void {
    const op = 'geluBackward'
    this.live_(op)
    const x = this.f32(op, 'inp', inp)
    const dy = this.f32(op, 'dout', dout, x.length)
    const dx = this.f32(op, 'dinp', dinp, x.length)
    for (let i = 0; i < x.length; i++) {
      const v = x[i]!
      const u = GELU_SCALE * (v + 0.044715 * v * v * v)
      const th = Math.tanh(u)
      const sech2 = 1 - th * th
      const local = 0.5 * (1 + th) + 0.5 * v * sech2 * GELU_SCALE * (1 + 3 * 0.044715 * v * v)
      dx[i] = local * dy[i]!
    }
  }

  private attnSizes(op: string, B: number, T: number, C: number, NH: number): number {
    checkInt(op, 'B', B)
    checkInt(op, 'T', T)
    checkInt(op, 'C', C)
    checkInt(op, 'NH', NH)
    if (C % NH !== 0) fail(op, `C = ${C} is not a multiple of NH = ${NH}`)
    return C / NH
  }

  attentionForward(out: Tensor, lse: Tensor, qkv: Tensor, B: number, T: number, C: number, NH: number): void {
    const op = 'attentionForward'
    this.live_(op)
    const hs = this.attnSizes(op, B, T, C, NH)
    const o = this.f32(op, 'out', out, B * T * C)
    const l = this.f32(op, 'lse', lse, B * NH * T)
    const x = this.f32(op, 'qkv', qkv, B * T * 3 * C)
    const scale = 1 / Math.sqrt(hs)
    const s = new Float64Array(T)
    const acc = new Float64Array(hs)
    const C3 = 3 * C
    for (let b = 0; b < B; b++) {
      for (let h = 0; h < NH; h++) {
        for (let t = 0; t < T; t++) {
          const oq = (b * T + t) * C3 + h * hs
          let max = -Infinity
          for (let t2 = 0; t2 <= t; t2++) {
            const ok = (b * T + t2) * C3 + C + h * hs
            let d = 0
            for (let i = 0; i < hs; i++) d += x[oq + i]! * x[ok + i]!
            d *= scale
            s[t2] = d
            if (d > max) max = d
          }
          let sum = 0
          for (let t2 = 0; t2 <= t; t2++) {
            const e = Math.exp(s[t2]! - max)
            s[t2] = e
            sum += e
          }
          acc.fill(0)
          for (let t2 = 0; t2 <= t; t2++) {
            const p = s[t2]! / sum
            const ov = (b * T + t2) * C3 + 2 * C + h * hs
            for (let i = 0; i < hs; i++) acc[i]! += p * x[ov + i]!
          }
          const oo = (b * T + t) * C + h * hs
          for (let i = 0; i < hs; i++) o[oo + i] = acc[i]!
          l[(b * NH + h) * T + t] = max + Math.log(sum)
        }
      }
    }
  }

  attentionBackward(dqkv: Tensor, dout: Tensor, qkv: Tensor, out: Tensor, lse: Tensor, B: number, T: number, C: number, NH: number): void {
    const op = 'attentionBackward'
    this.live_(op)
    const hs = this.attnSizes(op, B, T, C, NH)
    const dx = this.f32(op, 'dqkv', dqkv, B * T * 3 * C)
    const dy = this.f32(op, 'dout', dout, B * T * C)
    const x = this.f32(op, 'qkv', qkv, B * T * 3 * C)
    const o = this.f32(op, 'out', out, B * T * C)
    const l = this.f32(op, 'lse', lse, B * NH * T)
    const scale = 1 / Math.sqrt(hs)
    const C3 = 3 * C
    // Accumulate one (b, h) slice in f64, then store: dq, dk, dv of shape [T, hs].
    const dq = new Float64Array(T * hs)
    const dk = new Float64Array(T * hs)
    const dv = new Float64Array(T * hs)
    for (let b = 0; b < B; b++) {
      for (let h = 0; h < NH; h++) {
        dq.fill(0)
        dk.fill(0)
        dv.fill(0)
        for (let t = 0; t < T; t++) {
          const oq = (b * T + t) * C3 + h * hs
          const oo = (b * T + t) * C + h * hs
          const lrow = l[(b * NH + h) * T + t]!
          // D = dO · O: the softmax backward's row term, from the forward's output.
          let D = 0
          for (let i = 0; i < hs; i++) D += dy[oo + i]! * o[oo + i]!
          for (let t2 = 0; t2 <= t; t2++) {
            const ok = (b * T + t2) * C3 + C + h * hs
            const ov = ok + C
            let sc = 0
            let dp = 0
            for (let i = 0; i < hs; i++) {
              sc += x[oq + i]! * x[ok + i]!
              dp += dy[oo + i]! * x[ov + i]!
            }
            const p = Math.exp(sc * scale - lrow)
            const ds = p * (dp - D) * scale
            const r2 = t2 * hs
            const r = t * hs
            for (let i = 0; i < hs; i++) {
              dv[r2 + i]! += p * dy[oo + i]!
              dq[r + i]! += ds * x[ok + i]!
              dk[r2 + i]! += ds * x[oq + i]!
            }
          }
        }
        for (let t = 0; t < T; t++) {
          const base = (b * T + t) * C3 + h * hs
          const r = t * hs
          for (let i = 0; i < hs; i++) {
            dx[base + i] = dq[r + i]!
            dx[base + C + i] = dk[r + i]!
            dx[base + 2 * C + i] = dv[r + i]!
          }
        }
      }
    }
  }

  crossEntropy(losses: Tensor, dlogits: Tensor | null, logits: Tensor, targets: Tensor, N: number, V: number, Vp: number, dlossScale: number): void {
    const op = 'crossEntropy'
    this.live_(op)
    checkInt(op, 'N', N)
    checkInt(op, 'V', V)
    checkInt(op, 'Vp', Vp)
    if (Vp < V) fail(op, `Vp = ${Vp} must be >= V = ${V}`)
    checkFinite(op, 'dlossScale', dlossScale)
    const lo = this.f32(op, 'losses', losses, N)
    const x = this.f32(op, 'logits', logits, N * Vp)
    const dx = dlogits === null ? null : this.f32(op, 'dlogits', dlogits, N * Vp)
    const tg = this.i32(op, 'targets', targets, N)
    checkTokens(op, tg, V, 'target')
    const row = new Float64Array(V)
    for (let i = 0; i < N; i++) {
      const o = i * Vp
      let max = -Infinity
      for (let v = 0; v < V; v++) {
        const z = x[o + v]!
        row[v] = z
        if (z > max) max = z
      }
      let sum = 0
      for (let v = 0; v < V; v++) sum += Math.exp(row[v]! - max)
      const lse = max + Math.log(sum)
      const target = tg[i]!
      lo[i] = lse - row[target]!
      if (dx !== null) {
        // The row was copied first, so dlogits may alias logits.
        for (let v = 0; v < V; v++) dx[o + v] = (Math.exp(row[v]! - lse) - (v === target ? 1 : 0)) * dlossScale
        for (let v = V; v < Vp; v++) dx[o + v] = 0
      }
    }
  }

  adamw(params: Tensor, grads: Tensor, m: Tensor, v: Tensor, p: AdamWParams, paramsLowp?: Tensor | null): void {
    const op = 'adamw'
    this.live_(op)
    checkAdamW(op, p)
    const w = this.f32(op, 'params', params)
    const g = this.f32(op, 'grads', grads, w.length)
    const mm = this.f32(op, 'm', m, w.length)
    const vv = this.f32(op, 'v', v, w.length)
    const low = this.lowp(op, paramsLowp, w.length)
    adamwHost(w, g, mm, vv, p, low)
  }

  lion(params: Tensor, grads: Tensor, m: Tensor, p: LionParams, paramsLowp?: Tensor | null): void {
    const op = 'lion'
    this.live_(op)
    checkLion(op, p)
    const w = this.f32(op, 'params', params)
    const g = this.f32(op, 'grads', grads, w.length)
    const mm = this.f32(op, 'm', m, w.length)
    const low = this.lowp(op, paramsLowp, w.length)
    lionHost(w, g, mm, p, low)
  }

  addSigns(params: Tensor, scale: number, seed: ZoSeed, offset: number, paramsLowp?: Tensor | null): void {
    const op = 'addSigns'
    this.live_(op)
    const w = this.f32(op, 'params', params)
    checkSigns(op, scale, seed, offset, w.length)
    const low = this.lowp(op, paramsLowp, w.length)
    // w ± s in f64, stored to f32: one correctly rounded f32 addition (53 ≥ 2·24 + 2 bits).
    const s = Math.fround(scale)
    for (let i = 0; i < w.length; i++) {
      w[i] = w[i]! + (zoNegative(seed, offset + i) ? -s : s)
      if (low !== null) low[i] = f32ToBf16(w[i]!)
    }
  }

  adamw8bit(params: Tensor, grads: Tensor, m: Tensor, v: Tensor, scales: Tensor, p: AdamWParams, paramsLowp?: Tensor | null): void {
    const op = 'adamw8bit'
    this.live_(op)
    checkAdamW(op, p)
    const w = this.f32(op, 'params', params)
    const n = w.length
    const g = this.f32(op, 'grads', grads, n)
    const mc = this.arg(op, 'm', m, ['u8'], n).data as Uint8Array
    const vc = this.arg(op, 'v', v, ['u8'], n).data as Uint8Array
    const sc = this.f32(op, 'scales', scales, 2 * adam8Blocks(n))
    const low = this.lowp(op, paramsLowp, n)
    adamw8bitHost(w, g, mc, vc, sc, p, low)
  }

  lion8bit(params: Tensor, grads: Tensor, m: Tensor, scales: Tensor, p: LionParams, paramsLowp?: Tensor | null): void {
    const op = 'lion8bit'
    this.live_(op)
    checkLion(op, p)
    const w = this.f32(op, 'params', params)
    const n = w.length
    const g = this.f32(op, 'grads', grads, n)
    const mc = this.arg(op, 'm', m, ['u8'], n).data as Uint8Array
    const sc = this.f32(op, 'scales', scales, adam8Blocks(n))
    const low = this.lowp(op, paramsLowp, n)
    lion8bitHost(w, g, mc, sc, p, low)
  }

  // ---- quantizers -------------------------------------------------------------------------

  private quantView(op: string, codes: Tensor, scales: Tensor, n: number, bits: 8 | 4, blockSize: number): Quantized {
    try {
      validateQuantOptions({ bits, blockSize })
    } catch (err) {
      fail(op, (err as Error).message)
    }
    const size = quantizedSize(n, { bits, blockSize })
    const c = this.arg(op, 'codes', codes, ['u8'], size.dataBytes).data as Uint8Array
    const s = this.f32(op, 'scales', scales, size.blocks)
    return { bits, blockSize, length: n, scales: s, data: c }
  }

  quantize(codes: Tensor, scales: Tensor, src: Tensor, bits: 8 | 4, blockSize: number): void {
    const op = 'quantize'
    this.live_(op)
    const x = this.f32(op, 'src', src)
    const q = this.quantView(op, codes, scales, x.length, bits, blockSize)
    codecQuantize(x, { bits, blockSize }, q)
  }

  dequantize(dst: Tensor, codes: Tensor, scales: Tensor, bits: 8 | 4, blockSize: number, accumulate: boolean): void {
    const op = 'dequantize'
    this.live_(op)
    const d = this.f32(op, 'dst', dst)
    const q = this.quantView(op, codes, scales, d.length, bits, blockSize)
    if (accumulate) codecDequantizeAccumulate(q, d)
    else codecDequantize(q, d)
  }
}

function hostTypeName(dtype: TensorDType): string {
  switch (dtype) {
    case 'f32':
      return 'Float32Array'
    case 'bf16':
      return 'Uint16Array'
    case 'i32':
      return 'Int32Array'
    case 'u8':
      return 'Uint8Array'
  }
}

function checkTokens(op: string, tok: Int32Array, V: number, what = 'token'): void {
  for (let i = 0; i < tok.length; i++) {
    const x = tok[i]!
    if (x < 0 || x >= V) fail(op, `${what} ${x} at index ${i} is outside [0, ${V})`)
  }
}
