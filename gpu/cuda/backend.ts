import { checkCap } from '../../core/index.ts'
import { NonFiniteError, CodecErrorCode, codecError, validateQuantOptions, quantizedSize, f32ToBf16 } from '../../codec/index.ts'
import {
  TENSOR_DTYPE_BYTES,
  type AdamWParams,
  type Backend,
  type Fence,
  type GemmParams,
  type HostArray,
  type LionParams,
  type Tensor,
  type TensorDType
} from '../backend.ts'
import { CachingAllocator, type Block } from './allocator.ts'
import { KernelCompiler, kernelSource, type CompileOptions } from './compiler.ts'
import { type CudaLibs, checkCu, type Handle } from './ffi.ts'
import { Blas, CUDA_R_16BF, CUDA_R_32F } from './gemm.ts'
import { CUDA_LIMITS } from './limits.ts'
import { ADAM8_MAP_M, ADAM8_MAP_V, adam8Blocks, adam8Constants } from '../adam8.ts'
import { lionConstants } from '../host-optim.ts'
import type { ZoSeed } from '../zo.ts'
import { Transfers } from './transfer.ts'
import {
  allocSize,
  checkAdamW,
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
} from '../validate.ts'

/**
 * The CUDA backend: device tensors from a caching allocator, kernels compiled by NVRTC from
 * ./kernels/*.cu, GEMMs through cuBLAS(Lt), everything issued on one stream in call order.
 *
 * Errors the kernels detect (a target or token out of range, a non-finite quantizer input, an
 * invalid int code) are recorded in a small device flags buffer and raised by the next call
 * that waits for the device (`read`, `synchronize`, `sumSquares`), so a training step never
 * stalls on a check. Everything else is validated on the host before launching.
 */

const ALL: readonly TensorDType[] = ['f32', 'bf16', 'i32', 'u8']
const FLOAT: readonly TensorDType[] = ['f32', 'bf16']
const FLAG_SLOTS = 8
const NO_FLAG = 0xffffffffffffffffn

class CudaTensor implements Tensor {
  readonly dtype: TensorDType
  readonly shape: readonly number[]
  readonly length: number
  readonly ptr: number
  readonly block: Block | null
  readonly owner: CudaBackend
  readonly isView: boolean

  constructor(owner: CudaBackend, dtype: TensorDType, shape: readonly number[], length: number, ptr: number, block: Block | null, isView: boolean) {
    this.owner = owner
    this.dtype = dtype
    this.shape = Object.freeze([...shape])
    this.length = length
    this.ptr = ptr
    this.block = block
    this.isView = isView
  }

  get bytes(): number {
    return this.length * TENSOR_DTYPE_BYTES[this.dtype]
  }
}

/** A compiled kernel with reusable argument slots (cuLaunchKernel copies them at launch). */
class Kernel {
  private readonly libs: CudaLibs
  private readonly fn: Handle
  readonly name: string
  private readonly types: string
  private readonly slots: Uint8Array[]
  private readonly views: DataView[]

  constructor(libs: CudaLibs, fn: Handle, name: string, types: string) {
    this.libs = libs
    this.fn = fn
    this.name = name
    this.types = types
    this.slots = []
    this.views = []
    for (let i = 0; i < types.length; i++) {
      const b = new Uint8Array(8)
      this.slots.push(b)
      this.views.push(new DataView(b.buffer))
    }
  }

  /** Registers per thread and local (spilled) bytes per thread, as the driver reports them. */
  info(): { registers: number; localBytes: number } {
    const get = (attr: number): number => {
      const out = [0]
      checkCu(this.libs, `cuFuncGetAttribute(${this.name})`, this.libs.cu.cuFuncGetAttribute(out, attr, this.fn))
      return out[0]!
    }
    return { registers: get(4), localBytes: get(3) } // CU_FUNC_ATTRIBUTE_NUM_REGS, _LOCAL_SIZE_BYTES
  }

  launch(stream: Handle, gx: number, gy: number, bx: number, by: number, smem: number, args: readonly number[]): void {
    const t = this.types
    for (let i = 0; i < t.length; i++) {
      const v = this.views[i]!
      const x = args[i]!
      switch (t.charCodeAt(i)) {
        case 112: // 'p' device pointer
        case 108: // 'l' int64
          v.setUint32(0, x >>> 0, true)
          v.setInt32(4, Math.floor(x / 4294967296), true)
          break
        case 105:
          v.setInt32(0, x, true)
          break // 'i'
        case 102:
          v.setFloat32(0, x, true)
          break // 'f'
      }
    }
    const rc = this.libs.cu.cuLaunchKernel(this.fn, gx, gy, 1, bx, by, 1, smem, stream, this.slots, null) as number
    if (rc !== 0) checkCu(this.libs, `cuLaunchKernel(${this.name})`, rc)
  }
}

/** Kernel families, their argument signatures and compile options. */
const FAMILIES: Record<string, { opts: CompileOptions; kernels: Record<string, string> }> = {
  elementwise: {
    opts: {},
    kernels: {
      ew_add_f32: 'pppfli',
      ew_add_bf16: 'pppfli',
      ew_scale_f32: 'pppfli',
      ew_scale_bf16: 'pppfli',
      ew_cast_f32_bf16: 'pppfli',
      ew_cast_bf16_f32: 'pppfli',
      gelu_fwd_f32: 'pppfli',
      gelu_fwd_bf16: 'pppfli',
      gelu_bwd_f32: 'pppfli',
      gelu_bwd_bf16: 'pppfli',
      bias_add_f32: 'ppli',
      bias_add_bf16: 'ppli'
    }
  },
  reduce: {
    opts: {},
    kernels: {
      sumsq_partial_f32: 'plp',
      sumsq_partial_bf16: 'plp',
      sum_final: 'pip',
      colsum_partial_f32: 'ppppiiipp',
      colsum_partial_bf16: 'ppppiiipp',
      colsum_final: 'ppiipp',
      colsum_partial_vec_f32: 'ppppiiipp',
      colsum_partial_vec_bf16: 'ppppiiipp'
    }
  },
  encoder: {
    opts: {},
    kernels: {
      encoder_fwd_f32: 'ppppiiiiip',
      encoder_fwd_bf16: 'ppppiiiiip',
      encoder_bwd_wpe_f32: 'ppiii',
      encoder_bwd_wpe_bf16: 'ppiii',
      encoder_bwd_wte_f32: 'pppiiip',
      encoder_bwd_wte_bf16: 'pppiiip'
    }
  },
  layernorm: {
    opts: {},
    kernels: { ln_fwd_f32: 'ppppppiii', ln_fwd_bf16: 'ppppppiii', ln_bwd_f32: 'ppppppiii', ln_bwd_bf16: 'ppppppiii' }
  },
  attention: {
    opts: {},
    kernels: {
      flash_fwd_4: 'pppiif',
      flash_bwd_dq_4: 'pppppiif',
      flash_bwd_dkdv_4: 'pppppiif',
      flash_fwd_8: 'pppiif',
      flash_bwd_dq_8: 'pppppiif',
      flash_bwd_dkdv_8: 'pppppiif',
      attn_dvec_f32: 'pppiiii',
      attn_dvec_bf16: 'pppiiii',
      naive_fwd_f32: 'pppiiiif',
      naive_fwd_bf16: 'pppiiiif',
      naive_bwd_dq_f32: 'pppppiiiif',
      naive_bwd_dq_bf16: 'pppppiiiif',
      naive_bwd_dkdv_f32: 'pppppiiiif',
      naive_bwd_dkdv_bf16: 'pppppiiiif'
    }
  },
  crossentropy: { opts: {}, kernels: { ce_f32: 'ppppiifip', ce_bf16: 'ppppiifip' } },
  adamw: {
    opts: {},
    kernels: {
      adamw_f32: 'ppppplffffffffi',
      lion_f32: 'pppplfffffffi',
      adamw8bit_f32: 'ppppppplffffffffff',
      lion8bit_f32: 'pppppplfffffff',
      zo_signs_f32: 'pplliif'
    }
  },
  quant: {
    opts: {},
    kernels: { quant_fast: 'pppliiip', quant_generic: 'pppliip', dequant_fast: 'pppliiip', dequant_generic: 'pppliiip' }
  }
}

