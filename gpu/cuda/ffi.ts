import { createRequire } from 'node:module'
import { BackendUnavailableError, DeviceError } from '../errors.ts'

/**
 * koffi bindings to the CUDA driver API (`libcuda.so.1`), NVRTC (`libnvrtc.so.13`), cuBLAS and
 * cuBLASLt (`libcublas(Lt).so.13`). Nothing is loaded at import time: {@link loadCuda} opens the
 * libraries on first use, so importing gpu/cuda on a machine without CUDA never throws.
 *
 * Conventions: device pointers (CUdeviceptr) are plain numbers (x86-64 device addresses fit in
 * 53 bits); opaque handles (contexts, modules, functions, streams, cuBLAS handles) are koffi
 * pointer values passed back as they came. Every call goes through `check*`, which turns a
 * non-zero status into a {@link DeviceError} naming the call.
 */

// koffi is loaded with require so that a missing native module surfaces as
// BackendUnavailableError from loadCuda(), not as an import-time failure.
const require = createRequire(import.meta.url)

// eslint-disable-next-line @typescript-eslint/no-explicit-any
type Fn = (...args: any[]) => any
type Handle = unknown

interface KoffiLib {
  func: (decl: string) => Fn
}
interface Koffi {
  load: (path: string) => KoffiLib
  /** An ArrayBuffer over `len` bytes of foreign memory at `ptr`, without a copy. */
  view: (ptr: unknown, len: number) => ArrayBuffer
  /** The address a pointer value holds. */
  address: (ptr: unknown) => bigint
}

export interface DriverApi {
  cuInit: Fn
  cuDriverGetVersion: Fn
  cuDeviceGetCount: Fn
  cuDeviceGet: Fn
  cuDeviceGetName: Fn
  cuDeviceTotalMem: Fn
  cuDeviceGetAttribute: Fn
  cuDevicePrimaryCtxRetain: Fn
  cuDevicePrimaryCtxRelease: Fn
  cuCtxSetCurrent: Fn
  cuCtxSynchronize: Fn
  cuGetErrorName: Fn
  cuMemAlloc: Fn
  cuMemFree: Fn
  cuMemGetInfo: Fn
  cuMemHostAlloc: Fn
  cuMemFreeHost: Fn
  cuMemHostRegister: Fn
  cuMemHostUnregister: Fn
  cuMemcpyHtoD: Fn
  cuMemcpyDtoH: Fn
  cuMemcpyDtoHAsync: Fn
  /** cuMemcpyDtoHAsync_v2 with the host address as a number: into page-locked memory at an offset. */
  cuMemcpyDtoHAsyncAddr: Fn
  cuMemcpyDtoDAsync: Fn
  cuMemsetD8Async: Fn
  cuMemsetD16Async: Fn
  cuMemsetD32Async: Fn
  cuModuleLoadData: Fn
  cuModuleUnload: Fn
  cuModuleGetFunction: Fn
  cuFuncSetAttribute: Fn
  cuFuncGetAttribute: Fn
  cuLaunchKernel: Fn
  cuStreamCreate: Fn
  cuStreamDestroy: Fn
  cuStreamSynchronize: Fn
  cuEventCreate: Fn
  cuEventDestroy: Fn
  cuEventRecord: Fn
  cuEventSynchronize: Fn
  cuEventQuery: Fn
  cuStreamWaitEvent: Fn
  cuEventElapsedTime: Fn
}

export interface NvrtcApi {
  nvrtcVersion: Fn
  nvrtcGetErrorString: Fn
  nvrtcCreateProgram: Fn
  nvrtcDestroyProgram: Fn
  nvrtcCompileProgram: Fn
  nvrtcGetProgramLogSize: Fn
  nvrtcGetProgramLog: Fn
  nvrtcGetCUBINSize: Fn
  nvrtcGetCUBIN: Fn
}

export interface CublasApi {
  cublasCreate: Fn
  cublasDestroy: Fn
  cublasGetVersion: Fn
  cublasGetStatusName: Fn
  cublasSetStream: Fn
  cublasSetWorkspace: Fn
  cublasSetMathMode: Fn
  cublasGemmEx: Fn
  cublasGemmStridedBatchedEx: Fn
}

