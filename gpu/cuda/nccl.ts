/**
 * NCCL for the intra-host tier: the ranks of one host, one GPU each, reduce and gather among
 * themselves through NCCL (NVLink / PCIe peer copies) instead of the mesh's TCP ring.
 *
 * Lifecycle (the caller's, e.g. the trainer's): one communicator per view epoch. On a new view,
 * the host's lowest rank calls {@link Nccl.createUniqueId} and shares the 128 bytes with the
 * host's other ranks over the mesh; every rank calls {@link Nccl.initComm} with the same id, the
 * host's rank count and its own rank; collectives follow. On a view change, `abort()` the
 * communicator (a departed peer would hang any collective) and build the next one; `close()` is
 * the graceful end when the view is left cleanly. An id is single-use.
 *
 * Importing this module loads nothing: {@link loadNccl} opens libnccl on demand and reports
 * where it cannot, and communicators load nothing beyond the CUDA backend they share.
 */
import { AbortError, type Clock, RealClock } from '../../core/index.ts'
import { BackendUnavailableError } from '../errors.ts'
import type { CudaBackend } from './backend.ts'
import type { Handle } from './ffi.ts'
import { checkRanks, checkUniqueId, timeoutMs } from './nccl-args.ts'
import { NcclComm } from './nccl-comm.ts'
import { cudaNcclDevice, type NcclDevice } from './nccl-device.ts'
import { NcclError } from './nccl-errors.ts'
import {
  encodeNcclConfig,
  NCCL_LIBRARY_CANDIDATES,
  NCCL_MIN_VERSION,
  NCCL_UNIQUE_ID_BYTES,
  type NcclApi,
  NcclResult,
  ncclVersionString,
  openNccl
} from './nccl-ffi.ts'
import { NCCL_LIMITS } from './nccl-limits.ts'
import { waitAtMost } from './nccl-poll.ts'

export { NcclComm, type NcclCommState, type NcclOpOptions, type NcclReduceOptions, type NcclBroadcastOptions } from './nccl-comm.ts'
export type { NcclReduceOp } from './nccl-args.ts'
export type { NcclDevice } from './nccl-device.ts'
export { NcclError, NcclTimeoutError, NcclCommClosedError } from './nccl-errors.ts'
export { NCCL_UNIQUE_ID_BYTES, type NcclApi } from './nccl-ffi.ts'
export { NCCL_LIMITS } from './nccl-limits.ts'

export interface NcclInitOptions {
  /** The CUDA backend of this rank's GPU (its context and stream carry the collectives); tests may pass an {@link NcclDevice}. */
  backend: CudaBackend | NcclDevice
  /** The id from {@link Nccl.createUniqueId} on one rank, the same bytes on every rank. */
  id: Uint8Array
  /** Ranks in the communicator (the host's GPUs taking part), at most NCCL_LIMITS.maxRanks. */
  nranks: number
  /** This process's rank, in [0, nranks). */
  rank: number
  /** Abandons the join: the half-built communicator is aborted and the promise rejects with AbortError. */
  signal?: AbortSignal | undefined
  /** How long to wait for every rank (default NCCL_LIMITS.initTimeoutMs); past it: abort and NcclTimeoutError. */
  timeoutMs?: number | undefined
}

/** The loaded library. */
export interface Nccl {
  /** "major.minor.patch" of the libnccl in use. */
  readonly version: string
  /** ncclGetVersion's code. */
  readonly versionCode: number
  /** A fresh ncclUniqueId (128 bytes) for one communicator; this process then serves its bootstrap. */
  createUniqueId(): Uint8Array
  /** Joins a communicator; resolves once all `nranks` ranks joined. */
  initComm(o: NcclInitOptions): Promise<NcclComm>
}

/** {@link loadNccl}'s answer: the library, or why it is not available here. */
export type NcclLoad = { nccl: Nccl; reason?: undefined } | { nccl: undefined; reason: string }

export interface NcclLoadOptions {
  /** Library names or paths tried in order (default: the soname, then /usr/lib/x86_64-linux-gnu). */
  libraryPaths?: readonly string[]
  /** Time source for timeouts and polling (default RealClock). */
  clock?: Clock
}

