import { createRequire } from 'node:module'
import { BackendUnavailableError } from '../errors.ts'
import type { Handle } from './ffi.ts'

/**
 * koffi binding of NCCL (`libnccl.so.2`). The numbers below are the ABI of NCCL's public header,
 * `src/nccl.h.in` in github.com/NVIDIA/nccl (read at commit 5067397c, NCCL 2.30): enum values,
 * the 128-byte `ncclUniqueId` passed by value, and the versioned `ncclConfig_t`. Nothing is
 * loaded at import time: {@link openNccl} opens the library on demand.
 */

/** `NCCL_UNIQUE_ID_BYTES`: `typedef struct { char internal[128]; } ncclUniqueId`. */
export const NCCL_UNIQUE_ID_BYTES = 128

/** `ncclResult_t`. */
export const NcclResult = Object.freeze({
  success: 0,
  unhandledCudaError: 1,
  systemError: 2,
  internalError: 3,
  invalidArgument: 4,
  invalidUsage: 5,
  remoteError: 6,
  inProgress: 7,
  timeout: 8
})

/** Names of `ncclResult_t` values, indexed by value (for errors when ncclGetErrorString fails). */
export const NCCL_RESULT_NAMES: readonly string[] = Object.freeze([
  'ncclSuccess',
  'ncclUnhandledCudaError',
  'ncclSystemError',
  'ncclInternalError',
  'ncclInvalidArgument',
  'ncclInvalidUsage',
  'ncclRemoteError',
  'ncclInProgress',
  'ncclTimeout'
])

/** `ncclDataType_t` (the subset our tensors use; ncclBfloat16 exists since NCCL 2.10). */
export const NcclDataType = Object.freeze({ int32: 2, uint8: 1, float32: 7, bfloat16: 9 })

/** `ncclRedOp_t` built-in operations. */
export const NcclRedOp = Object.freeze({ sum: 0, prod: 1, max: 2, min: 3, avg: 4 })

/** `NCCL_VERSION(X,Y,Z)` from the header: the encoding changed after 2.8. */
export function ncclVersionCode(major: number, minor: number, patch: number): number {
  return major <= 2 && minor <= 8 ? major * 1000 + minor * 100 + patch : major * 10000 + minor * 100 + patch
}

/** Decodes a `ncclGetVersion` code (both encodings) as "major.minor.patch". */
export function ncclVersionString(code: number): string {
  if (code < 10000) return `${Math.floor(code / 1000)}.${Math.floor((code % 1000) / 100)}.${code % 100}`
  return `${Math.floor(code / 10000)}.${Math.floor((code % 10000) / 100)}.${code % 100}`
}

/**
 * Oldest NCCL we bind: ncclConfig_t (non-blocking communicators) and ncclCommFinalize appeared
 * in 2.14, and we need both (see nccl.ts on why init is non-blocking).
 */
export const NCCL_MIN_VERSION = ncclVersionCode(2, 14, 0)

/** `NCCL_API_MAGIC`: NCCL rejects a config whose magic differs. */
const NCCL_API_MAGIC = 0xcafebeef
/** `NCCL_CONFIG_UNDEF_INT` (INT_MIN): "let NCCL choose". */
const NCCL_CONFIG_UNDEF_INT = -(2 ** 31)

/**
 * The leading fields of `ncclConfig_t`, the whole struct as it was in 2.14 (`ncclConfig_v21400`):
 * `size_t size; unsigned magic; unsigned version; int blocking;` = 20 bytes, padded to 24 by the
 * size_t alignment. NCCL copies `min(size, its sizeof)` bytes over its NCCL_CONFIG_INITIALIZER
 * and resets every field newer than `version` to its default, so this short form is read the
 * same by every NCCL from 2.14 on and leaves all other attributes to NCCL.
 */
export function encodeNcclConfig(blocking: boolean): Uint8Array {
  const bytes = new Uint8Array(24)
  const v = new DataView(bytes.buffer)
  v.setBigUint64(0, BigInt(bytes.byteLength), true)
  v.setUint32(8, NCCL_API_MAGIC, true)
  v.setUint32(12, NCCL_MIN_VERSION, true)
  v.setInt32(16, blocking ? 1 : 0, true)
  v.setInt32(20, NCCL_CONFIG_UNDEF_INT, true) // padding: never read at version 2.14
  return bytes
}

/**
 * The raw NCCL calls nccl.ts uses, one per C function (the koffi binding, or a fake in host
 * tests). Each returns an `ncclResult_t`; out-parameters are one-element arrays (koffi's form).
 * `commAbortAsync` and `commDestroyAsync` run on a worker thread: both may wait for NCCL's own
 * threads, and the event loop must keep running meanwhile.
 */
export interface NcclApi {
  getVersion(out: number[]): number
  getUniqueId(out: Uint8Array): number
  commInitRankConfig(comm: Handle[], nranks: number, id: Uint8Array, rank: number, config: Uint8Array): number
  commGetAsyncError(comm: Handle, out: number[]): number
  commCount(comm: Handle, out: number[]): number
  commUserRank(comm: Handle, out: number[]): number
  commFinalize(comm: Handle): number
  commAbortAsync(comm: Handle): Promise<number>
  commDestroyAsync(comm: Handle): Promise<number>
  getErrorString(result: number): string
  getLastError(comm: Handle): string
  allReduce(send: number, recv: number, count: number, dtype: number, op: number, comm: Handle, stream: Handle): number
  reduceScatter(send: number, recv: number, recvCount: number, dtype: number, op: number, comm: Handle, stream: Handle): number
  allGather(send: number, recv: number, sendCount: number, dtype: number, comm: Handle, stream: Handle): number
  broadcast(send: number, recv: number, count: number, dtype: number, root: number, comm: Handle, stream: Handle): number
}

