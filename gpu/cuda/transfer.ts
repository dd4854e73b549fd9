import { AbortError, checkCap } from '../../core/index.ts'
import { TENSOR_DTYPE_BYTES, type Fence, type HostArray, type TensorDType } from '../backend.ts'
import { allocSize, checkDownload, fail, hostArrayOf } from '../validate.ts'
import { type CudaLibs, checkCu, type Handle } from './ffi.ts'
import { CUDA_LIMITS } from './limits.ts'

/** cuEventQuery's answer for an event whose work is still pending. */
const CUDA_ERROR_NOT_READY = 600
/** cuEventCreate flag: no timing, which makes record and query cheaper. */
const CU_EVENT_DISABLE_TIMING = 0x2
/**
 * cuStreamCreate flag: the copy stream does not synchronize with the legacy default stream, so
 * the backend's synchronous copies there (`write`, `read`, the kernel-flag check) never wait
 * for a download in flight; the copy is ordered after the main stream by an event instead.
 */
const CU_STREAM_NON_BLOCKING = 0x1
/** Polls of a waiting fence on setImmediate before it backs off to 1 ms timers (a step's copies finish within a few). */
const FAST_POLLS = 64

interface Pinned {
  ptr: Handle
  addr: number
  bytes: number
  /** Shared memory page-locked by registration (hostRegister): unregistered, never freed here. */
  registered?: HostArray
}

/** What a download copies: a device range of `length` elements of `dtype`. */
export interface DeviceRange {
  ptr: number
  dtype: TensorDType
  length: number
}

const immediate = (): Promise<void> => new Promise(resolve => setImmediate(resolve))
const pause = (ms: number): Promise<void> => new Promise(resolve => setTimeout(resolve, ms))

/**
 * The CUDA backend's asynchronous transfers: page-locked host arrays (`cuMemHostAlloc`, viewed
 * from JavaScript without a copy through koffi), a copy stream of its own, and fences, which
 * are events polled with `cuEventQuery` so a waiting caller never blocks its event loop (a
 * heartbeat or a collective keeps running while the device works).
 *
 * A download copies from a staging copy the backend made on its main stream (device to
 * device, ~3 TB/s): work issued after the download may then overwrite the source at once, and
 * the copy to the host overlaps that work.
 *
 * A freed page-locked array is detached from JavaScript before its memory goes back (a
 * typed array left over it reads as empty instead of touching freed memory); where the
 * runtime cannot detach it, the memory stays allocated until the process ends.
 */
export class Transfers {
  private readonly libs: CudaLibs
  private readonly main: Handle
  private readonly copy: Handle
  private readonly pinned = new Map<ArrayBufferLike, Pinned>()
  private readonly idle: Handle[] = []
  private readonly events = new Set<Handle>()
  /** Downloads whose staging copy is still in use, oldest first: each event passes once its copy is done. */
  private readonly staged: Array<{ ev: Handle; release: () => void }> = []
  private readonly afterPass: () => void
  private pinnedBytes = 0

  /** `afterPass` raises what the kernels flagged (the backend's flag check) once a fence passes. */
  constructor(libs: CudaLibs, main: Handle, afterPass: () => void) {
    this.libs = libs
    this.main = main
    this.afterPass = afterPass
    const s: Handle[] = [null]
    checkCu(libs, 'cuStreamCreate', libs.cu.cuStreamCreate(s, CU_STREAM_NON_BLOCKING))
    this.copy = s[0]
  }

  /** Page-locked bytes held by live host arrays. */
  get hostBytes(): number {
    return this.pinnedBytes
  }

  hostAlloc(dtype: TensorDType, length: number): HostArray {
    const { n, bytes } = allocSize(dtype, [length], 1, 'cuda host array bytes', CUDA_LIMITS.maxTensorBytes)
    checkCap('cuda page-locked host bytes', this.pinnedBytes + bytes, CUDA_LIMITS.maxPinnedBytes)
    if (bytes === 0) return hostArrayOf(dtype, 0)
    const out: Handle[] = [null]
    checkCu(this.libs, 'cuMemHostAlloc', this.libs.cu.cuMemHostAlloc(out, bytes, 0))
    const buffer = this.libs.koffi.view(out[0], bytes)
    new Uint8Array(buffer).fill(0)
    this.pinned.set(buffer, { ptr: out[0], addr: Number(this.libs.koffi.address(out[0])), bytes })
    this.pinnedBytes += bytes
    return hostArrayOf(dtype, n, buffer)
  }

