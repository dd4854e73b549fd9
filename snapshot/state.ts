import { checkCap, InvalidArgumentError } from '../core/index.ts'
import { checksum64 } from '../codec/index.ts'
import { snapshotError, SnapshotErrorCode } from './errors.ts'
import { SNAPSHOT_LIMITS } from './limits.ts'
import { ADAM8_BLOCK, moments8Of } from '../gpu/index.ts'

/**
 * One rank's training state: what a snapshot captures and a recovery returns. `weights`,
 * `adamM` and `adamV` are the rank's shard of the flat f32 master buffer and of the optimizer's
 * moments (same length; Lion keeps one moment: `adamV` is empty; the 8-bit optimizers keep their
 * moments in `adam8` and both are empty); `rng` is opaque to this layer
 * (e.g. the bytes of core's `Rng.state()`).
 */
export interface RankState {
  rank: number
  worldSize: number
  /** View epoch the state was taken under. */
  epoch: number
  /** The committed step this state is the result of (also the snapshot's version). */
  step: number
  /** Position in the data stream (samples or batches consumed; the trainer's unit). */
  dataCursor: number
  weights: Float32Array
  adamM: Float32Array
  adamV: Float32Array
  rng: Uint8Array
  /**
   * The optimizer whose state this is: absent for AdamW (m and v), 'lion' for Lion (m only,
   * `adamV` empty), 'adamw8bit' for 8-bit AdamW (`adam8`; `adamM` and `adamV` empty), 'zo'
   * for zeroth-order training (`--zo`: the weights only; `adamM` and `adamV` empty), 'lion8bit'
   * for 8-bit Lion (`adam8` with m alone; `adamM` and `adamV` empty).
   */
  optimizer?: 'lion' | 'adamw8bit' | 'zo' | 'lion8bit'
  /** The 8-bit optimizers' moments (gpu/adam8.ts): present exactly when `optimizer` is 'adamw8bit' or 'lion8bit'. */
  adam8?: Adam8Arrays
  /**
   * The DiLoCo tier's state of this shard (node/train/outer.ts), when the run has one: the outer
   * weights, the outer Nesterov momentum, the quantization residual (error feedback) and the
   * inner weights as they were when the fragments now in flight were sent. Same length as
   * `weights`.
   */
  outer?: OuterArrays
  /**
   * The run this state belongs to: a digest of the run id, the model shape, the seed and the
   * training settings (node/train/config.ts `runIdentity`), RUN_IDENTITY_BYTES long. A state
   * of another run with the same shapes is refused by whoever checks it (resume, export).
   */
  identity?: Uint8Array
  /**
   * The launch of the run this state belongs to: RUN_NONCE_BYTES random bytes the first roster
   * agreed on (node/train/settings.ts) and every later roster and `--resume` keeps. Two launches
   * with the same run id and settings (another `--data`, say) have different nonces, so their
   * files are never mixed.
   */
  nonce?: Uint8Array
}

/** Bytes of a run identity in a serialized state. */
export const RUN_IDENTITY_BYTES = 32
/** Bytes of a run nonce in a serialized state. */
export const RUN_NONCE_BYTES = 16

/** Whether two run nonces name the same launch. */
export function sameLaunch(a: Uint8Array, b: Uint8Array): boolean {
  return Buffer.from(a.buffer, a.byteOffset, a.byteLength).equals(Buffer.from(b.buffer, b.byteOffset, b.byteLength))
}

/** A run nonce as messages name a launch: its first 4 bytes in hex. */
export function launchName(nonce: Uint8Array): string {
  return Buffer.from(nonce.buffer, nonce.byteOffset, Math.min(4, nonce.byteLength)).toString('hex')
}

/** The four f32 buffers of the DiLoCo tier's state, each as long as the shard. */
export interface OuterArrays {
  weights: Float32Array
  momentum: Float32Array
  residual: Float32Array
  sentInner: Float32Array
}

/**
 * An 8-bit optimizer's moments of a shard of n elements (gpu/adam8.ts): u8 codes of m (n) and,
 * for 8-bit AdamW, of v (n; 8-bit Lion: empty), and the f32 absmaxes of their blocks, one per
 * moment and block (AdamW: pairs, m's then v's), `scales.length / k` blocks for k moments. A
 * shard whose optimizer runs per segment has a block more per segment boundary than
 * ceil(n / block).
 */
export interface Adam8Arrays {
  m: Uint8Array
  v: Uint8Array
  scales: Float32Array
}