// eslint-disable-next-line @typescript-eslint/no-explicit-any
type Fn = ((...args: any[]) => any) & { async: (...args: any[]) => void }
interface KoffiLib {
  func: (decl: string) => Fn
}
interface Koffi {
  load: (path: string) => KoffiLib
  struct: (name: string, def: Record<string, unknown>) => unknown
  array: (type: string, len: number, hint?: string) => unknown
}

const require = createRequire(import.meta.url)

/** Names tried in order: the soname (the loader's search path), then the Debian/Ubuntu location. */
export const NCCL_LIBRARY_CANDIDATES: readonly string[] = Object.freeze(['libnccl.so.2', '/usr/lib/x86_64-linux-gnu/libnccl.so.2'])

function openLib(koffi: Koffi, names: readonly string[]): KoffiLib {
  let last = ''
  for (const n of names) {
    try {
      return koffi.load(n)
    } catch (err) {
      last = (err as Error).message.split('\n')[0]!
    }
  }
  throw new BackendUnavailableError(`cannot load NCCL (tried ${names.join(', ')}): ${last}`, { library: names[0] })
}

// koffi registers struct names process-wide; declare ours once.
let uniqueIdDeclared = false

/** A promise over koffi's callback form of an asynchronous (worker-thread) call. */
function onWorker(fn: Fn, ...args: unknown[]): Promise<number> {
  return new Promise((resolve, reject) => {
    fn.async(...args, (err: unknown, rc: number) => (err == null ? resolve(rc) : reject(err)))
  })
}

/**
 * Opens libnccl and binds the calls of {@link NcclApi}. Throws {@link BackendUnavailableError}
 * where koffi or the library is missing.
 */
export function openNccl(names: readonly string[] = NCCL_LIBRARY_CANDIDATES): NcclApi {
  let koffi: Koffi
  try {
    koffi = require('koffi') as Koffi
  } catch (err) {
    throw new BackendUnavailableError(`the koffi FFI module is not available: ${(err as Error).message}`, {}, { cause: err })
  }
  const lib = openLib(koffi, names)
  // uint8 rather than the header's char: ABI-identical, and koffi keeps uint8 arrays as raw
  // bytes (it would decode a char array as a NUL-terminated string).
  if (!uniqueIdDeclared) koffi.struct('zmNcclUniqueId', { internal: koffi.array('uint8', NCCL_UNIQUE_ID_BYTES, 'Typed') })
  uniqueIdDeclared = true
  const f = (d: string): Fn => lib.func(d)
  const initRank = f('int ncclCommInitRankConfig(_Out_ void** comm, int nranks, zmNcclUniqueId commId, int rank, void* config)')
  const abort = f('int ncclCommAbort(void* comm)')
  const destroy = f('int ncclCommDestroy(void* comm)')
  const b = {
    getVersion: f('int ncclGetVersion(_Out_ int* version)'),
    getUniqueId: f('int ncclGetUniqueId(void* uniqueId)'),
    commGetAsyncError: f('int ncclCommGetAsyncError(void* comm, _Out_ int* asyncError)'),
    commCount: f('int ncclCommCount(void* comm, _Out_ int* count)'),
    commUserRank: f('int ncclCommUserRank(void* comm, _Out_ int* rank)'),
    commFinalize: f('int ncclCommFinalize(void* comm)'),
    getErrorString: f('const char* ncclGetErrorString(int result)'),
    getLastError: f('const char* ncclGetLastError(void* comm)'),
    // Buffers are device addresses (CUdeviceptr as a number), as in ffi.ts; the stream is the
    // CUstream handle, which the runtime's cudaStream_t is.
    allReduce: f('int ncclAllReduce(uint64 sendbuff, uint64 recvbuff, size_t count, int datatype, int op, void* comm, void* stream)'),
    reduceScatter: f('int ncclReduceScatter(uint64 sendbuff, uint64 recvbuff, size_t recvcount, int datatype, int op, void* comm, void* stream)'),
    allGather: f('int ncclAllGather(uint64 sendbuff, uint64 recvbuff, size_t sendcount, int datatype, void* comm, void* stream)'),
    broadcast: f('int ncclBroadcast(uint64 sendbuff, uint64 recvbuff, size_t count, int datatype, int root, void* comm, void* stream)')
  }
  return {
    ...b,
    getUniqueId: out => b.getUniqueId(out) as number,
    commInitRankConfig: (comm, nranks, id, rank, config) => initRank(comm, nranks, { internal: id }, rank, config) as number,
    commAbortAsync: comm => onWorker(abort, comm),
    commDestroyAsync: comm => onWorker(destroy, comm),
    getErrorString: rc => String(b.getErrorString(rc) ?? ''),
    getLastError: comm => String(b.getLastError(comm) ?? '')
  }
}
