import { DeviceOutOfMemoryError, deviceMemoryExceeded } from '../errors.ts'
import type { DeviceError } from '../errors.ts'
import { type CudaLibs, checkCu, outNumber } from './ffi.ts'
import { CUDA_LIMITS } from './limits.ts'

/** One device allocation as the allocator hands it out. */
export interface Block {
  readonly ptr: number
  /** Rounded size (the free-list bucket). */
  readonly size: number
  freed: boolean
}

const CUDA_ERROR_OUT_OF_MEMORY = 2

/**
 * A caching device allocator: sizes are rounded (512 B steps up to 1 MiB, 2 MiB steps above)
 * and freed blocks go to a free list per rounded size, so a training loop that frees and
 * re-allocates the same shapes never calls cuMemAlloc again. Reuse is safe because every op
 * runs on one stream in issue order. On out-of-memory the cached blocks are released and the
 * allocation retried once, then {@link DeviceOutOfMemoryError}.
 */
export class CachingAllocator {
  private readonly libs: CudaLibs
  private readonly free = new Map<number, number[]>()
  private readonly live = new Set<Block>()
  private cachedBytes_ = 0
  private liveBytes_ = 0

  /** `--device-memory`: bytes of live and cached blocks at most (undefined: the device's own). */
  private readonly cap: number | undefined

  constructor(libs: CudaLibs, cap?: number) {
    this.libs = libs
    this.cap = cap
  }

  static round(bytes: number): number {
    const L = CUDA_LIMITS
    if (bytes <= L.smallPoolMaxBytes) return Math.max(L.smallRoundBytes, Math.ceil(bytes / L.smallRoundBytes) * L.smallRoundBytes)
    return Math.ceil(bytes / L.largeRoundBytes) * L.largeRoundBytes
  }

  alloc(bytes: number): Block {
    const size = CachingAllocator.round(bytes)
    const list = this.free.get(size)
    let ptr: number
    if (list !== undefined && list.length > 0) {
      ptr = list.pop()!
      this.cachedBytes_ -= size
    } else {
      ptr = this.deviceAlloc(size)
    }
    const b: Block = { ptr, size, freed: false }
    this.live.add(b)
    this.liveBytes_ += size
    return b
  }

  private deviceAlloc(size: number): number {
    const cap = this.cap
    if (cap !== undefined && this.liveBytes_ + this.cachedBytes_ + size > cap) {
      this.releaseCached()
      if (this.liveBytes_ + size > cap) throw deviceMemoryExceeded(cap, size, this.liveBytes_)
    }
    const out = [0]
    let rc = this.libs.cu.cuMemAlloc(out, size) as number
    if (rc === CUDA_ERROR_OUT_OF_MEMORY) {
      this.releaseCached()
      rc = this.libs.cu.cuMemAlloc(out, size) as number
      if (rc === CUDA_ERROR_OUT_OF_MEMORY) {
        throw new DeviceOutOfMemoryError(`device out of memory allocating ${size} bytes (${this.liveBytes_} bytes live)`, {
          bytes: size,
          liveBytes: this.liveBytes_
        })
      }
    }
    checkCu(this.libs, 'cuMemAlloc_v2', rc)
    return outNumber(out[0])
  }

  release(b: Block): void {
    if (b.freed) return
    b.freed = true
    if (!this.live.delete(b)) return
    this.liveBytes_ -= b.size
    let list = this.free.get(b.size)
    if (list === undefined) {
      list = []
      this.free.set(b.size, list)
    }
    list.push(b.ptr)
    this.cachedBytes_ += b.size
  }

  /** Returns every cached (free) block to the driver. */
  releaseCached(): void {
    let err: DeviceError | null = null
    for (const [size, list] of this.free) {
      for (const p of list) {
        const rc = this.libs.cu.cuMemFree(p) as number
        if (rc !== 0 && err === null) {
          try {
            checkCu(this.libs, 'cuMemFree_v2', rc)
          } catch (e) {
            err = e as DeviceError
          }
        }
        this.cachedBytes_ -= size
      }
    }
    this.free.clear()
    if (err !== null) throw err
  }

  /** Frees everything, live blocks included (dispose). */
  releaseAll(): void {
    for (const b of this.live) {
      b.freed = true
      this.libs.cu.cuMemFree(b.ptr)
    }
    this.live.clear()
    this.liveBytes_ = 0
    this.releaseCached()
  }

  get liveBytes(): number {
    return this.liveBytes_
  }
  get cachedBytes(): number {
    return this.cachedBytes_
  }
}