/** Flag bit 0 of a serialized state: the four outer buffers follow adam v. */
const FLAG_OUTER = 1
/** Flag bit 1: the run identity (RUN_IDENTITY_BYTES) follows the rng bytes. */
const FLAG_IDENTITY = 2
/** Flag bit 2: the run nonce (RUN_NONCE_BYTES) follows (the identity, or the rng bytes). */
const FLAG_NONCE = 4
const OUTER_KEYS = ['weights', 'momentum', 'residual', 'sentInner'] as const

/**
 * The optimizer byte of a serialized state (offset 6): 0 AdamW (m and v follow the weights),
 * 1 Lion (m only), 2 8-bit AdamW (scales and codes follow the weights), 3 zeroth-order (nothing),
 * 4 8-bit Lion (scales and m's codes follow the weights).
 */
const OPTIMIZER_TAGS = [undefined, 'lion', 'adamw8bit', 'zo', 'lion8bit'] as const

/** f32 moment vectors a state of `optimizer` carries (the 8-bit optimizers: none, see gpu/adam8.ts MOMENTS8). */
const momentsOf = (optimizer: RankState['optimizer']): number => (optimizer === 'lion' ? 1 : optimizer === undefined ? 2 : 0)

/** Bytes of `k` 8-bit moments of `n` elements in `blocks` blocks: the absmaxes (k a block), the codes, zero-padded to 8. */
const adam8Bytes = (n: number, blocks: number, k: number): number => 4 * k * blocks + pad8(k * n)

/** Most blocks an 8-bit state of `n` elements may have: a block needs at least one element. */
const adam8BlocksOk = (n: number, blocks: number): boolean => blocks <= n && blocks >= Math.ceil(n / ADAM8_BLOCK)

/**
 * Serialized layout (little-endian):
 *
 *    0 u32 magic 'ZMSS'   4 u8 version (1)   5 u8 flags (bit 0: outer state)
 *    6 u8 optimizer (0 AdamW, 1 Lion, 2 8-bit AdamW, 3 zeroth-order: weights only, 4 8-bit Lion)
 *    7 u8 reserved (0)
 *    8 u32 rank          12 u32 world size
 *   16 u64 epoch         24 u64 step
 *   32 u64 data cursor   40 u64 elements n (of each of weights, m, v)
 *   48 u32 rng bytes     52 u32 8-bit optimizers: blocks b (else 0)
 *   56 u64 checksum: xxh64 of the whole serialization with these 8 bytes zero
 *   64 rng bytes, zero-padded to a multiple of 8
 *      with flag bit 1: the run identity (32 bytes)
 *      with flag bit 2: the run nonce (16 bytes)
 *      weights (n f32), m (n f32; AdamW and Lion), v (n f32; AdamW only)
 *      8-bit AdamW: scales (2b f32: m's and v's absmax of each block), m codes (n u8),
 *      v codes (n u8), zeros to a multiple of 8
 *      8-bit Lion: scales (b f32: m's absmax of each block), m codes (n u8), zeros to a
 *      multiple of 8
 *      with flag bit 0: outer weights, outer momentum, residual, sent inner (n f32 each)
 */
export const STATE_MAGIC = 0x53534d5a
export const STATE_VERSION = 1
export const STATE_HEADER_BYTES = 64

const pad8 = (n: number): number => (n + 7) & ~7