export interface CublasLtApi {
  cublasLtCreate: Fn
  cublasLtDestroy: Fn
  cublasLtGetVersion: Fn
  cublasLtGetStatusName: Fn
  cublasLtMatmulDescCreate: Fn
  cublasLtMatmulDescDestroy: Fn
  cublasLtMatmulDescSetAttribute: Fn
  cublasLtMatrixLayoutCreate: Fn
  cublasLtMatrixLayoutDestroy: Fn
  cublasLtMatmulPreferenceCreate: Fn
  cublasLtMatmulPreferenceDestroy: Fn
  cublasLtMatmulPreferenceSetAttribute: Fn
  cublasLtMatmulAlgoGetHeuristic: Fn
  cublasLtMatmul: Fn
}

export interface CudaLibs {
  koffi: Koffi
  cu: DriverApi
  /** Loaded on first use (a process that only allocates and copies never needs them). */
  nvrtc: () => NvrtcApi
  cublas: () => CublasApi
  cublasLt: () => CublasLtApi
}

let cached: CudaLibs | null = null
let loadError: BackendUnavailableError | null = null

function open(koffi: Koffi, names: readonly string[]): KoffiLib {
  let last: unknown
  for (const n of names) {
    try {
      return koffi.load(n)
    } catch (err) {
      last = err
    }
  }
  throw new BackendUnavailableError(`cannot load ${names[0]!}: ${(last as Error).message}`, { library: names[0] }, { cause: last })
}

const CUDA_DIRS = ['/usr/local/cuda/lib64', '/usr/local/cuda/targets/x86_64-linux/lib']
function candidates(soname: string): string[] {
  return [soname, ...CUDA_DIRS.map(d => `${d}/${soname}`)]
}