const f32Scratch = new Float32Array(1)
const u32Scratch = new Uint32Array(f32Scratch.buffer)
function f32Bits(x: number): number {
  f32Scratch[0] = x
  return u32Scratch[0]!
}
const aligned = (p: number, n: number): boolean => p % n === 0
const cdiv = (a: number, b: number): number => Math.ceil(a / b)

export interface CudaDeviceInfo {
  device: number
  name: string
  computeCapability: string
  smCount: number
  memoryBytes: number
  driverVersion: string
  cudaVersion: string
}

export interface CudaBackendInit {
  libs: CudaLibs
  info: CudaDeviceInfo
  ctx: Handle
  cacheDir: string | null
  /** `--device-memory` (the allocator's cap). */
  deviceMemoryBytes?: number
}

export class CudaBackend implements Backend {
  readonly kind = 'cuda' as const
  readonly description: string
  readonly info: CudaDeviceInfo
  private readonly libs: CudaLibs
  private readonly ctx: Handle
  private readonly stream: Handle
  private readonly allocator: CachingAllocator
  private readonly compiler: KernelCompiler
  private readonly blas: Blas
  private readonly modules = new Map<string, Handle>()
  private readonly kernels = new Map<string, Kernel>()
  private readonly scratch = new Map<string, Block>()
  private readonly workspace: Block
  private readonly flags: Block
  private readonly transfers: Transfers
  private flagsPending = false
  /** The 8-bit optimizers' two quantization maps (gpu/adam8.ts: m's, then v's), uploaded on the first call of either. */
  private adam8Maps: CudaTensor | null = null
  private ceV = 0
  private readonly sm: number
  private disposed = false

  constructor(init: CudaBackendInit) {
    this.libs = init.libs
    this.info = init.info
    this.ctx = init.ctx
    this.sm = init.info.smCount
    const cu = this.libs.cu
    const s: Handle[] = [null]
    checkCu(this.libs, 'cuStreamCreate', cu.cuStreamCreate(s, 0))
    this.stream = s[0]
    this.allocator = new CachingAllocator(this.libs, init.deviceMemoryBytes)
    const arch = `sm_${init.info.computeCapability.replace('.', '')}`
    this.compiler = new KernelCompiler(this.libs, arch, init.cacheDir)
    this.workspace = this.allocator.alloc(CUDA_LIMITS.blasWorkspaceBytes)
    this.blas = new Blas(this.libs, this.stream, this.workspace.ptr, CUDA_LIMITS.blasWorkspaceBytes)
    this.flags = this.allocator.alloc(FLAG_SLOTS * 8)
    this.resetFlags()
    this.transfers = new Transfers(this.libs, this.stream, () => this.checkFlags())
    const gib = (init.info.memoryBytes / 2 ** 30).toFixed(1)
    this.description =
      `cuda: ${init.info.name} (sm_${init.info.computeCapability.replace('.', '')}, ${init.info.smCount} SMs, ${gib} GiB), ` +
      `driver ${init.info.driverVersion}, CUDA ${init.info.cudaVersion}, NVRTC ${this.compiler.version}, cuBLAS ${this.blas.version}`
  }

  /** NVRTC compile statistics (kernels compiled vs loaded from the cubin cache). */
  get compileStats(): { compiled: number; cacheHits: number; compileMs: number } {
    return { ...this.compiler.stats }
  }
  /** Bytes held by live tensors / by the allocator's free lists. */
  get allocatedBytes(): number {
    return this.allocator.liveBytes
  }
  get cachedBytes(): number {
    return this.allocator.cachedBytes
  }
  /** Page-locked host bytes held by arrays from {@link hostAlloc}. */
  get hostBytes(): number {
    return this.transfers.hostBytes
  }

  // ---- plumbing -----------------------------------------------------------------------------

  private live_(op: string): void {
    if (this.disposed) fail(op, 'the backend has been disposed')
  }

  /** An optimizer's optional bf16 copy of the params (`length` elements), or null without one. */
  private lowp(op: string, t: Tensor | null | undefined, length: number): CudaTensor | null {
    return t === undefined || t === null ? null : this.arg(op, 'paramsLowp', t, ['bf16'], length)
  }

  private arg(op: string, name: string, t: Tensor | null | undefined, dtypes: readonly TensorDType[], length?: number): CudaTensor {
    if (!(t instanceof CudaTensor) || t.owner !== this) fail(op, `${name} is not a tensor of this cuda backend`)
    if (t.block !== null && t.block.freed) fail(op, `${name} has been freed`)
    if (!dtypes.includes(t.dtype)) fail(op, `${name} must be ${dtypes.join(' or ')}, got ${t.dtype}`)
    if (length !== undefined && t.length !== length) fail(op, `${name} must have ${length} elements, got ${t.length}`)
    return t
  }

  /** Like arg, and the dtype must equal `dtype` (activations and weights share one dtype). */
  private same(op: string, name: string, t: Tensor | null | undefined, dtype: TensorDType, length?: number): CudaTensor {
    return this.arg(op, name, t, [dtype], length)
  }

  /** Compiles a kernel family on first use and returns the named kernel. */
  private k(name: string): Kernel {
    const hit = this.kernels.get(name)
    if (hit !== undefined) return hit
    for (const [family, spec] of Object.entries(FAMILIES)) {
      const sig = spec.kernels[name]
      if (sig === undefined) continue
      let mod = this.modules.get(family)
      if (mod === undefined) {
        const cubin = this.compiler.cubin(family, kernelSource(family), spec.opts)
        mod = this.compiler.loadModule(cubin)
        this.modules.set(family, mod)
      }
      const fn: Handle[] = [null]
      checkCu(this.libs, `cuModuleGetFunction(${name})`, this.libs.cu.cuModuleGetFunction(fn, mod, name))
      const kern = new Kernel(this.libs, fn[0], name, sig)
      this.kernels.set(name, kern)
      return kern
    }
    throw new Error(`unknown kernel ${name}`)
  }

