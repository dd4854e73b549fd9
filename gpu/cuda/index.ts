/**
 * gpu/cuda: the CUDA backend (koffi → driver API, NVRTC, cuBLAS/cuBLASLt). Importing this
 * module never touches CUDA; {@link createCudaBackend} and {@link probeCuda} load the libraries
 * on demand and report a missing driver or device as {@link BackendUnavailableError} /
 * `{ ok: false, reason }`.
 */
import { readFileSync } from 'node:fs'
import { BackendUnavailableError } from '../errors.ts'
import { CudaBackend, type CudaDeviceInfo } from './backend.ts'
import { defaultCubinCacheDir } from './compiler.ts'
import { type CudaLibs, checkCu, cuErrorName, loadCuda, outNumber, type Handle } from './ffi.ts'

export { CudaBackend, type CudaDeviceInfo } from './backend.ts'
export { CUDA_LIMITS } from './limits.ts'
export { createCudaErasureCoder, type CudaErasureCoder } from './erasure.ts'

const ATTR_CC_MAJOR = 75
const ATTR_CC_MINOR = 76
const ATTR_SM_COUNT = 16

export interface CudaBackendOptions {
  /** Device ordinal (default 0, or $ZEROMESH_CUDA_DEVICE). */
  device?: number
  /** Cubin cache directory; null disables the disk cache. Default {@link defaultCubinCacheDir}. */
  cacheDir?: string | null
  /** `--device-memory`: device bytes the backend may hold at most (tensors and its caches). */
  deviceMemoryBytes?: number
}

/** What `zeromesh doctor` prints about CUDA. */
export type CudaProbe =
  | {
      ok: true
      device: string
      computeCapability: string
      memoryBytes: number
      driverVersion: string
      cudaVersion: string
      nvrtcVersion: string
      cublasVersion: string
    }
  | { ok: false; reason: string }

function nvidiaDriverVersion(): string | null {
  try {
    const m = /Kernel Module(?: for [\w-]+)?\s+([0-9.]+)/.exec(readFileSync('/proc/driver/nvidia/version', 'utf8'))
    return m === null ? null : m[1]!
  } catch {
    return null
  }
}

/** cuInit + device query; throws BackendUnavailableError with one clear reason. */
function openDevice(libs: CudaLibs, ordinal: number): CudaDeviceInfo {
  const cu = libs.cu
  const rc = cu.cuInit(0) as number
  if (rc !== 0) throw new BackendUnavailableError(`cuInit failed: ${cuErrorName(libs, rc)} (${rc}); is the NVIDIA driver loaded and a GPU visible?`)
  const count = [0]
  checkCu(libs, 'cuDeviceGetCount', cu.cuDeviceGetCount(count))
  if (count[0]! < 1) throw new BackendUnavailableError('no CUDA device found')
  if (ordinal < 0 || ordinal >= count[0]!) throw new BackendUnavailableError(`CUDA device ${ordinal} does not exist (${count[0]!} found)`)
  const dev = [0]
  checkCu(libs, 'cuDeviceGet', cu.cuDeviceGet(dev, ordinal))
  const nameBuf = Buffer.alloc(256)
  checkCu(libs, 'cuDeviceGetName', cu.cuDeviceGetName(nameBuf, 256, dev[0]))
  const name = nameBuf.toString('utf8', 0, Math.max(0, nameBuf.indexOf(0)))
  const attr = (a: number): number => {
    const v = [0]
    checkCu(libs, 'cuDeviceGetAttribute', cu.cuDeviceGetAttribute(v, a, dev[0]))
    return v[0]!
  }
  const mem = [0]
  checkCu(libs, 'cuDeviceTotalMem_v2', cu.cuDeviceTotalMem(mem, dev[0]))
  const dv = [0]
  checkCu(libs, 'cuDriverGetVersion', cu.cuDriverGetVersion(dv))
  const cudaVersion = `${Math.floor(dv[0]! / 1000)}.${Math.floor((dv[0]! % 1000) / 10)}`
  return {
    device: dev[0]!,
    name,
    computeCapability: `${attr(ATTR_CC_MAJOR)}.${attr(ATTR_CC_MINOR)}`,
    smCount: attr(ATTR_SM_COUNT),
    memoryBytes: outNumber(mem[0]),
    driverVersion: nvidiaDriverVersion() ?? `cuda ${cudaVersion}`,
    cudaVersion
  }
}

function deviceOrdinal(opts: CudaBackendOptions): number {
  if (opts.device !== undefined) return opts.device
  const env = process.env['ZEROMESH_CUDA_DEVICE']
  return env === undefined ? 0 : Number.parseInt(env, 10)
}

/**
 * Creates the CUDA backend on one device (primary context, one stream). Rejects with
 * {@link BackendUnavailableError} where there is no driver, library or device.
 */
export async function createCudaBackend(opts: CudaBackendOptions = {}): Promise<CudaBackend> {
  const libs = loadCuda()
  const info = openDevice(libs, deviceOrdinal(opts))
  try {
    libs.nvrtc()
    libs.cublas()
  } catch (err) {
    throw err instanceof BackendUnavailableError ? err : new BackendUnavailableError(String(err))
  }
  const ctx: Handle[] = [null]
  checkCu(libs, 'cuDevicePrimaryCtxRetain', libs.cu.cuDevicePrimaryCtxRetain(ctx, info.device))
  checkCu(libs, 'cuCtxSetCurrent', libs.cu.cuCtxSetCurrent(ctx[0]))
  return new CudaBackend({
    libs,
    info,
    ctx: ctx[0],
    cacheDir: opts.cacheDir === undefined ? defaultCubinCacheDir() : opts.cacheDir,
    ...(opts.deviceMemoryBytes === undefined ? {} : { deviceMemoryBytes: opts.deviceMemoryBytes })
  })
}

/** Reports the GPU, driver, CUDA, NVRTC and cuBLAS versions, or plainly why CUDA is unavailable. */
export async function probeCuda(opts: CudaBackendOptions = {}): Promise<CudaProbe> {
  let be: CudaBackend | null = null
  try {
    be = await createCudaBackend({ ...opts, cacheDir: null })
    const d = be.info
    const m = /NVRTC ([0-9.]+), cuBLAS ([0-9.]+)/.exec(be.description)
    return {
      ok: true,
      device: d.name,
      computeCapability: d.computeCapability,
      memoryBytes: d.memoryBytes,
      driverVersion: d.driverVersion,
      cudaVersion: d.cudaVersion,
      nvrtcVersion: m?.[1] ?? 'unknown',
      cublasVersion: m?.[2] ?? 'unknown'
    }
  } catch (err) {
    return { ok: false, reason: (err as Error).message }
  } finally {
    be?.dispose()
  }
}
export * from './nccl.ts'
