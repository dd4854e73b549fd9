import { type CudaLibs, checkCublas, checkCublasLt, type Handle } from './ffi.ts'

/**
 * GEMMs through cuBLAS (`cublasGemmEx` / `cublasGemmStridedBatchedEx`) and cuBLASLt (for the
 * matmul bias epilogue). Always CUBLAS_COMPUTE_32F: f32 inputs are computed in true f32 (no
 * TF32), bf16 inputs accumulate in f32. Row-major callers go through {@link Blas.rowMajor},
 * which swaps operands so cuBLAS's column-major view computes the same product.
 */

export const CUDA_R_32F = 0
export const CUDA_R_16BF = 14
const CUBLAS_COMPUTE_32F = 68
const CUBLAS_GEMM_DEFAULT = -1
const OP_N = 0
const OP_T = 1

// cublasLt enums (cublasLt.h).
const LT_DESC_TRANSA = 3
const LT_DESC_TRANSB = 4
const LT_DESC_EPILOGUE = 7
const LT_DESC_BIAS_POINTER = 8
const LT_DESC_BIAS_DATA_TYPE = 26
const LT_EPILOGUE_BIAS = 4
const LT_PREF_MAX_WORKSPACE_BYTES = 1
const LT_HEURISTIC_RESULT_BYTES = 96

export interface RowMajorGemm {
  transA: boolean
  transB: boolean
  m: number
  n: number
  k: number
  alpha: number
  beta: number
  a: number
  b: number
  c: number
  abType: number
  cType: number
  batch: number
  strideA: number
  strideB: number
  strideC: number
}

interface LtPlan {
  desc: Handle
  layouts: Handle[]
  algo: Uint8Array
  biasPtr: BigUint64Array
}

export class Blas {
  private readonly libs: CudaLibs
  private readonly handle: Handle
  private lt: Handle = null
  private ltPref: Handle = null
  private readonly stream: Handle
  private readonly workspace: number
  private readonly workspaceBytes: number
  private readonly alphaBuf = new Float32Array(1)
  private readonly betaBuf = new Float32Array(1)
  private readonly plans = new Map<string, LtPlan | null>()
  /** cuBLASLt can be turned off (ZEROMESH_CUBLASLT=0): matmul bias then takes a separate kernel. */
  readonly ltEnabled: boolean
  readonly version: string

  constructor(libs: CudaLibs, stream: Handle, workspace: number, workspaceBytes: number) {
    this.libs = libs
    this.stream = stream
    this.workspace = workspace
    this.workspaceBytes = workspaceBytes
    const cb = libs.cublas()
    const h: Handle[] = [null]
    checkCublas(libs, 'cublasCreate_v2', cb.cublasCreate(h))
    this.handle = h[0]
    checkCublas(libs, 'cublasSetStream_v2', cb.cublasSetStream(this.handle, stream))
    checkCublas(libs, 'cublasSetWorkspace_v2', cb.cublasSetWorkspace(this.handle, workspace, workspaceBytes))
    checkCublas(libs, 'cublasSetMathMode', cb.cublasSetMathMode(this.handle, 0))
    const v = [0]
    checkCublas(libs, 'cublasGetVersion_v2', cb.cublasGetVersion(this.handle, v))
    const ver = v[0]!
    this.version = `${Math.floor(ver / 10000)}.${Math.floor(ver / 100) % 100}.${ver % 100}`
    this.ltEnabled = process.env['ZEROMESH_CUBLASLT'] !== '0'
  }

  /** Row-major C[m,n] = alpha·op(A)·op(B) + beta·C, optionally strided-batched. */
  rowMajor(g: RowMajorGemm): void {
    const lda = g.transA ? g.m : g.k
    const ldb = g.transB ? g.k : g.n
    // Column-major: Cᵀ[n,m] = op(B)ᵀ · op(A)ᵀ.
    this.colMajor(
      g.transB ? OP_T : OP_N,
      g.transA ? OP_T : OP_N,
      g.n,
      g.m,
      g.k,
      g.alpha,
      g.b,
      ldb,
      g.strideB,
      g.a,
      lda,
      g.strideA,
      g.beta,
      g.c,
      g.n,
      g.strideC,
      g.abType,
      g.cType,
      g.batch
    )
  }

  private colMajor(
    opA: number,
    opB: number,
    m: number,
    n: number,
    k: number,
    alpha: number,
    a: number,
    lda: number,
    sA: number,
    b: number,
    ldb: number,
    sB: number,
    beta: number,
    c: number,
    ldc: number,
    sC: number,
    abType: number,
    cType: number,
    batch: number
  ): void {
    const cb = this.libs.cublas()
    this.alphaBuf[0] = alpha
    this.betaBuf[0] = beta
    if (batch === 1) {
      checkCublas(
        this.libs,
        'cublasGemmEx',
        cb.cublasGemmEx(
          this.handle,
          opA,
          opB,
          m,
          n,
          k,
          this.alphaBuf,
          a,
          abType,
          lda,
          b,
          abType,
          ldb,
          this.betaBuf,
          c,
          cType,
          ldc,
          CUBLAS_COMPUTE_32F,
          CUBLAS_GEMM_DEFAULT
        )
      )
    } else {
      checkCublas(
        this.libs,
        'cublasGemmStridedBatchedEx',
        cb.cublasGemmStridedBatchedEx(
          this.handle,
          opA,
          opB,
          m,
          n,
          k,
          this.alphaBuf,
          a,
          abType,
          lda,
          sA,
          b,
          abType,
          ldb,
          sB,
          this.betaBuf,
          c,
          cType,
          ldc,
          sC,
          batch,
          CUBLAS_COMPUTE_32F,
          CUBLAS_GEMM_DEFAULT
        )
      )
    }
  }