  /** A kernel's resource use (compiles its family if needed): for benchmarks and tuning. */
  kernelInfo(name: string): { registers: number; localBytes: number } {
    this.live_('kernelInfo')
    return this.k(name).info()
  }

  /** Compiles every kernel family now (otherwise each compiles on first use). */
  warmup(): void {
    this.live_('warmup')
    for (const spec of Object.values(FAMILIES)) for (const name of Object.keys(spec.kernels)) this.k(name)
  }

  private launch(name: string, gx: number, gy: number, bx: number, by: number, args: readonly number[], smem = 0): void {
    this.k(name).launch(this.stream, gx, gy, bx, by, smem, args)
  }

  /** Grid size for grid-stride loops over `units` work items at 256 threads a block. */
  private grid(units: number): number {
    return Math.max(1, Math.min(cdiv(units, 256), this.sm * 16))
  }

  private scratchPtr(name: string, bytes: number): number {
    let b = this.scratch.get(name)
    if (b === undefined || b.size < bytes) {
      if (b !== undefined) this.allocator.release(b)
      b = this.allocator.alloc(Math.max(bytes, 256))
      this.scratch.set(name, b)
    }
    return b.ptr
  }

  private resetFlags(): void {
    const init = new BigUint64Array(FLAG_SLOTS)
    for (const i of [0, 1, 2, 4]) init[i] = NO_FLAG
    checkCu(this.libs, 'cuMemcpyHtoD_v2', this.libs.cu.cuMemcpyHtoD(this.flags.ptr, init, init.byteLength))
  }

  private syncStream(): void {
    checkCu(this.libs, 'cuStreamSynchronize', this.libs.cu.cuStreamSynchronize(this.stream))
  }

  /** After a sync: raises what the kernels flagged since the last check. */
  private checkFlags(): void {
    if (!this.flagsPending) return
    this.flagsPending = false
    const f = new BigUint64Array(FLAG_SLOTS)
    checkCu(this.libs, 'cuMemcpyDtoH_v2', this.libs.cu.cuMemcpyDtoH(f, this.flags.ptr, f.byteLength))
    const first = (slot: number): { index: number; value: number } | null => {
      const v = f[slot]!
      if (v === NO_FLAG) return null
      return { index: Number(v >> 32n), value: Number(v & 0xffffffffn) | 0 }
    }
    const ce = first(0)
    const enc = first(1)
    const nf = first(2)
    const dq = first(4)
    if (ce === null && enc === null && nf === null && dq === null) return
    this.resetFlags()
    if (ce !== null) fail('crossEntropy', `target ${ce.value} at index ${ce.index} is outside [0, ${this.ceV})`)
    if (enc !== null) fail('encoder', `token ${enc.value} at index ${enc.index} is outside the embedding table`)
    if (nf !== null) {
      u32Scratch[0] = nf.value >>> 0
      throw new NonFiniteError(nf.index, f32Scratch[0]!, Number(f[3]!))
    }
    if (dq !== null)
      throw codecError(CodecErrorCode.QUANT_INVALID, `code ${dq.value} at element ${dq.index} is outside the symmetric range`, { count: Number(f[5]!) })
  }

  // ---- memory -------------------------------------------------------------------------------

  alloc(dtype: TensorDType, shape: readonly number[]): Tensor {
    this.live_('alloc')
    const { n, bytes } = allocSize(dtype, shape, CUDA_LIMITS.maxRank, 'cuda tensor bytes', CUDA_LIMITS.maxTensorBytes)
    if (bytes === 0) return new CudaTensor(this, dtype, shape, 0, 0, null, false)
    const block = this.allocator.alloc(bytes)
    checkCu(this.libs, 'cuMemsetD8Async', this.libs.cu.cuMemsetD8Async(block.ptr, 0, bytes, this.stream))
    return new CudaTensor(this, dtype, shape, n, block.ptr, block, false)
  }

  view(base: Tensor, offset: number, shape: readonly number[]): Tensor {
    this.live_('view')
    const b = this.arg('view', 'base', base, ALL)
    const n = shapeLength('view', shape, CUDA_LIMITS.maxRank)
    checkInt('view', 'offset', offset, 0)
    if (offset + n > b.length) fail('view', `offset ${offset} + ${n} elements exceeds the base's ${b.length}`)
    return new CudaTensor(this, b.dtype, shape, n, b.ptr + offset * TENSOR_DTYPE_BYTES[b.dtype], b.block, true)
  }

  free(t: Tensor): void {
    this.live_('free')
    const x = this.arg('free', 't', t, ALL)
    if (x.isView || x.block === null) return
    this.allocator.release(x.block)
  }

  write(t: Tensor, src: HostArray, offset = 0): void {
    this.live_('write')
    const x = this.arg('write', 't', t, ALL)
    if (!isHostOf(src, x.dtype)) fail('write', `src must be the host array type of a ${x.dtype} tensor`)
    checkInt('write', 'offset', offset, 0)
    if (offset + src.length > x.length) fail('write', `offset ${offset} + ${src.length} elements exceeds the tensor's ${x.length}`)
    if (src.length === 0) return
    checkCu(this.libs, 'cuMemcpyHtoD_v2', this.libs.cu.cuMemcpyHtoD(x.ptr + offset * TENSOR_DTYPE_BYTES[x.dtype], src, src.byteLength))
  }

  read(t: Tensor): HostArray {
    this.live_('read')
    const x = this.arg('read', 't', t, ALL)
    const out = hostArrayOf(x.dtype, x.length)
    this.syncStream()
    if (x.length > 0) checkCu(this.libs, 'cuMemcpyDtoH_v2', this.libs.cu.cuMemcpyDtoH(out, x.ptr, x.bytes))
    this.checkFlags()
    return out
  }

  fill(t: Tensor, value: number): void {
    this.live_('fill')
    const x = this.arg('fill', 't', t, ALL)
    if (typeof value !== 'number') fail('fill', 'value must be a number')
    if (x.length === 0) return
    const cu = this.libs.cu
    switch (x.dtype) {
      case 'f32':
        checkCu(this.libs, 'cuMemsetD32Async', cu.cuMemsetD32Async(x.ptr, f32Bits(value), x.length, this.stream))
        break
      case 'bf16':
        checkCu(this.libs, 'cuMemsetD16Async', cu.cuMemsetD16Async(x.ptr, f32ToBf16(value), x.length, this.stream))
        break
      case 'i32':
        if (!Number.isInteger(value) || value < -(2 ** 31) || value >= 2 ** 31) fail('fill', `value ${value} is not an i32`)
        checkCu(this.libs, 'cuMemsetD32Async', cu.cuMemsetD32Async(x.ptr, value >>> 0, x.length, this.stream))
        break
      case 'u8':
        if (!Number.isInteger(value) || value < 0 || value > 255) fail('fill', `value ${value} is not a u8`)
        checkCu(this.libs, 'cuMemsetD8Async', cu.cuMemsetD8Async(x.ptr, value, x.length, this.stream))
        break
    }
  }