  /**
   * Page-locks an array of shared memory (a SharedArrayBuffer, whole) by registering it
   * (`cuMemHostRegister`): downloads may then land in it and uploads from it run at DMA speed.
   * {@link freeHost} unregisters it; the memory stays the caller's.
   */
  hostRegister(a: HostArray): void {
    const buffer = a.buffer
    if (!(buffer instanceof SharedArrayBuffer)) fail('hostRegister', 'the array must be in shared memory (a SharedArrayBuffer)')
    if (a.byteOffset !== 0 || a.byteLength !== buffer.byteLength) fail('hostRegister', 'the array must span its whole buffer')
    if (this.pinned.has(buffer)) fail('hostRegister', 'the array is page-locked already')
    if (a.byteLength === 0) return
    checkCap('cuda page-locked host bytes', this.pinnedBytes + a.byteLength, CUDA_LIMITS.maxPinnedBytes)
    checkCu(this.libs, 'cuMemHostRegister_v2', this.libs.cu.cuMemHostRegister(a, a.byteLength, 0))
    this.pinned.set(buffer, { ptr: null, addr: Number(this.libs.koffi.address(a)), bytes: a.byteLength, registered: a })
    this.pinnedBytes += a.byteLength
  }

  freeHost(a: HostArray): void {
    const p = this.pinned.get(a.buffer)
    // An empty hostAlloc holds nothing; a freed (detached) array is still an error.
    if (p === undefined && a.buffer.byteLength === 0 && (a.buffer as ArrayBuffer & { detached?: boolean }).detached !== true) return
    if (p === undefined) fail('freeHost', 'the array is not page-locked memory of this backend')
    this.pinned.delete(a.buffer)
    this.pinnedBytes -= p.bytes
    // A download may still be writing into it (a session that failed mid-step frees its arrays).
    checkCu(this.libs, 'cuStreamSynchronize', this.libs.cu.cuStreamSynchronize(this.copy))
    if (p.registered !== undefined) checkCu(this.libs, 'cuMemHostUnregister', this.libs.cu.cuMemHostUnregister(p.registered))
    else if (detach(a.buffer as ArrayBuffer)) this.libs.cu.cuMemFreeHost(p.ptr)
  }

  /** A fence for the work issued on the main stream so far. */
  fence(): Fence {
    this.reap()
    const ev = this.event()
    checkCu(this.libs, 'cuEventRecord', this.libs.cu.cuEventRecord(ev, this.main))
    return new EventFence(this, ev)
  }

  /** Checks a download's destination: page-locked memory of this backend with room for `n` elements of `dtype`. */
  checkDestination(dst: HostArray, dtype: TensorDType, n: number, dstOffset: number): void {
    checkDownload(dst, dtype, n, dstOffset)
    // Nothing is copied for an empty source (hostAlloc's empty arrays are not page-locked either).
    if (n > 0 && !this.pinned.has(dst.buffer)) fail('download', "dst must be page-locked memory from this backend's hostAlloc")
  }