/** Opens libcuda and binds the driver API; throws {@link BackendUnavailableError} where it cannot. */
export function loadCuda(): CudaLibs {
  if (cached !== null) return cached
  if (loadError !== null) throw loadError
  try {
    let koffi: Koffi
    try {
      koffi = require('koffi') as Koffi
    } catch (err) {
      throw new BackendUnavailableError(`the koffi FFI module is not available: ${(err as Error).message}`, {}, { cause: err })
    }
    const lib = open(koffi, ['libcuda.so.1', 'libcuda.so'])
    const f = (d: string): Fn => lib.func(d)
    const cu: DriverApi = {
      cuInit: f('int cuInit(uint32)'),
      cuDriverGetVersion: f('int cuDriverGetVersion(_Out_ int*)'),
      cuDeviceGetCount: f('int cuDeviceGetCount(_Out_ int*)'),
      cuDeviceGet: f('int cuDeviceGet(_Out_ int*, int)'),
      cuDeviceGetName: f('int cuDeviceGetName(void*, int, int)'),
      cuDeviceTotalMem: f('int cuDeviceTotalMem_v2(_Out_ size_t*, int)'),
      cuDeviceGetAttribute: f('int cuDeviceGetAttribute(_Out_ int*, int, int)'),
      cuDevicePrimaryCtxRetain: f('int cuDevicePrimaryCtxRetain(_Out_ void**, int)'),
      cuDevicePrimaryCtxRelease: f('int cuDevicePrimaryCtxRelease_v2(int)'),
      cuCtxSetCurrent: f('int cuCtxSetCurrent(void*)'),
      cuCtxSynchronize: f('int cuCtxSynchronize()'),
      cuGetErrorName: f('int cuGetErrorName(int, _Out_ const char**)'),
      cuMemAlloc: f('int cuMemAlloc_v2(_Out_ uint64*, size_t)'),
      cuMemFree: f('int cuMemFree_v2(uint64)'),
      cuMemGetInfo: f('int cuMemGetInfo_v2(_Out_ size_t*, _Out_ size_t*)'),
      cuMemHostAlloc: f('int cuMemHostAlloc(_Out_ void**, size_t, uint32)'),
      cuMemFreeHost: f('int cuMemFreeHost(void*)'),
      cuMemHostRegister: f('int cuMemHostRegister_v2(void*, size_t, uint32)'),
      cuMemHostUnregister: f('int cuMemHostUnregister(void*)'),
      cuMemcpyHtoD: f('int cuMemcpyHtoD_v2(uint64, const void*, size_t)'),
      cuMemcpyDtoH: f('int cuMemcpyDtoH_v2(void*, uint64, size_t)'),
      cuMemcpyDtoHAsync: f('int cuMemcpyDtoHAsync_v2(void*, uint64, size_t, void*)'),
      cuMemcpyDtoHAsyncAddr: f('int cuMemcpyDtoHAsync_v2(uint64, uint64, size_t, void*)'),
      cuMemcpyDtoDAsync: f('int cuMemcpyDtoDAsync_v2(uint64, uint64, size_t, void*)'),
      cuMemsetD8Async: f('int cuMemsetD8Async(uint64, uint8_t, size_t, void*)'),
      cuMemsetD16Async: f('int cuMemsetD16Async(uint64, uint16_t, size_t, void*)'),
      cuMemsetD32Async: f('int cuMemsetD32Async(uint64, uint32_t, size_t, void*)'),
      cuModuleLoadData: f('int cuModuleLoadData(_Out_ void**, const void*)'),
      cuModuleUnload: f('int cuModuleUnload(void*)'),
      cuModuleGetFunction: f('int cuModuleGetFunction(_Out_ void**, void*, const char*)'),
      cuFuncSetAttribute: f('int cuFuncSetAttribute(void*, int, int)'),
      cuFuncGetAttribute: f('int cuFuncGetAttribute(_Out_ int*, int, void*)'),
      cuLaunchKernel: f('int cuLaunchKernel(void*, uint32, uint32, uint32, uint32, uint32, uint32, uint32, void*, void**, void**)'),
      cuStreamCreate: f('int cuStreamCreate(_Out_ void**, uint32)'),
      cuStreamDestroy: f('int cuStreamDestroy_v2(void*)'),
      cuStreamSynchronize: f('int cuStreamSynchronize(void*)'),
      cuEventCreate: f('int cuEventCreate(_Out_ void**, uint32)'),
      cuEventDestroy: f('int cuEventDestroy_v2(void*)'),
      cuEventRecord: f('int cuEventRecord(void*, void*)'),
      cuEventSynchronize: f('int cuEventSynchronize(void*)'),
      cuEventQuery: f('int cuEventQuery(void*)'),
      cuStreamWaitEvent: f('int cuStreamWaitEvent(void*, void*, uint32)'),
      cuEventElapsedTime: f('int cuEventElapsedTime(_Out_ float*, void*, void*)')
    }
    let nvrtc: NvrtcApi | null = null
    let cublas: CublasApi | null = null
    let cublasLt: CublasLtApi | null = null
    cached = {
      koffi,
      cu,
      nvrtc: () => {
        if (nvrtc !== null) return nvrtc
        const l = open(koffi, candidates('libnvrtc.so.13'))
        const g = (d: string): Fn => l.func(d)
        nvrtc = {
          nvrtcVersion: g('int nvrtcVersion(_Out_ int*, _Out_ int*)'),
          nvrtcGetErrorString: g('const char* nvrtcGetErrorString(int)'),
          nvrtcCreateProgram: g('int nvrtcCreateProgram(_Out_ void**, const char*, const char*, int, void*, void*)'),
          nvrtcDestroyProgram: g('int nvrtcDestroyProgram(_Inout_ void**)'),
          nvrtcCompileProgram: g('int nvrtcCompileProgram(void*, int, const char**)'),
          nvrtcGetProgramLogSize: g('int nvrtcGetProgramLogSize(void*, _Out_ size_t*)'),
          nvrtcGetProgramLog: g('int nvrtcGetProgramLog(void*, void*)'),
          nvrtcGetCUBINSize: g('int nvrtcGetCUBINSize(void*, _Out_ size_t*)'),
          nvrtcGetCUBIN: g('int nvrtcGetCUBIN(void*, void*)')
        }
        return nvrtc
      },
      cublas: () => {
        if (cublas !== null) return cublas
        const l = open(koffi, candidates('libcublas.so.13'))
        const g = (d: string): Fn => l.func(d)
        cublas = {
          cublasCreate: g('int cublasCreate_v2(_Out_ void**)'),
          cublasDestroy: g('int cublasDestroy_v2(void*)'),
          cublasGetVersion: g('int cublasGetVersion_v2(void*, _Out_ int*)'),
          cublasGetStatusName: g('const char* cublasGetStatusName(int)'),
          cublasSetStream: g('int cublasSetStream_v2(void*, void*)'),
          cublasSetWorkspace: g('int cublasSetWorkspace_v2(void*, uint64, size_t)'),
          cublasSetMathMode: g('int cublasSetMathMode(void*, int)'),
          cublasGemmEx: g(
            'int cublasGemmEx(void*, int, int, int, int, int, const void*, uint64, int, int, uint64, int, int, const void*, uint64, int, int, int, int)'
          ),
          cublasGemmStridedBatchedEx: g(
            'int cublasGemmStridedBatchedEx(void*, int, int, int, int, int, const void*, uint64, int, int, int64, uint64, int, int, int64, const void*, uint64, int, int, int64, int, int, int)'
          )
        }
        return cublas
      },
      cublasLt: () => {
        if (cublasLt !== null) return cublasLt
        const l = open(koffi, candidates('libcublasLt.so.13'))
        const g = (d: string): Fn => l.func(d)
        cublasLt = {
          cublasLtCreate: g('int cublasLtCreate(_Out_ void**)'),
          cublasLtDestroy: g('int cublasLtDestroy(void*)'),
          cublasLtGetVersion: g('size_t cublasLtGetVersion()'),
          cublasLtGetStatusName: g('const char* cublasLtGetStatusName(int)'),
          cublasLtMatmulDescCreate: g('int cublasLtMatmulDescCreate(_Out_ void**, int, int)'),
          cublasLtMatmulDescDestroy: g('int cublasLtMatmulDescDestroy(void*)'),
          cublasLtMatmulDescSetAttribute: g('int cublasLtMatmulDescSetAttribute(void*, int, const void*, size_t)'),
          cublasLtMatrixLayoutCreate: g('int cublasLtMatrixLayoutCreate(_Out_ void**, int, uint64, uint64, int64)'),
          cublasLtMatrixLayoutDestroy: g('int cublasLtMatrixLayoutDestroy(void*)'),
          cublasLtMatmulPreferenceCreate: g('int cublasLtMatmulPreferenceCreate(_Out_ void**)'),
          cublasLtMatmulPreferenceDestroy: g('int cublasLtMatmulPreferenceDestroy(void*)'),
          cublasLtMatmulPreferenceSetAttribute: g('int cublasLtMatmulPreferenceSetAttribute(void*, int, const void*, size_t)'),
          cublasLtMatmulAlgoGetHeuristic: g('int cublasLtMatmulAlgoGetHeuristic(void*, void*, void*, void*, void*, void*, void*, int, void*, _Out_ int*)'),
          cublasLtMatmul: g(
            'int cublasLtMatmul(void*, void*, const void*, uint64, void*, uint64, void*, const void*, uint64, void*, uint64, void*, const void*, uint64, size_t, void*)'
          )
        }
        return cublasLt
      }
    }
    return cached
  } catch (err) {
    loadError =
      err instanceof BackendUnavailableError ? err : new BackendUnavailableError(`cannot load the CUDA driver: ${(err as Error).message}`, {}, { cause: err })
    throw loadError
  }
}