  copy(dst: Tensor, src: Tensor): void {
    this.live_('copy')
    const s = this.arg('copy', 'src', src, ALL)
    const d = this.arg('copy', 'dst', dst, [s.dtype], s.length)
    if (s.length === 0) return
    checkCu(this.libs, 'cuMemcpyDtoDAsync_v2', this.libs.cu.cuMemcpyDtoDAsync(d.ptr, s.ptr, s.bytes, this.stream))
  }

  synchronize(): void {
    this.live_('synchronize')
    this.syncStream()
    this.checkFlags()
  }

  fence(): Fence {
    this.live_('fence')
    return this.transfers.fence()
  }

  hostAlloc(dtype: TensorDType, length: number): HostArray {
    this.live_('hostAlloc')
    return this.transfers.hostAlloc(dtype, length)
  }

  freeHost(a: HostArray): void {
    this.live_('freeHost')
    this.transfers.freeHost(a)
  }

  hostRegister(a: HostArray): void {
    this.live_('hostRegister')
    this.transfers.hostRegister(a)
  }

  download(dst: HostArray, src: Tensor, dstOffset = 0): Fence {
    this.live_('download')
    const s = this.arg('download', 'src', src, ALL)
    this.transfers.checkDestination(dst, s.dtype, s.length, dstOffset)
    if (s.length === 0) return this.transfers.fence()
    // The staging copy makes the download see `src` as it is now (the backend's contract).
    const stage = this.allocator.alloc(s.bytes)
    checkCu(this.libs, 'cuMemcpyDtoDAsync_v2', this.libs.cu.cuMemcpyDtoDAsync(stage.ptr, s.ptr, s.bytes, this.stream))
    return this.transfers.download(dst, { ptr: stage.ptr, dtype: s.dtype, length: s.length }, dstOffset, () => this.allocator.release(stage))
  }

  dispose(): void {
    if (this.disposed) return
    try {
      this.syncStream()
    } catch {
      /* disposing anyway */
    }
    this.disposed = true
    const cu = this.libs.cu
    this.transfers.dispose()
    this.blas.dispose()
    for (const m of this.modules.values()) cu.cuModuleUnload(m)
    this.modules.clear()
    this.kernels.clear()
    this.scratch.clear()
    this.allocator.releaseAll()
    cu.cuStreamDestroy(this.stream)
    cu.cuDevicePrimaryCtxRelease(this.info.device)
    void this.ctx
  }

  // ---- generic math -------------------------------------------------------------------------

  gemm(p: GemmParams): void {
    const op = 'gemm'
    this.live_(op)
    const g = gemmShape(op, p)
    const { m, n, k, batch, sA, sB, sC, alpha, beta } = g
    const A = this.arg(op, 'a', p.a, FLOAT)
    const B = this.same(op, 'b', p.b, A.dtype)
    const C = this.arg(op, 'c', p.c, FLOAT)
    checkGemmOperands(op, g, A.length, B.length, C.length)
    for (const v of [m, n, k]) if (v > 2 ** 31 - 1) fail(op, 'dimensions must fit in 32 bits')
    this.blas.rowMajor({
      transA: p.transA === true,
      transB: p.transB === true,
      m,
      n,
      k,
      alpha,
      beta,
      a: A.ptr,
      b: B.ptr,
      c: C.ptr,
      abType: A.dtype === 'f32' ? CUDA_R_32F : CUDA_R_16BF,
      cType: C.dtype === 'f32' ? CUDA_R_32F : CUDA_R_16BF,
      batch,
      strideA: sA,
      strideB: sB,
      strideC: sC
    })
  }

  /** Launches an elementwise kernel over n elements (8-wide vectors when every pointer is aligned). */
  private ew(name: string, out: CudaTensor, a: CudaTensor, b: CudaTensor | null, s: number): void {
    const n = out.length
    if (n === 0) return
    checkCap('cuda op elements', n, CUDA_LIMITS.maxOpElements)
    const vec = aligned(out.ptr, 16) && aligned(a.ptr, 16) && (b === null || aligned(b.ptr, 16))
    this.launch(name, this.grid(vec ? cdiv(n, 8) : n), 1, 256, 1, [out.ptr, a.ptr, b === null ? a.ptr : b.ptr, s, n, vec ? 1 : 0])
  }

  add(dst: Tensor, src: Tensor): void {
    const op = 'add'
    this.live_(op)
    const s = this.arg(op, 'src', src, FLOAT)
    const d = this.same(op, 'dst', dst, s.dtype, s.length)
    this.ew(`ew_add_${s.dtype}`, d, d, s, 0)
  }

  residualForward(out: Tensor, a: Tensor, b: Tensor): void {
    const op = 'residualForward'
    this.live_(op)
    const x = this.arg(op, 'a', a, FLOAT)
    const y = this.same(op, 'b', b, x.dtype, x.length)
    const o = this.same(op, 'out', out, x.dtype, x.length)
    this.ew(`ew_add_${x.dtype}`, o, x, y, 0)
  }

  scale(t: Tensor, s: number): void {
    const op = 'scale'
    this.live_(op)
    checkFinite(op, 's', s)
    const x = this.arg(op, 't', t, FLOAT)
    this.ew(`ew_scale_${x.dtype}`, x, x, null, s)
  }

  sumSquares(t: Tensor): number {
    const op = 'sumSquares'
    this.live_(op)
    const x = this.arg(op, 't', t, FLOAT)
    if (x.length === 0) return 0
    const blocks = Math.min(cdiv(x.length, 256), this.sm * 8)
    const part = this.scratchPtr('sumsq', (blocks + 1) * 4)
    this.launch(`sumsq_partial_${x.dtype}`, blocks, 1, 256, 1, [x.ptr, x.length, part])
    this.launch('sum_final', 1, 1, 1024, 1, [part, blocks, part + blocks * 4])
    const out = new Float32Array(1)
    this.syncStream()
    checkCu(this.libs, 'cuMemcpyDtoH_v2', this.libs.cu.cuMemcpyDtoH(out, part + blocks * 4, 4))
    this.checkFlags()
    return out[0]!
  }

  cast(dst: Tensor, src: Tensor): void {
    const op = 'cast'
    this.live_(op)
    const s = this.arg(op, 'src', src, FLOAT)
    const d = this.arg(op, 'dst', dst, FLOAT, s.length)
    if (s.dtype === d.dtype) {
      this.copy(d, s)
      return
    }
    this.ew(s.dtype === 'f32' ? 'ew_cast_f32_bf16' : 'ew_cast_bf16_f32', d, s, null, 0)
  }

  // ---- GPT ops ------------------------------------------------------------------------------

  private tableRows(op: string, name: string, length: number, C: number, minRows: number): number {
    if (length % C !== 0) fail(op, `${name} has ${length} elements, not a multiple of C = ${C}`)
    const rows = length / C
    if (rows < minRows) fail(op, `${name} has ${rows} rows, needs at least ${minRows}`)
    return rows
  }

