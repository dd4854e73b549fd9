import { checkCap } from '../../core/index.ts'
import { TENSOR_DTYPE_BYTES, type Tensor, type TensorDType } from '../backend.ts'
import { fail } from '../validate.ts'
import { NCCL_UNIQUE_ID_BYTES, NcclDataType, NcclRedOp } from './nccl-ffi.ts'
import { NCCL_LIMITS } from './nccl-limits.ts'

/**
 * Checks made before any NCCL call: NCCL validates too, but a bad argument found there costs
 * the communicator (it reports through the async error, and we abort on those), while one found
 * here throws InvalidArgumentError and leaves the communicator usable.
 */

/** The reductions NCCL builds in (`avg` divides the sum by the rank count, in the tensor's dtype). */
export type NcclReduceOp = keyof typeof NcclRedOp

const DTYPES: Readonly<Record<TensorDType, number>> = Object.freeze({
  f32: NcclDataType.float32,
  bf16: NcclDataType.bfloat16,
  i32: NcclDataType.int32,
  u8: NcclDataType.uint8
})

/** The `ncclDataType_t` of a tensor dtype. */
export function ncclDataType(op: string, name: string, dtype: TensorDType): number {
  const v = Object.hasOwn(DTYPES, dtype) ? DTYPES[dtype] : undefined
  if (v === undefined) fail(op, `${name} has dtype ${String(dtype)}, which NCCL collectives here do not take (f32, bf16, i32, u8)`)
  return v
}

/** The `ncclRedOp_t` of a reduction name (default sum). */
export function ncclRedOp(op: string, reduce: NcclReduceOp | undefined): number {
  const name = reduce ?? 'sum'
  if (typeof name !== 'string' || !Object.hasOwn(NcclRedOp, name)) fail(op, `unknown reduction ${String(name)} (sum, prod, max, min, avg)`)
  return NcclRedOp[name]
}

/** A unique id as NCCL wrote it: exactly 128 bytes. */
export function checkUniqueId(op: string, id: Uint8Array): void {
  if (!(id instanceof Uint8Array)) fail(op, 'id must be a Uint8Array')
  if (id.byteLength !== NCCL_UNIQUE_ID_BYTES) fail(op, `id must be ${NCCL_UNIQUE_ID_BYTES} bytes (ncclUniqueId), got ${id.byteLength}`)
}

/** 1 <= nranks <= NCCL_LIMITS.maxRanks (else LimitExceededError) and 0 <= rank < nranks. */
export function checkRanks(op: string, nranks: number, rank: number): void {
  if (!Number.isSafeInteger(nranks) || nranks < 1) fail(op, `nranks must be an integer >= 1, got ${nranks}`)
  checkCap('nccl communicator ranks', nranks, NCCL_LIMITS.maxRanks)
  if (!Number.isSafeInteger(rank) || rank < 0 || rank >= nranks) fail(op, `rank must be an integer in [0, ${nranks}), got ${rank}`)
}

/** A timeout in ms: a positive integer up to NCCL_LIMITS.maxTimeoutMs, `fallback` when absent. */
export function timeoutMs(op: string, v: number | undefined, fallback: number): number {
  if (v === undefined) return fallback
  if (!Number.isSafeInteger(v) || v < 1 || v > NCCL_LIMITS.maxTimeoutMs) fail(op, `timeoutMs must be an integer in [1, ${NCCL_LIMITS.maxTimeoutMs}], got ${v}`)
  return v
}

/** Where a collective reads and writes, and what it tells NCCL. */
export interface CollectivePlan {
  send: number
  recv: number
  /** The count NCCL takes: all elements (all-reduce, broadcast), the recv (reduce-scatter) or send (all-gather) chunk. */
  count: number
  dtype: number
}

/** Resolves a tensor to its device address (the device port checks that it is live and ours). */
export type AddressOf = (op: string, name: string, t: Tensor) => number

/** How the two buffers of a collective relate in length. */
export type CollectiveShape = 'same' | 'scatter' | 'gather'

/**
 * Validates `send` → `recv` for a collective over `nranks` ranks, where this rank is `rank`:
 * equal dtypes, lengths that fit the shape, and buffers that are either disjoint or NCCL's
 * in-place form (same address for all-reduce/broadcast; recv = send + rank·chunk for
 * reduce-scatter; send = recv + rank·chunk for all-gather). Any other overlap is rejected:
 * NCCL's result would be undefined.
 */
export function planCollective(
  op: string,
  shape: CollectiveShape,
  addressOf: AddressOf,
  send: Tensor,
  recv: Tensor,
  nranks: number,
  rank: number
): CollectivePlan {
  const dtype = ncclDataType(op, 'send', send.dtype)
  if (recv.dtype !== send.dtype) fail(op, `recv must be ${send.dtype} like send, got ${recv.dtype}`)
  const count = chunkCount(op, shape, send.length, recv.length, nranks)
  const s = addressOf(op, 'send', send)
  const r = addressOf(op, 'recv', recv)
  const bytes = TENSOR_DTYPE_BYTES[send.dtype]
  if (count > 0) checkOverlap(op, shape, { at: s, bytes: send.length * bytes }, { at: r, bytes: recv.length * bytes }, rank * count * bytes)
  return { send: s, recv: r, count, dtype }
}

function chunkCount(op: string, shape: CollectiveShape, sendLen: number, recvLen: number, nranks: number): number {
  if (shape === 'same') {
    if (recvLen !== sendLen) fail(op, `recv must have ${sendLen} elements like send, got ${recvLen}`)
    return sendLen
  }
  const [whole, part, wholeName] = shape === 'scatter' ? [sendLen, recvLen, 'send'] : [recvLen, sendLen, 'recv']
  if (whole !== part * nranks) fail(op, `${wholeName} must have nranks (${nranks}) × ${part} = ${part * nranks} elements, got ${whole}`)
  return part
}

interface Span {
  at: number
  bytes: number
}

function checkOverlap(op: string, shape: CollectiveShape, send: Span, recv: Span, rankOffset: number): void {
  if (send.at + send.bytes <= recv.at || recv.at + recv.bytes <= send.at) return
  const inPlace = shape === 'same' ? send.at === recv.at : shape === 'scatter' ? recv.at === send.at + rankOffset : send.at === recv.at + rankOffset
  if (!inPlace) fail(op, "send and recv overlap other than in NCCL's in-place form")
}