  /**
   * out[N,OC] = inp[N,C] · weight[OC,C]ᵀ + bias[OC] in one cuBLASLt call (bias epilogue).
   * Returns false when cuBLASLt has no algorithm for this shape/type (the caller then adds the
   * bias itself).
   */
  matmulBias(out: number, inp: number, weight: number, bias: number, N: number, C: number, OC: number, type: number): boolean {
    if (!this.ltEnabled) return false
    const key = `${N},${C},${OC},${type}`
    let plan = this.plans.get(key)
    if (plan === undefined) {
      plan = this.makePlan(N, C, OC, type)
      this.plans.set(key, plan)
    }
    if (plan === null) return false
    const lt = this.libs.cublasLt()
    plan.biasPtr[0] = BigInt(bias)
    checkCublasLt(this.libs, 'cublasLtMatmulDescSetAttribute', lt.cublasLtMatmulDescSetAttribute(plan.desc, LT_DESC_BIAS_POINTER, plan.biasPtr, 8))
    this.alphaBuf[0] = 1
    this.betaBuf[0] = 0
    const [la, lb, lc] = plan.layouts
    checkCublasLt(
      this.libs,
      'cublasLtMatmul',
      lt.cublasLtMatmul(
        this.lt,
        plan.desc,
        this.alphaBuf,
        weight,
        la,
        inp,
        lb,
        this.betaBuf,
        out,
        lc,
        out,
        lc,
        plan.algo,
        this.workspace,
        this.workspaceBytes,
        this.stream
      )
    )
    return true
  }

  private makePlan(N: number, C: number, OC: number, type: number): LtPlan | null {
    const lt = this.libs.cublasLt()
    const L = this.libs
    if (this.lt === null) {
      const h: Handle[] = [null]
      checkCublasLt(L, 'cublasLtCreate', lt.cublasLtCreate(h))
      this.lt = h[0]
      const p: Handle[] = [null]
      checkCublasLt(L, 'cublasLtMatmulPreferenceCreate', lt.cublasLtMatmulPreferenceCreate(p))
      this.ltPref = p[0]
      checkCublasLt(
        L,
        'cublasLtMatmulPreferenceSetAttribute',
        lt.cublasLtMatmulPreferenceSetAttribute(this.ltPref, LT_PREF_MAX_WORKSPACE_BYTES, new BigUint64Array([BigInt(this.workspaceBytes)]), 8)
      )
    }
    const d: Handle[] = [null]
    checkCublasLt(L, 'cublasLtMatmulDescCreate', lt.cublasLtMatmulDescCreate(d, CUBLAS_COMPUTE_32F, CUDA_R_32F))
    const desc = d[0]
    const i32 = (v: number): Int32Array => new Int32Array([v])
    checkCublasLt(L, 'cublasLtMatmulDescSetAttribute', lt.cublasLtMatmulDescSetAttribute(desc, LT_DESC_TRANSA, i32(OP_T), 4))
    checkCublasLt(L, 'cublasLtMatmulDescSetAttribute', lt.cublasLtMatmulDescSetAttribute(desc, LT_DESC_TRANSB, i32(OP_N), 4))
    checkCublasLt(L, 'cublasLtMatmulDescSetAttribute', lt.cublasLtMatmulDescSetAttribute(desc, LT_DESC_EPILOGUE, i32(LT_EPILOGUE_BIAS), 4))
    checkCublasLt(L, 'cublasLtMatmulDescSetAttribute', lt.cublasLtMatmulDescSetAttribute(desc, LT_DESC_BIAS_DATA_TYPE, i32(type), 4))
    const layout = (rows: number, cols: number, ld: number): Handle => {
      const l: Handle[] = [null]
      checkCublasLt(L, 'cublasLtMatrixLayoutCreate', lt.cublasLtMatrixLayoutCreate(l, type, rows, cols, ld))
      return l[0]
    }
    // Column-major: A = weight stored C×OC (op T), B = inp stored C×N, D = OC×N.
    const layouts = [layout(C, OC, C), layout(C, N, C), layout(OC, N, OC)]
    const algo = new Uint8Array(LT_HEURISTIC_RESULT_BYTES)
    const count = [0]
    const rc = lt.cublasLtMatmulAlgoGetHeuristic(this.lt, desc, layouts[0], layouts[1], layouts[2], layouts[2], this.ltPref, 1, algo, count) as number
    if (rc !== 0 || count[0] === 0) {
      for (const l of layouts) lt.cublasLtMatrixLayoutDestroy(l)
      lt.cublasLtMatmulDescDestroy(desc)
      return null
    }
    return { desc, layouts, algo, biasPtr: new BigUint64Array(1) }
  }

  dispose(): void {
    const cb = this.libs.cublas()
    cb.cublasDestroy(this.handle)
    if (this.lt !== null) {
      const lt = this.libs.cublasLt()
      for (const p of this.plans.values()) {
        if (p === null) continue
        for (const l of p.layouts) lt.cublasLtMatrixLayoutDestroy(l)
        lt.cublasLtMatmulDescDestroy(p.desc)
      }
      if (this.ltPref !== null) lt.cublasLtMatmulPreferenceDestroy(this.ltPref)
      lt.cublasLtDestroy(this.lt)
    }
    this.plans.clear()
  }
}