  encoderForward(out: Tensor, tokens: Tensor, wte: Tensor, wpe: Tensor, B: number, T: number, C: number): void {
    const op = 'encoderForward'
    this.live_(op)
    checkInt(op, 'B', B)
    checkInt(op, 'T', T)
    checkInt(op, 'C', C)
    const o = this.arg(op, 'out', out, FLOAT, B * T * C)
    const tok = this.arg(op, 'tokens', tokens, ['i32'], B * T)
    const e = this.same(op, 'wte', wte, o.dtype)
    const p = this.same(op, 'wpe', wpe, o.dtype)
    const V = this.tableRows(op, 'wte', e.length, C, 1)
    this.tableRows(op, 'wpe', p.length, C, T)
    checkCap('cuda op elements', o.length, CUDA_LIMITS.maxOpElements)
    const vn = o.dtype === 'f32' ? 4 : 8
    const vec = C % vn === 0 && aligned(o.ptr, 16) && aligned(e.ptr, 16) && aligned(p.ptr, 16)
    this.flagsPending = true
    this.launch(`encoder_fwd_${o.dtype}`, this.grid(vec ? o.length / vn : o.length), 1, 256, 1, [
      o.ptr,
      tok.ptr,
      e.ptr,
      p.ptr,
      B * T,
      T,
      C,
      V,
      vec ? 1 : 0,
      this.flags.ptr
    ])
  }

  encoderBackward(dwte: Tensor, dwpe: Tensor, dout: Tensor, tokens: Tensor, B: number, T: number, C: number): void {
    const op = 'encoderBackward'
    this.live_(op)
    checkInt(op, 'B', B)
    checkInt(op, 'T', T)
    checkInt(op, 'C', C)
    const d = this.arg(op, 'dout', dout, FLOAT, B * T * C)
    const tok = this.arg(op, 'tokens', tokens, ['i32'], B * T)
    const de = this.arg(op, 'dwte', dwte, ['f32'])
    const dp = this.arg(op, 'dwpe', dwpe, ['f32'])
    const V = this.tableRows(op, 'dwte', de.length, C, 1)
    this.tableRows(op, 'dwpe', dp.length, C, T)
    if (B * T > 2 ** 31 - 1) fail(op, 'B·T must fit in 32 bits')
    this.flagsPending = true
    this.launch(`encoder_bwd_wpe_${d.dtype}`, cdiv(T * C, 256), 1, 256, 1, [dp.ptr, d.ptr, B, T, C])
    this.launch(`encoder_bwd_wte_${d.dtype}`, B * T, 1, 256, 1, [de.ptr, d.ptr, tok.ptr, B * T, C, V, this.flags.ptr])
  }

  private lnVec(dtype: TensorDType, C: number, ptrs: readonly number[]): boolean {
    const vn = dtype === 'f32' ? 4 : 8
    return C % (32 * vn) === 0 && C / (32 * vn) <= CUDA_LIMITS.lnMaxRegisterChunks && ptrs.every(p => aligned(p, 16))
  }

  layernormForward(out: Tensor, mean: Tensor, rstd: Tensor, inp: Tensor, weight: Tensor, bias: Tensor, N: number, C: number): void {
    const op = 'layernormForward'
    this.live_(op)
    checkInt(op, 'N', N)
    checkInt(op, 'C', C)
    const x = this.arg(op, 'inp', inp, FLOAT, N * C)
    const o = this.same(op, 'out', out, x.dtype, N * C)
    const mu = this.arg(op, 'mean', mean, ['f32'], N)
    const rs = this.arg(op, 'rstd', rstd, ['f32'], N)
    const w = this.same(op, 'weight', weight, x.dtype, C)
    const b = this.same(op, 'bias', bias, x.dtype, C)
    const vec = this.lnVec(x.dtype, C, [o.ptr, x.ptr, w.ptr, b.ptr])
    this.launch(`ln_fwd_${x.dtype}`, cdiv(N, 8), 1, 256, 1, [o.ptr, mu.ptr, rs.ptr, x.ptr, w.ptr, b.ptr, N, C, vec ? 1 : 0])
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
    const x = this.arg(op, 'inp', inp, FLOAT, N * C)
    const dx = this.same(op, 'dinp', dinp, x.dtype, N * C)
    const dy = this.same(op, 'dout', dout, x.dtype, N * C)
    const w = this.same(op, 'weight', weight, x.dtype, C)
    const dw = this.arg(op, 'dweight', dweight, ['f32'], C)
    const db = this.arg(op, 'dbias', dbias, ['f32'], C)
    const mu = this.arg(op, 'mean', mean, ['f32'], N)
    const rs = this.arg(op, 'rstd', rstd, ['f32'], N)
    this.colsum(x.dtype, dy.ptr, x.ptr, mu.ptr, rs.ptr, N, C, db.ptr, dw.ptr)
    const vec = this.lnVec(x.dtype, C, [dx.ptr, dy.ptr, x.ptr, w.ptr])
    this.launch(`ln_bwd_${x.dtype}`, cdiv(N, 8), 1, 256, 1, [dx.ptr, dy.ptr, x.ptr, w.ptr, mu.ptr, rs.ptr, N, C, vec ? 1 : 0])
  }

  /** dst1[c] += Σ_n dout[n,c]; with inp (layernorm), dst2[c] += Σ_n dout·(inp−mean)·rstd. Deterministic. */
  private colsum(dtype: TensorDType, dout: number, inp: number, mean: number, rstd: number, N: number, C: number, dst1: number, dst2: number): void {
    const vn = dtype === 'f32' ? 4 : 8
    const vec = C % vn === 0 && aligned(dout, 16) && (inp === 0 || aligned(inp, 16))
    const colBlocks = cdiv(C, vec ? 32 * vn : 64)
    const R = Math.max(1, Math.min(cdiv(N, 8), cdiv(this.sm * 4, colBlocks)))
    const rowsPer = cdiv(N, R)
    const p1 = this.scratchPtr('colsum', 2 * R * C * 4)
    const p2 = p1 + R * C * 4
    this.launch(`colsum_partial_${vec ? 'vec_' : ''}${dtype}`, colBlocks, R, 32, 8, [dout, inp, mean, rstd, N, C, rowsPer, p1, p2])
    this.launch('colsum_final', cdiv(C, 256), 1, 256, 1, [p1, p2, R, C, dst1, dst2])
  }

  matmulForward(out: Tensor, inp: Tensor, weight: Tensor, bias: Tensor | null, N: number, C: number, OC: number): void {
    const op = 'matmulForward'
    this.live_(op)
    checkInt(op, 'N', N)
    checkInt(op, 'C', C)
    checkInt(op, 'OC', OC)
    const x = this.arg(op, 'inp', inp, FLOAT, N * C)
    const o = this.same(op, 'out', out, x.dtype, N * OC)
    const w = this.same(op, 'weight', weight, x.dtype, OC * C)
    const b = bias === null ? null : this.same(op, 'bias', bias, x.dtype, OC)
    const type = x.dtype === 'f32' ? CUDA_R_32F : CUDA_R_16BF
    if (b !== null && this.blas.matmulBias(o.ptr, x.ptr, w.ptr, b.ptr, N, C, OC, type)) return
    this.blas.rowMajor({
      transA: false,
      transB: true,
      m: N,
      n: OC,
      k: C,
      alpha: 1,
      beta: 0,
      a: x.ptr,
      b: w.ptr,
      c: o.ptr,
      abType: type,
      cType: type,
      batch: 1,
      strideA: 0,
      strideB: 0,
      strideC: 0
    })
    if (b !== null) this.launch(`bias_add_${x.dtype}`, this.grid(N * OC), 1, 256, 1, [o.ptr, b.ptr, N, OC])
  }