  /**
   * Copies `src` (a staging copy the caller made on the main stream) into page-locked `dst`
   * on the copy stream, after the main stream's work so far; `release` frees the staging
   * copy once the device is done with it.
   */
  download(dst: HostArray, src: DeviceRange, dstOffset: number, release: () => void): Fence {
    this.checkDestination(dst, src.dtype, src.length, dstOffset)
    this.reap()
    const p = this.pinned.get(dst.buffer)!
    const cu = this.libs.cu
    const bytes = src.length * TENSOR_DTYPE_BYTES[src.dtype]
    const issued = this.event()
    checkCu(this.libs, 'cuEventRecord', cu.cuEventRecord(issued, this.main))
    checkCu(this.libs, 'cuStreamWaitEvent', cu.cuStreamWaitEvent(this.copy, issued, 0))
    this.recycle(issued) // safe: the wait captured the event's state when it was enqueued
    const at = p.addr + dst.byteOffset + dstOffset * TENSOR_DTYPE_BYTES[src.dtype]
    checkCu(this.libs, 'cuMemcpyDtoHAsync_v2', cu.cuMemcpyDtoHAsyncAddr(at, src.ptr, bytes, this.copy))
    const done = this.event()
    checkCu(this.libs, 'cuEventRecord', cu.cuEventRecord(done, this.copy))
    // A second event, the reaper's own: the fence's event is recycled by whoever polls it first.
    const reaped = this.event()
    checkCu(this.libs, 'cuEventRecord', cu.cuEventRecord(reaped, this.copy))
    this.staged.push({ ev: reaped, release })
    return new EventFence(this, done)
  }

  /** Frees the staging copies of downloads that are done (in order: the copy stream runs them in order). */
  private reap(): void {
    while (this.staged.length > 0 && this.query(this.staged[0]!.ev)) this.staged.shift()!.release()
  }

  /** Queries `ev`: true once its work is done (the event goes back to the pool), false while pending. */
  query(ev: Handle): boolean {
    const rc = this.libs.cu.cuEventQuery(ev) as number
    if (rc === CUDA_ERROR_NOT_READY) return false
    this.recycle(ev)
    checkCu(this.libs, 'cuEventQuery', rc)
    this.afterPass()
    return true
  }

  /** Waits for the copy stream and releases the stream, the events and the page-locked memory. */
  dispose(): void {
    const cu = this.libs.cu
    cu.cuStreamSynchronize(this.copy)
    cu.cuStreamDestroy(this.copy)
    this.staged.length = 0 // the backend releases every device block itself
    for (const ev of this.events) cu.cuEventDestroy(ev)
    this.events.clear()
    this.idle.length = 0
    for (const [buffer, p] of this.pinned) {
      if (p.registered !== undefined) cu.cuMemHostUnregister(p.registered)
      else if (detach(buffer as ArrayBuffer)) cu.cuMemFreeHost(p.ptr)
    }
    this.pinned.clear()
    this.pinnedBytes = 0
  }

  private event(): Handle {
    const reused = this.idle.pop()
    if (reused !== undefined) return reused
    checkCap('cuda events in flight', this.events.size + 1, CUDA_LIMITS.maxEvents)
    const out: Handle[] = [null]
    checkCu(this.libs, 'cuEventCreate', this.libs.cu.cuEventCreate(out, CU_EVENT_DISABLE_TIMING))
    this.events.add(out[0])
    return out[0]
  }

  private recycle(ev: Handle): void {
    if (this.events.has(ev)) this.idle.push(ev)
  }
}

/** A fence on one event: queried until it passes, then answered from memory. */
class EventFence implements Fence {
  private readonly owner: Transfers
  private ev: Handle | undefined

  constructor(owner: Transfers, ev: Handle) {
    this.owner = owner
    this.ev = ev
  }

  passed(): boolean {
    if (this.ev === undefined) return true
    const ev = this.ev
    // Cleared first: a device error raised by the query is reported once, not on every poll.
    this.ev = undefined
    if (this.owner.query(ev)) return true
    this.ev = ev
    return false
  }

  async wait(options: { signal?: AbortSignal } = {}): Promise<void> {
    for (let polls = 0; !this.passed(); polls++) {
      if (options.signal?.aborted === true) throw new AbortError('fence wait aborted')
      await (polls < FAST_POLLS ? immediate() : pause(1))
    }
  }
}

/** Detaches `buffer` from JavaScript (its views read as empty); false where the runtime refuses. */
function detach(buffer: ArrayBuffer): boolean {
  try {
    ;(buffer as ArrayBuffer & { transfer: (n: number) => ArrayBuffer }).transfer(0)
    return buffer.byteLength === 0
  } catch {
    return false
  }
}