/** Bytes `state` serializes to. Checks the caps and that the three buffers agree. */
export function stateBytes(state: RankState): number {
  const n = state.weights.length
  const k = momentsOf(state.optimizer)
  if (state.adamM.length !== (k >= 1 ? n : 0) || state.adamV.length !== (k === 2 ? n : 0)) {
    const want = k === 2 ? 'm and v that length' : k === 1 ? 'm that length and v none (Lion)' : 'm and v none (8-bit optimizers, zeroth-order)'
    throw new InvalidArgumentError(`the state of ${n} weights must have ${want}, got ${state.adamM.length}, ${state.adamV.length}`)
  }
  const a8 = state.adam8
  const k8 = moments8Of(state.optimizer)
  if ((a8 !== undefined) !== k8 > 0) throw new InvalidArgumentError('8-bit moments (adam8) go with optimizer adamw8bit or lion8bit, and only with them')
  if (
    a8 !== undefined &&
    (a8.m.length !== n || a8.v.length !== (k8 === 2 ? n : 0) || a8.scales.length % k8 !== 0 || !adam8BlocksOk(n, a8.scales.length / k8))
  ) {
    const want =
      k8 === 2
        ? `${n} codes each and ${Math.ceil(n / ADAM8_BLOCK)}..${n} absmax pairs`
        : `${n} codes of m, none of v and ${Math.ceil(n / ADAM8_BLOCK)}..${n} absmaxes`
    throw new InvalidArgumentError(`8-bit moments of ${n} weights need ${want}, got ${a8.m.length}, ${a8.v.length}, ${a8.scales.length / k8}`)
  }
  const outer = state.outer
  if (outer !== undefined && OUTER_KEYS.some(k => outer[k].length !== n)) {
    throw new InvalidArgumentError(`the outer state's buffers must be as long as the weights (${n}), got ${OUTER_KEYS.map(k => outer[k].length).join(', ')}`)
  }
  for (const key of ['rank', 'worldSize', 'epoch', 'step', 'dataCursor'] as const) {
    const v = state[key]
    if (!Number.isSafeInteger(v) || v < 0) throw new InvalidArgumentError(`state.${key} must be a non-negative safe integer, got ${v}`)
  }
  if (state.worldSize < 1 || state.rank >= state.worldSize || state.worldSize > 0xffffffff) {
    throw new InvalidArgumentError(`rank ${state.rank} is not in a world of ${state.worldSize}`)
  }
  checkCap('snapshot rng bytes', state.rng.length, SNAPSHOT_LIMITS.maxRngBytes)
  if (state.identity !== undefined && state.identity.length !== RUN_IDENTITY_BYTES)
    throw new InvalidArgumentError(`a run identity is ${RUN_IDENTITY_BYTES} bytes, got ${state.identity.length}`)
  if (state.nonce !== undefined && state.nonce.length !== RUN_NONCE_BYTES)
    throw new InvalidArgumentError(`a run nonce is ${RUN_NONCE_BYTES} bytes, got ${state.nonce.length}`)
  const total =
    STATE_HEADER_BYTES +
    pad8(state.rng.length) +
    (state.identity === undefined ? 0 : RUN_IDENTITY_BYTES) +
    (state.nonce === undefined ? 0 : RUN_NONCE_BYTES) +
    (4 + 4 * k + (outer === undefined ? 0 : 16)) * n +
    (a8 === undefined ? 0 : adam8Bytes(n, a8.scales.length / k8, k8))
  checkCap('snapshot state bytes', total, SNAPSHOT_LIMITS.maxStateBytes)
  return total
}

/**
 * Serializes `state` into `into` when it has room (else a new buffer) without the checksum:
 * the synchronous copy a capture makes. {@link sealState} adds the checksum later, off the
 * trainer's path. Returns the exact-length view.
 */
export function writeState(state: RankState, into?: Uint8Array): Uint8Array {
  const total = stateBytes(state)
  const out = into !== undefined && into.length >= total ? into.subarray(0, total) : new Uint8Array(total)
  const v = new DataView(out.buffer, out.byteOffset, STATE_HEADER_BYTES)
  const n = state.weights.length
  v.setUint32(0, STATE_MAGIC, true)
  v.setUint8(4, STATE_VERSION)
  v.setUint8(
    5,
    (state.outer === undefined ? 0 : FLAG_OUTER) | (state.identity === undefined ? 0 : FLAG_IDENTITY) | (state.nonce === undefined ? 0 : FLAG_NONCE)
  )
  v.setUint8(6, OPTIMIZER_TAGS.indexOf(state.optimizer))
  v.setUint8(7, 0)
  v.setUint32(8, state.rank, true)
  v.setUint32(12, state.worldSize, true)
  v.setBigUint64(16, BigInt(state.epoch), true)
  v.setBigUint64(24, BigInt(state.step), true)
  v.setBigUint64(32, BigInt(state.dataCursor), true)
  v.setBigUint64(40, BigInt(n), true)
  v.setUint32(48, state.rng.length, true)
  const k8 = moments8Of(state.optimizer)
  v.setUint32(52, state.adam8 === undefined ? 0 : state.adam8.scales.length / k8, true)
  v.setBigUint64(56, 0n, true)
  let o = STATE_HEADER_BYTES
  out.set(state.rng, o)
  out.fill(0, o + state.rng.length, o + pad8(state.rng.length))
  o += pad8(state.rng.length)
  if (state.identity !== undefined) {
    out.set(state.identity, o)
    o += RUN_IDENTITY_BYTES
  }
  if (state.nonce !== undefined) {
    out.set(state.nonce, o)
    o += RUN_NONCE_BYTES
  }
  const outer = state.outer === undefined ? [] : OUTER_KEYS.map(k => state.outer![k])
  const a8 = state.adam8 === undefined ? [] : [state.adam8.scales, state.adam8.m, state.adam8.v]
  for (const arr of [state.weights, state.adamM, state.adamV, ...a8]) {
    out.set(new Uint8Array(arr.buffer, arr.byteOffset, arr.byteLength), o)
    o += arr.byteLength
  }
  if (state.adam8 !== undefined) {
    const pad = pad8(k8 * n) - k8 * n
    out.fill(0, o, o + pad)
    o += pad
  }
  for (const arr of outer) {
    out.set(new Uint8Array(arr.buffer, arr.byteOffset, arr.byteLength), o)
    o += arr.byteLength
  }
  return out
}