  matmulBackward(dinp: Tensor, dweight: Tensor, dbias: Tensor | null, dout: Tensor, inp: Tensor, weight: Tensor, N: number, C: number, OC: number): void {
    const op = 'matmulBackward'
    this.live_(op)
    checkInt(op, 'N', N)
    checkInt(op, 'C', C)
    checkInt(op, 'OC', OC)
    const x = this.arg(op, 'inp', inp, FLOAT, N * C)
    const dx = this.same(op, 'dinp', dinp, x.dtype, N * C)
    const dy = this.same(op, 'dout', dout, x.dtype, N * OC)
    const w = this.same(op, 'weight', weight, x.dtype, OC * C)
    const dw = this.arg(op, 'dweight', dweight, ['f32'], OC * C)
    const db = dbias === null ? null : this.arg(op, 'dbias', dbias, ['f32'], OC)
    const type = x.dtype === 'f32' ? CUDA_R_32F : CUDA_R_16BF
    // dinp[N,C] = dout[N,OC] · weight[OC,C]
    this.blas.rowMajor({
      transA: false,
      transB: false,
      m: N,
      n: C,
      k: OC,
      alpha: 1,
      beta: 0,
      a: dy.ptr,
      b: w.ptr,
      c: dx.ptr,
      abType: type,
      cType: type,
      batch: 1,
      strideA: 0,
      strideB: 0,
      strideC: 0
    })
    // dweight[OC,C] += dout[N,OC]ᵀ · inp[N,C]   (f32 output, bf16 or f32 inputs)
    this.blas.rowMajor({
      transA: true,
      transB: false,
      m: OC,
      n: C,
      k: N,
      alpha: 1,
      beta: 1,
      a: dy.ptr,
      b: x.ptr,
      c: dw.ptr,
      abType: type,
      cType: CUDA_R_32F,
      batch: 1,
      strideA: 0,
      strideB: 0,
      strideC: 0
    })
    if (db !== null) this.colsum(x.dtype, dy.ptr, 0, 0, 0, N, OC, db.ptr, 0)
  }

  geluForward(out: Tensor, inp: Tensor): void {
    const op = 'geluForward'
    this.live_(op)
    const x = this.arg(op, 'inp', inp, FLOAT)
    const o = this.same(op, 'out', out, x.dtype, x.length)
    this.ew(`gelu_fwd_${x.dtype}`, o, x, null, 0)
  }

  geluBackward(dinp: Tensor, inp: Tensor, dout: Tensor): void {
    const op = 'geluBackward'
    this.live_(op)
    const x = this.arg(op, 'inp', inp, FLOAT)
    const dy = this.same(op, 'dout', dout, x.dtype, x.length)
    const dx = this.same(op, 'dinp', dinp, x.dtype, x.length)
    this.ew(`gelu_bwd_${x.dtype}`, dx, x, dy, 0)
  }

  private attnSizes(op: string, B: number, T: number, C: number, NH: number): number {
    checkInt(op, 'B', B)
    checkInt(op, 'T', T)
    checkInt(op, 'C', C)
    checkInt(op, 'NH', NH)
    if (C % NH !== 0) fail(op, `C = ${C} is not a multiple of NH = ${NH}`)
    const hs = C / NH
    if (hs > CUDA_LIMITS.maxHeadSize) fail(op, `head size ${hs} exceeds ${CUDA_LIMITS.maxHeadSize}`)
    if (B * NH * T > 2 ** 31 - 1) fail(op, 'B·NH·T must fit in 32 bits')
    return hs
  }

  private flashOk(dtype: TensorDType, hs: number, T: number, ptrs: readonly number[]): boolean {
    return dtype === 'bf16' && hs === 64 && T % 64 === 0 && process.env['ZEROMESH_FLASH'] !== '0' && ptrs.every(p => aligned(p, 16))
  }

  /**
   * Warps per flash block: 4 (64-row blocks) by default, which measured faster on the H200 than
   * 8 (128-row blocks, half the K/V re-reads but one block per SM); ZEROMESH_FLASH_WARPS=8 opts in.
   */
  private flashWarps(T: number): 4 | 8 {
    return process.env['ZEROMESH_FLASH_WARPS'] === '8' && T % 128 === 0 ? 8 : 4
  }

  attentionForward(out: Tensor, lse: Tensor, qkv: Tensor, B: number, T: number, C: number, NH: number): void {
    const op = 'attentionForward'
    this.live_(op)
    const hs = this.attnSizes(op, B, T, C, NH)
    const x = this.arg(op, 'qkv', qkv, FLOAT, B * T * 3 * C)
    const o = this.same(op, 'out', out, x.dtype, B * T * C)
    const l = this.arg(op, 'lse', lse, ['f32'], B * NH * T)
    const scale = 1 / Math.sqrt(hs)
    if (this.flashOk(x.dtype, hs, T, [x.ptr, o.ptr])) {
      const nw = this.flashWarps(T)
      this.launch(`flash_fwd_${nw}`, T / (16 * nw), B * NH, 32 * nw, 1, [o.ptr, l.ptr, x.ptr, T, NH, scale])
    } else {
      this.launch(`naive_fwd_${x.dtype}`, cdiv(B * NH * T, 4), 1, 128, 1, [o.ptr, l.ptr, x.ptr, B, T, NH, hs, scale])
    }
  }

  attentionBackward(dqkv: Tensor, dout: Tensor, qkv: Tensor, out: Tensor, lse: Tensor, B: number, T: number, C: number, NH: number): void {
    const op = 'attentionBackward'
    this.live_(op)
    const hs = this.attnSizes(op, B, T, C, NH)
    const x = this.arg(op, 'qkv', qkv, FLOAT, B * T * 3 * C)
    const dx = this.same(op, 'dqkv', dqkv, x.dtype, B * T * 3 * C)
    const dy = this.same(op, 'dout', dout, x.dtype, B * T * C)
    const o = this.same(op, 'out', out, x.dtype, B * T * C)
    const l = this.arg(op, 'lse', lse, ['f32'], B * NH * T)
    const scale = 1 / Math.sqrt(hs)
    const rows = B * NH * T
    const dvec = this.scratchPtr('attn-dvec', rows * 4)
    this.launch(`attn_dvec_${x.dtype}`, cdiv(rows, 8), 1, 256, 1, [dvec, dy.ptr, o.ptr, B, T, NH, hs])
    if (this.flashOk(x.dtype, hs, T, [x.ptr, dx.ptr, dy.ptr])) {
      const nw = this.flashWarps(T)
      this.launch(`flash_bwd_dkdv_${nw}`, T / (16 * nw), B * NH, 32 * nw, 1, [dx.ptr, dy.ptr, x.ptr, l.ptr, dvec, T, NH, scale])
      this.launch(`flash_bwd_dq_${nw}`, T / (16 * nw), B * NH, 32 * nw, 1, [dx.ptr, dy.ptr, x.ptr, l.ptr, dvec, T, NH, scale])
    } else {
      this.launch(`naive_bwd_dkdv_${x.dtype}`, cdiv(rows, 4), 1, 128, 1, [dx.ptr, dy.ptr, x.ptr, l.ptr, dvec, B, T, NH, hs, scale])
      this.launch(`naive_bwd_dq_${x.dtype}`, cdiv(rows, 4), 1, 128, 1, [dx.ptr, dy.ptr, x.ptr, l.ptr, dvec, B, T, NH, hs, scale])
    }
  }