// One binding per list of paths; a failure is remembered as its reason.
const opened = new Map<string, NcclApi | string>()

/**
 * Opens libnccl. Never throws: where koffi, the library or a recent enough version
 * (2.14+) is missing, returns `{ nccl: undefined, reason }`.
 */
export function loadNccl(o: NcclLoadOptions = {}): NcclLoad {
  const paths = o.libraryPaths ?? NCCL_LIBRARY_CANDIDATES
  const key = paths.join('\n')
  let api = opened.get(key)
  if (api === undefined) {
    try {
      api = openNccl(paths)
    } catch (err) {
      api = (err as Error).message
    }
    opened.set(key, api)
  }
  if (typeof api === 'string') return { nccl: undefined, reason: api }
  try {
    return { nccl: createNccl(api, { clock: o.clock ?? new RealClock() }) }
  } catch (err) {
    return { nccl: undefined, reason: (err as Error).message }
  }
}

/** An {@link Nccl} over any binding (the koffi one, or a fake in host tests); checks the version. */
export function createNccl(api: NcclApi, o: { clock: Clock }): Nccl {
  const out = [0]
  const rc = api.getVersion(out)
  if (rc !== NcclResult.success) throw new BackendUnavailableError(`ncclGetVersion failed: ${api.getErrorString(rc)} (${rc})`)
  const versionCode = out[0]!
  const version = ncclVersionString(versionCode)
  if (versionCode < NCCL_MIN_VERSION) {
    throw new BackendUnavailableError(`NCCL ${version} is too old: non-blocking communicators need 2.14 or later`, { version })
  }
  return {
    version,
    versionCode,
    createUniqueId: () => uniqueId(api),
    initComm: init => initComm(api, o.clock, init)
  }
}

function uniqueId(api: NcclApi): Uint8Array {
  const id = new Uint8Array(NCCL_UNIQUE_ID_BYTES)
  const rc = api.getUniqueId(id)
  if (rc !== NcclResult.success) throw new NcclError('ncclGetUniqueId', rc, api.getErrorString(rc))
  return id
}

async function initComm(api: NcclApi, clock: Clock, o: NcclInitOptions): Promise<NcclComm> {
  const op = 'ncclCommInitRank'
  checkUniqueId(op, o.id)
  checkRanks(op, o.nranks, o.rank)
  const ms = timeoutMs(op, o.timeoutMs, NCCL_LIMITS.initTimeoutMs)
  if (o.signal?.aborted === true) throw new AbortError(`${op} aborted`, { op })
  const device = 'streamHandles' in o.backend ? cudaNcclDevice(o.backend) : o.backend
  const deadline = clock.monotonic() + ms
  const handle = startInit(api, clock, device, o)
  return await NcclComm.join({ api, device, clock }, handle, o.nranks, o.rank, { signal: o.signal, deadline, timeoutMs: ms })
}

/**
 * ncclCommInitRankConfig in non-blocking mode: it returns at once (ncclInProgress) with a handle
 * while NCCL's own thread waits for the other ranks. A blocking init could not be interrupted
 * (there is no handle to abort until it returns) and would hold a thread for as long as a peer
 * is missing. Called on this thread, where the backend's context is current: NCCL takes its
 * device from the calling thread.
 */
function startInit(api: NcclApi, clock: Clock, device: NcclDevice, o: NcclInitOptions): Handle {
  device.makeCurrent()
  const out: Handle[] = [null]
  const rc = api.commInitRankConfig(out, o.nranks, o.id, o.rank, encodeNcclConfig(false))
  const handle = out[0]
  if (rc !== NcclResult.success && rc !== NcclResult.inProgress) {
    const err = new NcclError('ncclCommInitRankConfig', rc, api.getErrorString(rc), handle == null ? '' : api.getLastError(handle))
    if (handle != null) void waitAtMost(clock, api.commAbortAsync(handle), NCCL_LIMITS.abortWaitMs).catch(() => undefined)
    throw err
  }
  if (handle == null) throw new NcclError('ncclCommInitRankConfig', NcclResult.internalError, 'NCCL returned no communicator')
  return handle
}