function wholeChecksum(bytes: Uint8Array): bigint {
  const v = new DataView(bytes.buffer, bytes.byteOffset, STATE_HEADER_BYTES)
  const saved = v.getBigUint64(56, true)
  v.setBigUint64(56, 0n, true)
  const sum = checksum64(bytes)
  v.setBigUint64(56, saved, true)
  return sum
}

/** Writes the whole-state checksum into a serialization from {@link writeState}; returns it. */
export function sealState(bytes: Uint8Array): bigint {
  const sum = wholeChecksum(bytes)
  new DataView(bytes.buffer, bytes.byteOffset, STATE_HEADER_BYTES).setBigUint64(56, sum, true)
  return sum
}

/** Serializes and seals `state` into a new buffer. */
export function encodeState(state: RankState): Uint8Array {
  const out = writeState(state)
  sealState(out)
  return out
}

/** Header fields of a serialized state, checked against the buffer length (no checksum pass). */
export interface StateHeader {
  rank: number
  worldSize: number
  epoch: number
  step: number
  dataCursor: number
  elements: number
  rngBytes: number
  /** The outer state's four buffers follow adam v (flag bit 0). */
  outer: boolean
  /** The run identity follows the rng bytes (flag bit 1). */
  identity: boolean
  /** The run nonce follows (flag bit 2). */
  nonce: boolean
  /** The optimizer whose moments follow the weights (byte 6). */
  optimizer: RankState['optimizer']
  /** The 8-bit optimizers: blocks of their moments (offset 52); 0 for the others. */
  adam8Blocks: number
  checksum: bigint
}

/**
 * Reads and checks the header of a serialized state: magic, version, reserved fields, and that
 * the lengths add up to exactly `bytes.length`. Throws STATE_MALFORMED.
 */
export function readStateHeader(bytes: Uint8Array): StateHeader {
  const bad = (why: string): never => {
    throw snapshotError(SnapshotErrorCode.STATE_MALFORMED, `bad snapshot state: ${why}`)
  }
  if (bytes.length < STATE_HEADER_BYTES) bad(`${bytes.length} bytes is shorter than the header`)
  const v = new DataView(bytes.buffer, bytes.byteOffset, STATE_HEADER_BYTES)
  if (v.getUint32(0, true) !== STATE_MAGIC) bad('bad magic')
  if (v.getUint8(4) !== STATE_VERSION) bad(`unsupported version ${v.getUint8(4)}`)
  if (v.getUint8(6) >= OPTIMIZER_TAGS.length) bad(`unknown optimizer ${v.getUint8(6)}`)
  const optimizer = OPTIMIZER_TAGS[v.getUint8(6)]
  const k8 = moments8Of(optimizer)
  if ((v.getUint8(5) & ~(FLAG_OUTER | FLAG_IDENTITY | FLAG_NONCE)) !== 0 || v.getUint8(7) !== 0 || (k8 === 0 && v.getUint32(52, true) !== 0))
    bad('reserved fields are not zero')
  const big = (o: number): number => {
    const x = v.getBigUint64(o, true)
    if (x > BigInt(Number.MAX_SAFE_INTEGER)) bad(`field at ${o} is over 2^53`)
    return Number(x)
  }
  const h: StateHeader = {
    rank: v.getUint32(8, true),
    worldSize: v.getUint32(12, true),
    epoch: big(16),
    step: big(24),
    dataCursor: big(32),
    elements: big(40),
    rngBytes: v.getUint32(48, true),
    outer: (v.getUint8(5) & FLAG_OUTER) !== 0,
    identity: (v.getUint8(5) & FLAG_IDENTITY) !== 0,
    nonce: (v.getUint8(5) & FLAG_NONCE) !== 0,
    optimizer,
    adam8Blocks: k8 > 0 ? v.getUint32(52, true) : 0,
    checksum: v.getBigUint64(56, true)
  }
  if (h.worldSize < 1 || h.rank >= h.worldSize) bad(`rank ${h.rank} is not in a world of ${h.worldSize}`)
  if (h.rngBytes > SNAPSHOT_LIMITS.maxRngBytes) bad(`rng of ${h.rngBytes} bytes is over the cap of ${SNAPSHOT_LIMITS.maxRngBytes}`)
  if (k8 > 0 && !adam8BlocksOk(h.elements, h.adam8Blocks)) bad(`${h.adam8Blocks} blocks of 8-bit moments for ${h.elements} elements`)
  const want =
    STATE_HEADER_BYTES +
    pad8(h.rngBytes) +
    (h.identity ? RUN_IDENTITY_BYTES : 0) +
    (h.nonce ? RUN_NONCE_BYTES : 0) +
    (4 + 4 * momentsOf(h.optimizer) + (h.outer ? 16 : 0)) * h.elements +
    (k8 > 0 ? adam8Bytes(h.elements, h.adam8Blocks, k8) : 0)
  if (want !== bytes.length) bad(`header describes ${want} bytes, got ${bytes.length}`)
  return h
}