  crossEntropy(losses: Tensor, dlogits: Tensor | null, logits: Tensor, targets: Tensor, N: number, V: number, Vp: number, dlossScale: number): void {
    const op = 'crossEntropy'
    this.live_(op)
    checkInt(op, 'N', N)
    checkInt(op, 'V', V)
    checkInt(op, 'Vp', Vp)
    if (Vp < V) fail(op, `Vp = ${Vp} must be >= V = ${V}`)
    if (Vp > 2 ** 31 - 1) fail(op, 'Vp must fit in 32 bits')
    checkFinite(op, 'dlossScale', dlossScale)
    const lo = this.arg(op, 'losses', losses, ['f32'], N)
    const x = this.arg(op, 'logits', logits, FLOAT, N * Vp)
    const dx = dlogits === null ? null : this.same(op, 'dlogits', dlogits, x.dtype, N * Vp)
    const tg = this.arg(op, 'targets', targets, ['i32'], N)
    const vn = x.dtype === 'f32' ? 4 : 8
    const vec = Vp % vn === 0 && aligned(x.ptr, 16) && (dx === null || aligned(dx.ptr, 16))
    const threads = Vp >= 8192 ? 1024 : 128
    this.ceV = V
    this.flagsPending = true
    this.launch(`ce_${x.dtype}`, N, 1, threads, 1, [lo.ptr, dx === null ? 0 : dx.ptr, x.ptr, tg.ptr, V, Vp, dlossScale, vec ? 1 : 0, this.flags.ptr])
  }

  adamw(params: Tensor, grads: Tensor, m: Tensor, v: Tensor, p: AdamWParams, paramsLowp?: Tensor | null): void {
    const op = 'adamw'
    this.live_(op)
    checkAdamW(op, p)
    const w = this.arg(op, 'params', params, ['f32'])
    const g = this.arg(op, 'grads', grads, ['f32'], w.length)
    const mm = this.arg(op, 'm', m, ['f32'], w.length)
    const vv = this.arg(op, 'v', v, ['f32'], w.length)
    const low = this.lowp(op, paramsLowp, w.length)
    const n = w.length
    if (n === 0) return
    checkCap('cuda op elements', n, CUDA_LIMITS.maxOpElements)
    const vec = [w.ptr, g.ptr, mm.ptr, vv.ptr].every(q => aligned(q, 16)) && (low === null || aligned(low.ptr, 8))
    const c1 = 1 - p.beta1 ** p.step
    const c2 = 1 - p.beta2 ** p.step
    this.launch('adamw_f32', this.grid(vec ? cdiv(n, 4) : n), 1, 256, 1, [
      w.ptr,
      g.ptr,
      mm.ptr,
      vv.ptr,
      low === null ? 0 : low.ptr,
      n,
      p.lr,
      p.beta1,
      p.beta2,
      p.eps,
      p.weightDecay,
      c1,
      c2,
      p.gradScale,
      vec ? 1 : 0
    ])
  }

  lion(params: Tensor, grads: Tensor, m: Tensor, p: LionParams, paramsLowp?: Tensor | null): void {
    const op = 'lion'
    this.live_(op)
    checkLion(op, p)
    const w = this.arg(op, 'params', params, ['f32'])
    const g = this.arg(op, 'grads', grads, ['f32'], w.length)
    const mm = this.arg(op, 'm', m, ['f32'], w.length)
    const low = this.lowp(op, paramsLowp, w.length)
    const n = w.length
    if (n === 0) return
    checkCap('cuda op elements', n, CUDA_LIMITS.maxOpElements)
    const vec = [w.ptr, g.ptr, mm.ptr].every(q => aligned(q, 16)) && (low === null || aligned(low.ptr, 8))
    // The CPU reference's f32 constants (gpu/host-optim.ts).
    this.launch('lion_f32', this.grid(vec ? cdiv(n, 4) : n), 1, 256, 1, [w.ptr, g.ptr, mm.ptr, low === null ? 0 : low.ptr, n, ...lionConstants(p), vec ? 1 : 0])
  }

  addSigns(params: Tensor, scale: number, seed: ZoSeed, offset: number, paramsLowp?: Tensor | null): void {
    const op = 'addSigns'
    this.live_(op)
    const w = this.arg(op, 'params', params, ['f32'])
    checkSigns(op, scale, seed, offset, w.length)
    const low = this.lowp(op, paramsLowp, w.length)
    const n = w.length
    if (n === 0) return
    checkCap('cuda op elements', n, CUDA_LIMITS.maxOpElements)
    // Seeds travel as int32 bit patterns; the kernel reads them back as unsigned.
    this.launch('zo_signs_f32', this.grid(n), 1, 256, 1, [w.ptr, low === null ? 0 : low.ptr, n, offset, seed[0] | 0, seed[1] | 0, Math.fround(scale)])
  }

  adamw8bit(params: Tensor, grads: Tensor, m: Tensor, v: Tensor, scales: Tensor, p: AdamWParams, paramsLowp?: Tensor | null): void {
    const op = 'adamw8bit'
    this.live_(op)
    checkAdamW(op, p)
    const w = this.arg(op, 'params', params, ['f32'])
    const n = w.length
    const g = this.arg(op, 'grads', grads, ['f32'], n)
    const mc = this.arg(op, 'm', m, ['u8'], n)
    const vc = this.arg(op, 'v', v, ['u8'], n)
    const sc = this.arg(op, 'scales', scales, ['f32'], 2 * adam8Blocks(n))
    const low = this.lowp(op, paramsLowp, n)
    if (n === 0) return
    checkCap('cuda op elements', n, CUDA_LIMITS.maxOpElements)
    // The CPU reference's f32 constants (gpu/adam8.ts).
    this.launch('adamw8bit_f32', adam8Blocks(n), 1, 256, 1, [
      w.ptr,
      g.ptr,
      mc.ptr,
      vc.ptr,
      sc.ptr,
      this.maps8().ptr,
      low === null ? 0 : low.ptr,
      n,
      ...adam8Constants(p)
    ])
  }

