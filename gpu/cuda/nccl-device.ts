import type { Tensor } from '../backend.ts'
import type { CudaBackend } from './backend.ts'
import { checkCu, type Handle } from './ffi.ts'

/**
 * What a communicator needs from the CUDA side: the stream its collectives are enqueued on,
 * device addresses of tensors, and completion markers it can poll. The CUDA backend provides
 * one through {@link cudaNcclDevice}; host tests pass a fake.
 */
export interface NcclDevice {
  /** The CUstream the collectives run on (the runtime's cudaStream_t is the same handle). */
  readonly stream: Handle
  /** Makes the device's context current on this thread: NCCL reads its device from it. */
  makeCurrent(): void
  /** The device address of a tensor of this device; throws InvalidArgumentError for any other. */
  address(op: string, name: string, t: Tensor): number
  /** Records a marker after everything enqueued on the stream so far. */
  record(): Handle
  /** Whether the work before `marker` has finished; throws DeviceError on a device fault. */
  done(marker: Handle): boolean
  /** Frees a marker. */
  release(marker: Handle): void
}

// The driver's CU_EVENT_DISABLE_TIMING (cuda.h): an event without timing is cheaper to record
// and query, and we only ask whether it passed.
const CU_EVENT_DISABLE_TIMING = 0x2
const CUDA_ERROR_NOT_READY = 600

/** The {@link NcclDevice} of a CUDA backend: its context, its stream, events on that stream. */
export function cudaNcclDevice(backend: CudaBackend): NcclDevice {
  const { libs, ctx, stream } = backend.streamHandles()
  const cu = libs.cu
  return {
    stream,
    makeCurrent: () => checkCu(libs, 'cuCtxSetCurrent', cu.cuCtxSetCurrent(ctx)),
    address: (op, name, t) => backend.deviceAddress(op, name, t),
    record: () => {
      const ev: Handle[] = [null]
      checkCu(libs, 'cuEventCreate', cu.cuEventCreate(ev, CU_EVENT_DISABLE_TIMING))
      const rc = cu.cuEventRecord(ev[0], stream) as number
      if (rc !== 0) cu.cuEventDestroy(ev[0])
      checkCu(libs, 'cuEventRecord', rc)
      return ev[0]
    },
    done: marker => {
      const rc = cu.cuEventQuery(marker) as number
      if (rc === CUDA_ERROR_NOT_READY) return false
      checkCu(libs, 'cuEventQuery', rc)
      return true
    },
    release: marker => {
      cu.cuEventDestroy(marker)
    }
  }
}