/** Checks the whole-state checksum; throws STATE_CHECKSUM. Returns the header. */
export function verifyState(bytes: Uint8Array): StateHeader {
  const h = readStateHeader(bytes)
  if (wholeChecksum(bytes) !== h.checksum)
    throw snapshotError(SnapshotErrorCode.STATE_CHECKSUM, 'snapshot state checksum mismatch', { step: h.step, rank: h.rank })
  return h
}

/**
 * Verifies and decodes a serialized state. The f32 buffers are views into `bytes` when it is
 * 4-byte aligned, else copies. Throws STATE_MALFORMED / STATE_CHECKSUM.
 */
export function decodeState(bytes: Uint8Array): RankState {
  const h = verifyState(bytes)
  let o = STATE_HEADER_BYTES
  const rng = bytes.slice(o, o + h.rngBytes)
  o += pad8(h.rngBytes)
  const identity = h.identity ? bytes.slice(o, o + RUN_IDENTITY_BYTES) : undefined
  if (identity !== undefined) o += RUN_IDENTITY_BYTES
  const nonce = h.nonce ? bytes.slice(o, o + RUN_NONCE_BYTES) : undefined
  if (nonce !== undefined) o += RUN_NONCE_BYTES
  const f32 = (at: number, len = h.elements): Float32Array => {
    const off = bytes.byteOffset + at
    return off % 4 === 0 ? new Float32Array(bytes.buffer, off, len) : new Float32Array(bytes.slice(at, at + 4 * len).buffer)
  }
  const n4 = 4 * h.elements
  const k = momentsOf(h.optimizer)
  const st: RankState = {
    rank: h.rank,
    worldSize: h.worldSize,
    epoch: h.epoch,
    step: h.step,
    dataCursor: h.dataCursor,
    rng,
    weights: f32(o),
    adamM: k >= 1 ? f32(o + n4) : new Float32Array(0),
    adamV: k === 2 ? f32(o + 2 * n4) : new Float32Array(0)
  }
  if (h.optimizer !== undefined) st.optimizer = h.optimizer
  let at = o + (1 + k) * n4
  const k8 = moments8Of(h.optimizer)
  if (k8 > 0) {
    const b = h.adam8Blocks
    const codes = at + 4 * k8 * b
    const v = k8 === 2 ? bytes.subarray(codes + h.elements, codes + 2 * h.elements) : new Uint8Array(0)
    st.adam8 = { scales: f32(at, k8 * b), m: bytes.subarray(codes, codes + h.elements), v }
    at += adam8Bytes(h.elements, b, k8)
  }
  if (h.outer) st.outer = { weights: f32(at), momentum: f32(at + n4), residual: f32(at + 2 * n4), sentInner: f32(at + 3 * n4) }
  if (identity !== undefined) st.identity = identity
  if (nonce !== undefined) st.nonce = nonce
  return st
}
