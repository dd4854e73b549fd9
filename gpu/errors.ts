import { ZeromeshError } from '../core/index.ts'

/** The requested backend cannot be created here (no driver, no library, no device). */
export class BackendUnavailableError extends ZeromeshError {
  static override name = 'BackendUnavailableError'
}

/**
 * A CUDA driver, NVRTC or cuBLAS call returned an error status. `call` names the API function,
 * `status` is its numeric code and `statusName` the library's name for it.
 */
export class DeviceError extends ZeromeshError {
  static override name = 'DeviceError'
  readonly call: string
  readonly status: number
  readonly statusName: string

  constructor(call: string, status: number, statusName: string, extra = '') {
    super(`${call} failed: ${statusName} (${status})${extra === '' ? '' : `: ${extra}`}`, { call, status, statusName })
    this.call = call
    this.status = status
    this.statusName = statusName
  }
}

/** NVRTC rejected a kernel source; `log` is the compiler's log. */
export class KernelCompileError extends ZeromeshError {
  static override name = 'KernelCompileError'
  readonly kernel: string
  readonly log: string

  constructor(kernel: string, log: string) {
    super(`kernel ${kernel} failed to compile:\n${log}`, { kernel })
    this.kernel = kernel
    this.log = log
  }
}

/** The device ran out of memory even after the caching allocator released its free blocks. */
export class DeviceOutOfMemoryError extends ZeromeshError {
  static override name = 'DeviceOutOfMemoryError'
}

/** The error of an allocation past a `--device-memory` cap (`bytes` asked, `live` held already). */
export function deviceMemoryExceeded(cap: number, bytes: number, live: number): DeviceOutOfMemoryError {
  return new DeviceOutOfMemoryError(`device memory cap exceeded: ${bytes} more bytes asked with ${live} live, over --device-memory ${cap} bytes`, {
    bytes,
    liveBytes: live,
    capBytes: cap
  })
}