  lion8bit(params: Tensor, grads: Tensor, m: Tensor, scales: Tensor, p: LionParams, paramsLowp?: Tensor | null): void {
    const op = 'lion8bit'
    this.live_(op)
    checkLion(op, p)
    const w = this.arg(op, 'params', params, ['f32'])
    const n = w.length
    const g = this.arg(op, 'grads', grads, ['f32'], n)
    const mc = this.arg(op, 'm', m, ['u8'], n)
    const sc = this.arg(op, 'scales', scales, ['f32'], adam8Blocks(n))
    const low = this.lowp(op, paramsLowp, n)
    if (n === 0) return
    checkCap('cuda op elements', n, CUDA_LIMITS.maxOpElements)
    // The CPU reference's f32 constants (gpu/host-optim.ts); m's map is the first half of the upload.
    this.launch('lion8bit_f32', adam8Blocks(n), 1, 256, 1, [w.ptr, g.ptr, mc.ptr, sc.ptr, this.maps8().ptr, low === null ? 0 : low.ptr, n, ...lionConstants(p)])
  }

  /** The 8-bit optimizers' maps on the device (m's 256 values, then v's), uploaded once. */
  private maps8(): CudaTensor {
    if (this.adam8Maps === null) {
      const maps = new Float32Array(512)
      maps.set(ADAM8_MAP_M, 0)
      maps.set(ADAM8_MAP_V, 256)
      const t = this.alloc('f32', [512]) as CudaTensor
      this.write(t, maps)
      this.adam8Maps = t
    }
    return this.adam8Maps
  }

  // ---- quantizers ---------------------------------------------------------------------------

  private quantArgs(op: string, codes: Tensor, scales: Tensor, n: number, bits: 8 | 4, blockSize: number): { c: CudaTensor; s: CudaTensor } {
    try {
      validateQuantOptions({ bits, blockSize })
    } catch (err) {
      fail(op, (err as Error).message)
    }
    checkCap('cuda quantizer elements', n, CUDA_LIMITS.maxOpElements)
    const size = quantizedSize(n, { bits, blockSize })
    const c = this.arg(op, 'codes', codes, ['u8'], size.dataBytes)
    const s = this.arg(op, 'scales', scales, ['f32'], size.blocks)
    return { c, s }
  }

  quantize(codes: Tensor, scales: Tensor, src: Tensor, bits: 8 | 4, blockSize: number): void {
    const op = 'quantize'
    this.live_(op)
    const x = this.arg(op, 'src', src, ['f32'])
    const { c, s } = this.quantArgs(op, codes, scales, x.length, bits, blockSize)
    const n = x.length
    if (n === 0) return
    const nblocks = cdiv(n, blockSize)
    this.flagsPending = true
    const U = blockSize / 4
    let tpb = 1
    while (tpb * 4 < U) tpb *= 2
    const fast = blockSize % 4 === 0 && tpb <= 256 && aligned(x.ptr, 16) && aligned(c.ptr, bits === 8 ? 4 : 2)
    if (fast) {
      const groups = 256 / tpb
      // Grid-stride over quant blocks: 3 CTAs per SM (the kernel's launch bound).
      this.launch('quant_fast', Math.min(cdiv(nblocks, groups), this.sm * 3), 1, 256, 1, [x.ptr, c.ptr, s.ptr, n, blockSize, bits, tpb, this.flags.ptr])
    } else {
      this.launch('quant_generic', nblocks, 1, 256, 1, [x.ptr, c.ptr, s.ptr, n, blockSize, bits, this.flags.ptr])
    }
  }

  dequantize(dst: Tensor, codes: Tensor, scales: Tensor, bits: 8 | 4, blockSize: number, accumulate: boolean): void {
    const op = 'dequantize'
    this.live_(op)
    const d = this.arg(op, 'dst', dst, ['f32'])
    const { c, s } = this.quantArgs(op, codes, scales, d.length, bits, blockSize)
    const n = d.length
    if (n === 0) return
    this.flagsPending = true
    const fast = blockSize % 4 === 0 && aligned(d.ptr, 16) && aligned(c.ptr, bits === 8 ? 4 : 2)
    const args = [d.ptr, c.ptr, s.ptr, n, blockSize, bits, accumulate ? 1 : 0, this.flags.ptr]
    if (fast) this.launch('dequant_fast', this.grid(cdiv(n, 4)), 1, 256, 1, args)
    else this.launch('dequant_generic', this.grid(n), 1, 256, 1, args)
  }

  // ---- timing (benchmarks) ------------------------------------------------------------------

  /** Device-side elapsed milliseconds of `fn` (events on this backend's stream). */
  timeMs(fn: () => void): number {
    this.live_('timeMs')
    const cu = this.libs.cu
    const a: Handle[] = [null]
    const b: Handle[] = [null]
    checkCu(this.libs, 'cuEventCreate', cu.cuEventCreate(a, 0))
    checkCu(this.libs, 'cuEventCreate', cu.cuEventCreate(b, 0))
    try {
      checkCu(this.libs, 'cuEventRecord', cu.cuEventRecord(a[0], this.stream))
      fn()
      checkCu(this.libs, 'cuEventRecord', cu.cuEventRecord(b[0], this.stream))
      checkCu(this.libs, 'cuEventSynchronize', cu.cuEventSynchronize(b[0]))
      const ms = [0]
      checkCu(this.libs, 'cuEventElapsedTime', cu.cuEventElapsedTime(ms, a[0], b[0]))
      return ms[0]!
    } finally {
      cu.cuEventDestroy(a[0])
      cu.cuEventDestroy(b[0])
    }
  }

  // ---- sharing the stream ------------------------------------------------------------------

  /**
   * The driver bindings, context and stream behind this backend, for a library that enqueues its
   * own kernels (NCCL, see ./nccl.ts): work on the same stream runs in call order with ours.
   */
  streamHandles(): { libs: CudaLibs; ctx: Handle; stream: Handle } {
    this.live_('streamHandles')
    return { libs: this.libs, ctx: this.ctx, stream: this.stream }
  }

  /** The device address of a live tensor of this backend, checked like any operand (0 when empty). */
  deviceAddress(op: string, name: string, t: Tensor): number {
    this.live_(op)
    return this.arg(op, name, t, ALL).ptr
  }

  /** Raw device-to-device copy of `bytes` between two tensors (the bandwidth baseline). */
  copyBytes(dst: Tensor, src: Tensor, bytes: number): void {
    const d = this.arg('copyBytes', 'dst', dst, ALL)
    const s = this.arg('copyBytes', 'src', src, ALL)
    if (bytes > d.bytes || bytes > s.bytes) fail('copyBytes', 'bytes exceed a tensor')
    checkCu(this.libs, 'cuMemcpyDtoDAsync_v2', this.libs.cu.cuMemcpyDtoDAsync(d.ptr, s.ptr, bytes, this.stream))
  }

  /** Compiles a CUDA source with NVRTC (tests: compile errors surface as KernelCompileError). */
  compileForTest(name: string, source: string): number {
    return this.compiler.cubin(name, source).length
  }

  /** Launches a raw cuMemcpyDtoH from a bogus address (tests: a bad status becomes DeviceError). */
  badCopyForTest(): void {
    const out = new Uint8Array(4)
    checkCu(this.libs, 'cuMemcpyDtoH_v2', this.libs.cu.cuMemcpyDtoH(out, 8, 4))
  }
}