/** Turns a driver status into a DeviceError (CUDA_SUCCESS = 0 passes). */
export function checkCu(libs: CudaLibs, call: string, status: number): void {
  if (status === 0) return
  throw new DeviceError(call, status, cuErrorName(libs, status))
}

export function cuErrorName(libs: CudaLibs, status: number): string {
  try {
    const out: Array<string | null> = [null]
    if (libs.cu.cuGetErrorName(status, out) === 0 && typeof out[0] === 'string') return out[0]
  } catch {
    /* fall through */
  }
  return 'CUDA_ERROR_UNKNOWN'
}

export function checkNvrtc(libs: CudaLibs, call: string, status: number): void {
  if (status === 0) return
  let name = 'NVRTC_ERROR'
  try {
    name = String(libs.nvrtc().nvrtcGetErrorString(status))
  } catch {
    /* keep the generic name */
  }
  throw new DeviceError(call, status, name)
}

export function checkCublas(libs: CudaLibs, call: string, status: number): void {
  if (status === 0) return
  let name = 'CUBLAS_STATUS_UNKNOWN'
  try {
    name = String(libs.cublas().cublasGetStatusName(status))
  } catch {
    /* keep the generic name */
  }
  throw new DeviceError(call, status, name)
}

export function checkCublasLt(libs: CudaLibs, call: string, status: number): void {
  if (status === 0) return
  let name = 'CUBLAS_STATUS_UNKNOWN'
  try {
    name = String(libs.cublasLt().cublasLtGetStatusName(status))
  } catch {
    /* keep the generic name */
  }
  throw new DeviceError(call, status, name)
}

/** A koffi out-parameter holding a device pointer or size, as a number. */
export function outNumber(v: unknown): number {
  const n = typeof v === 'bigint' ? Number(v) : (v as number)
  return n
}

export type { Handle }
