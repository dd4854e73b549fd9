/**
 * gpu: the Backend interface (tensors, transfers, the op set a GPT needs), the CPU reference
 * backend, the CUDA backend (loaded on demand) and the GPT model written against Backend.
 * Depends on core/ and, for the quantizers' shared format, codec/.
 */
import type { Backend } from './backend.ts'
// Type only (erased): importing the CUDA module's types loads no library.
import type { CudaBackend, CudaErasureCoder, CudaProbe } from './cuda/index.ts'
import { BackendUnavailableError } from './errors.ts'
import { CpuBackend } from './cpu.ts'

export {
  type Backend,
  type Tensor,
  type TensorDType,
  type HostArray,
  type Fence,
  type AdamWParams,
  type LionParams,
  type GemmParams,
  TENSOR_DTYPE_BYTES
} from './backend.ts'
export { BackendUnavailableError, DeviceError, KernelCompileError, DeviceOutOfMemoryError } from './errors.ts'
export { CpuBackend, type CpuBackendInit, CPU_LIMITS } from './cpu.ts'
export { adamw8bitHost, adamwHost, lion8bitHost, lionConstants, lionHost } from './host-optim.ts'
export { createHostOptimizer, defaultOptimizerThreads, HOST_OPTIM_LIMITS, type HostOptimizer, HostOptimizerError } from './host-optim-threads.ts'
export { zoNegative, zoSeed, type ZoSeed } from './zo.ts'
export { ADAM8_BLOCK, ADAM8_MAP_M, ADAM8_MAP_V, adam8Blocks, adam8Decode, adam8Encode, MOMENTS8, moments8Of, type Moments8 } from './adam8.ts'
export {
  Gpt,
  gptBuckets,
  type GptBucket,
  type GptStream,
  type GptConfig,
  type GptOptions,
  type GptUpdateParams,
  type GptLayout,
  type GptTensorInfo,
  type GptPresetName,
  GPT_PRESETS,
  gptLayout,
  initGptParams,
  initGptParamsYielding,
  validateGptConfig,
  paddedVocabSize,
  GPT_LAYERNORM_EPS
} from './gpt.ts'
export {
  type HfGpt2Tensor,
  GPT2_VOCAB_SIZE,
  GPT2_EOT,
  hfGpt2Tensors,
  toHfGpt2,
  fromHfGpt2,
  hfGpt2Config,
  parseHfGpt2Config
} from './gpt-hf.ts'
export { GptSampler, type SampleOptions } from './sample.ts'

// NCCL for the intra-host tier (importing it loads no library; loadNccl opens libnccl on demand).
export {
  loadNccl,
  type Nccl,
  type NcclLoad,
  type NcclInitOptions,
  NcclComm,
  NcclError,
  NcclTimeoutError,
  NcclCommClosedError,
  NCCL_LIMITS,
  NCCL_UNIQUE_ID_BYTES
} from './cuda/nccl.ts'

/** The CUDA backend's own type (erased: importing it loads no library); {@link createBackend} builds one. */
export type { CudaBackend, CudaErasureCoder } from './cuda/index.ts'

/** What `zeromesh doctor` reports about CUDA: the device and library versions, or why not. */
export type CudaProbeResult = CudaProbe

/** Probes the CUDA driver, device, NVRTC and cuBLAS without keeping anything open. Never throws. */
export async function probeCuda(): Promise<CudaProbeResult> {
  try {
    const mod = await importCuda()
    if (typeof mod.probeCuda !== 'function') return { ok: false, reason: 'gpu/cuda does not export probeCuda' }
    return await mod.probeCuda()
  } catch (err) {
    return { ok: false, reason: (err as Error).message }
  }
}

interface CudaModule {
  createCudaBackend?: (opts?: { deviceMemoryBytes?: number }) => Backend | Promise<Backend>
  probeCuda?: () => Promise<CudaProbeResult>
  createCudaErasureCoder?: (be: CudaBackend, init: { k: number; m: number }) => CudaErasureCoder
}

async function importCuda(): Promise<CudaModule> {
  // The specifier is computed so that the same code works from sources (.ts) and from the
  // built dist/ (.js).
  const ext = import.meta.url.endsWith('.ts') ? '.ts' : '.js'
  const specifier = `./cuda/index${ext}`
  try {
    return (await import(specifier)) as CudaModule
  } catch (err) {
    if ((err as { code?: string }).code === 'ERR_MODULE_NOT_FOUND') {
      throw new BackendUnavailableError(`the cuda backend could not be loaded: ${(err as Error).message}`, {}, { cause: err })
    }
    throw err
  }
}

/** Which backend {@link createBackend} builds. */
export type BackendKind = 'cpu' | 'cuda'

/**
 * Creates a backend. `cuda` is imported lazily (koffi and the CUDA libraries are only touched
 * then) and fails with {@link BackendUnavailableError} where it cannot run.
 */
export async function createBackend(kind: BackendKind, opts: { deviceMemoryBytes?: number } = {}): Promise<Backend> {
  if (kind === 'cpu') return new CpuBackend(opts)
  if (kind !== 'cuda') throw new BackendUnavailableError(`unknown backend kind '${String(kind)}'`)
  const mod = await importCuda()
  if (typeof mod.createCudaBackend !== 'function') throw new BackendUnavailableError('gpu/cuda does not export createCudaBackend')
  return await mod.createCudaBackend(opts)
}

/**
 * The CUDA Reed-Solomon coder of a CUDA backend (gpu/cuda/erasure.ts: byte-compatible with
 * codec's coders), imported lazily like the backend.
 */
export async function createCudaErasureCoder(be: CudaBackend, init: { k: number; m: number }): Promise<CudaErasureCoder> {
  const mod = await importCuda()
  if (typeof mod.createCudaErasureCoder !== 'function') throw new BackendUnavailableError('gpu/cuda does not export createCudaErasureCoder')
  return mod.createCudaErasureCoder(be, init)
}
