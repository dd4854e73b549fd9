import { checkCap, ProtocolError } from '../core/index.ts'
import {
  checksum64,
  decodeFragment,
  decodeStripe,
  encodeFragment,
  encodeStripe,
  fragmentSize,
  FRAGMENT_HEADER_BYTES,
  TooFewFragmentsError,
  type ErasureCoder
} from '../codec/index.ts'
import { snapshotError, SnapshotErrorCode } from './errors.ts'
import { SNAPSHOT_LIMITS } from './limits.ts'
import { readStateHeader, verifyState } from './state.ts'

/**
 * What a fragment of a snapshot is: the label every holder checks, and the body.
 *
 * A snapshot (one rank's serialized state at one step) is cut into segments of at most
 * `segmentBytes`; each segment is one codec stripe (k data + m parity ZMFG fragments).
 * Snapshot fragment i is the i-th ZMFG fragment of every segment, in segment order, and lives
 * on one holder. Label layout (little-endian):
 *
 *    0 u32 magic 'ZMSL'   4 u8 version (1)   5 u8 k   6 u8 m   7 u8 index
 *    8 u32 owner rank    12 u32 segments
 *   16 u64 epoch         24 u64 version (= step)
 *   32 u64 state bytes   40 u64 state checksum (the whole-state checksum from its header)
 *   48 u64 body bytes    56 u16 owner id bytes (L)   58 u16 reserved (0)   60 u32 segment bytes
 *   64 owner id (UTF-8, L bytes)
 * 64+L u64 label checksum (xxh64 of the bytes before it)
 */
export const LABEL_MAGIC = 0x4c534d5a
export const LABEL_VERSION = 1
/** Fixed part of a label, before the owner id. */
export const LABEL_HEAD_BYTES = 64

/** A decoded label (fields as in the layout above). */
export interface FragmentLabel {
  owner: string
  rank: number
  epoch: number
  version: number
  index: number
  k: number
  m: number
  stateBytes: number
  stateChecksum: bigint
  segments: number
  segmentBytes: number
  bodyBytes: number
}

/** One fragment as sent, held and fetched: label + one ZMFG frame per segment. */
export interface SnapshotFragment {
  label: FragmentLabel
  segments: Uint8Array[]
}

const utf8 = new TextEncoder()
const utf8d = new TextDecoder('utf-8', { fatal: true })

/** Payload bytes of each segment of a `stateBytes` state cut at `segmentBytes`. */
export function segmentSizes(stateBytes: number, segmentBytes: number): number[] {
  const count = Math.max(1, Math.ceil(stateBytes / segmentBytes))
  return Array.from({ length: count }, (_, s) => Math.min(segmentBytes, stateBytes - s * segmentBytes))
}

/** Encoded bytes (ZMFG header + fragment) of one segment of `payload` bytes under a label's k. */
function segmentFrameBytes(label: Pick<FragmentLabel, 'k'>, payload: number): number {
  return FRAGMENT_HEADER_BYTES + fragmentSize(payload, label.k)
}

/** Expected ZMFG frame size of every segment of a labelled fragment. */
export function segmentFrameSizes(label: FragmentLabel): number[] {
  return segmentSizes(label.stateBytes, label.segmentBytes).map(p => segmentFrameBytes(label, p))
}

/** Encodes a label (layout above), its checksum included. */
export function encodeLabel(l: FragmentLabel): Uint8Array {
  const id = utf8.encode(l.owner)
  checkCap('snapshot owner id bytes', id.length, SNAPSHOT_LIMITS.maxPeerIdBytes)
  const out = new Uint8Array(LABEL_HEAD_BYTES + id.length + 8)
  const v = new DataView(out.buffer)
  v.setUint32(0, LABEL_MAGIC, true)
  v.setUint8(4, LABEL_VERSION)
  v.setUint8(5, l.k)
  v.setUint8(6, l.m)
  v.setUint8(7, l.index)
  v.setUint32(8, l.rank, true)
  v.setUint32(12, l.segments, true)
  v.setBigUint64(16, BigInt(l.epoch), true)
  v.setBigUint64(24, BigInt(l.version), true)
  v.setBigUint64(32, BigInt(l.stateBytes), true)
  v.setBigUint64(40, l.stateChecksum, true)
  v.setBigUint64(48, BigInt(l.bodyBytes), true)
  v.setUint16(56, id.length, true)
  v.setUint16(58, 0, true)
  v.setUint32(60, l.segmentBytes, true)
  out.set(id, LABEL_HEAD_BYTES)
  v.setBigUint64(LABEL_HEAD_BYTES + id.length, checksum64(out.subarray(0, LABEL_HEAD_BYTES + id.length)), true)
  return out
}

function badLabel(why: string): never {
  throw snapshotError(SnapshotErrorCode.LABEL_MALFORMED, `bad fragment label: ${why}`)
}

/** From the first LABEL_HEAD_BYTES of a label: the total label length (checks magic, version, id cap). */
export function labelLength(head: Uint8Array): number {
  if (head.length < LABEL_HEAD_BYTES) badLabel(`${head.length} bytes is shorter than a label`)
  const v = new DataView(head.buffer, head.byteOffset, LABEL_HEAD_BYTES)
  if (v.getUint32(0, true) !== LABEL_MAGIC) badLabel('bad magic')
  if (v.getUint8(4) !== LABEL_VERSION) badLabel(`unsupported version ${v.getUint8(4)}`)
  const idLen = v.getUint16(56, true)
  if (idLen > SNAPSHOT_LIMITS.maxPeerIdBytes) badLabel(`owner id of ${idLen} bytes is over the cap of ${SNAPSHOT_LIMITS.maxPeerIdBytes}`)
  return LABEL_HEAD_BYTES + idLen + 8
}

/**
 * Decodes and checks a whole label: checksum, field ranges, and that segments, segment size,
 * state size and body size agree (so the body size can be trusted for a cap check before the
 * body is read). Throws LABEL_MALFORMED.
 */
export function decodeLabel(bytes: Uint8Array): FragmentLabel {
  const len = labelLength(bytes)
  if (bytes.length !== len) badLabel(`expected ${len} bytes, got ${bytes.length}`)
  const v = new DataView(bytes.buffer, bytes.byteOffset, bytes.length)
  if (v.getBigUint64(len - 8, true) !== checksum64(bytes.subarray(0, len - 8))) badLabel('checksum mismatch')
  const big = (o: number): number => {
    const x = v.getBigUint64(o, true)
    if (x > BigInt(Number.MAX_SAFE_INTEGER)) badLabel(`field at ${o} is over 2^53`)
    return Number(x)
  }
  let owner = ''
  try {
    owner = utf8d.decode(bytes.subarray(LABEL_HEAD_BYTES, len - 8))
  } catch {
    badLabel('owner id is not UTF-8')
  }
  const l: FragmentLabel = {
    owner,
    k: v.getUint8(5),
    m: v.getUint8(6),
    index: v.getUint8(7),
    rank: v.getUint32(8, true),
    segments: v.getUint32(12, true),
    epoch: big(16),
    version: big(24),
    stateBytes: big(32),
    stateChecksum: v.getBigUint64(40, true),
    bodyBytes: big(48),
    segmentBytes: v.getUint32(60, true)
  }
  if (v.getUint16(58, true) !== 0) badLabel('reserved field is not zero')
  if (owner.length === 0) badLabel('empty owner id')
  if (l.k < 1 || l.m < 1 || l.k + l.m > 255 || l.index >= l.k + l.m) badLabel(`k=${l.k} m=${l.m} index=${l.index} is not valid`)
  if (l.stateBytes < 1 || l.stateBytes > SNAPSHOT_LIMITS.maxStateBytes)
    badLabel(`state of ${l.stateBytes} bytes is outside [1, ${SNAPSHOT_LIMITS.maxStateBytes}]`)
  if (l.segmentBytes < 1) badLabel('segment size is zero')
  if (l.segments !== Math.ceil(l.stateBytes / l.segmentBytes) || l.segments > SNAPSHOT_LIMITS.maxSegments)
    badLabel(`${l.segments} segments do not cut ${l.stateBytes} bytes at ${l.segmentBytes}`)
  if (l.bodyBytes > SNAPSHOT_LIMITS.maxFragmentBytes) badLabel(`body of ${l.bodyBytes} bytes is over the cap of ${SNAPSHOT_LIMITS.maxFragmentBytes}`)
  const want = segmentFrameSizes(l).reduce((a, b) => a + b, 0)
  if (want !== l.bodyBytes) badLabel(`body of ${l.bodyBytes} bytes, the label's sizes give ${want}`)
  return l
}

/**
 * Checks one segment frame of a labelled fragment (ZMFG header and body checksums, k, m and
 * index). Throws FRAGMENT_CORRUPT (a ProtocolError) naming the segment.
 */
export function verifySegment(label: FragmentLabel, s: number, frame: Uint8Array): void {
  const payload = segmentSizes(label.stateBytes, label.segmentBytes)[s]
  try {
    decodeFragment(frame, { k: label.k, m: label.m, index: label.index, payloadBytes: payload })
  } catch (err) {
    if (!(err instanceof ProtocolError)) throw err
    throw snapshotError(SnapshotErrorCode.FRAGMENT_CORRUPT, `fragment ${label.index} of ${label.owner}@${label.version} segment ${s}: ${err.message}`, {
      index: label.index,
      segment: s,
      cause: err.code
    })
  }
}

/** Checks every segment of a fragment against its label. */
export function verifyFragment(f: SnapshotFragment): void {
  const sizes = segmentFrameSizes(f.label)
  if (f.segments.length !== sizes.length) {
    throw snapshotError(SnapshotErrorCode.FRAGMENT_CORRUPT, `fragment ${f.label.index} has ${f.segments.length} segments, its label says ${sizes.length}`)
  }
  f.segments.forEach((seg, s) => verifySegment(f.label, s, seg))
}

/**
 * A fragment's digest for manifests: xxh64 over its segments' 48-byte ZMFG headers. Each
 * header's own checksum covers its body checksum, so this binds every byte of the fragment
 * at the cost of hashing 48 bytes per segment.
 */
export function fragmentDigest(segments: readonly Uint8Array[]): bigint {
  const heads = new Uint8Array(segments.length * FRAGMENT_HEADER_BYTES)
  segments.forEach((s, i) => heads.set(s.subarray(0, FRAGMENT_HEADER_BYTES), i * FRAGMENT_HEADER_BYTES))
  return checksum64(heads)
}

/** Who a stripe belongs to, and how it is coded and cut. */
export interface StripeInit {
  owner: string
  rank: number
  epoch: number
  coder: ErasureCoder
  segmentBytes?: number
  /** Sees each segment's k + m frames as soon as they are coded (a placement streams them). */
  onSegment?: OnSegment
}

/** Receives segment `s`'s k + m ZMFG frames (frame i belongs to snapshot fragment i), in segment order. */
export type OnSegment = (s: number, frames: Uint8Array[]) => void

/**
 * Cuts a sealed state (from state.ts) into k + m snapshot fragments. The version is the
 * state's step; the state checksum is the one in its header.
 */
export function stripeState(state: Uint8Array, init: StripeInit): SnapshotFragment[] {
  return runSync(stripeWork(state, init))
}

/**
 * {@link stripeState} that gives the event loop back every {@link PAUSE_EVERY_BYTES} of state
 * (`pause`, e.g. a zero-delay sleep on the node's clock), so heartbeats and transfers keep
 * flowing while a large state is encoded: a 1 GiB state coded in one call blocks for seconds,
 * long enough for the failure detector to evict the owner.
 */
export async function stripeStateAsync(state: Uint8Array, init: StripeInit, pause: () => Promise<void>): Promise<SnapshotFragment[]> {
  return await runPaused(stripeWork(state, init), pause)
}

/** State bytes coded or decoded between two pauses of the async variants. */
export const PAUSE_EVERY_BYTES = 4 * 1024 * 1024

// The coding loops are generators that yield the bytes of each segment done, so one body
// serves the synchronous functions and the ones that pause.
function runSync<T>(g: Generator<number, T>): T {
  let r = g.next()
  while (r.done !== true) r = g.next()
  return r.value
}

async function runPaused<T>(g: Generator<number, T>, pause: () => Promise<void>): Promise<T> {
  let since = 0
  let r = g.next()
  while (r.done !== true) {
    since += r.value
    if (since >= PAUSE_EVERY_BYTES) {
      since = 0
      await pause()
    }
    r = g.next()
  }
  return r.value
}

function* stripeWork(state: Uint8Array, init: StripeInit): Generator<number, SnapshotFragment[]> {
  const { k, m } = init.coder
  const labels = stripeLabels(state, { ...init, k, m, segmentBytes: init.segmentBytes ?? SNAPSHOT_LIMITS.segmentBytes })
  const perIndex: Uint8Array[][] = Array.from({ length: k + m }, () => [])
  let o = 0
  for (const [s, size] of segmentSizes(state.length, labels[0]!.segmentBytes).entries()) {
    const frames = codeSegment(state.subarray(o, o + size), init.coder)
    frames.forEach((f, i) => perIndex[i]!.push(f))
    init.onSegment?.(s, frames)
    o += size
    yield size
  }
  return labels.map((label, index) => ({ label, segments: perIndex[index]! }))
}

/** Who a stripe belongs to and how it is cut: everything its labels say besides the state's header. */
export interface StripeSpec {
  owner: string
  rank: number
  epoch: number
  k: number
  m: number
  segmentBytes: number
}

/**
 * The k + m labels of a sealed state's stripe. They follow from the state's header and the cut
 * alone, so a placement can send them (and holders reserve room) before coding ends.
 */
export function stripeLabels(state: Uint8Array, spec: StripeSpec): FragmentLabel[] {
  const h = readStateHeader(state)
  const sizes = segmentSizes(state.length, spec.segmentBytes)
  checkCap('snapshot segments', sizes.length, SNAPSHOT_LIMITS.maxSegments)
  const bodyBytes = sizes.reduce((a, p) => a + segmentFrameBytes(spec, p), 0)
  return Array.from({ length: spec.k + spec.m }, (_, index) => ({
    owner: spec.owner,
    rank: spec.rank,
    epoch: spec.epoch,
    version: h.step,
    index,
    k: spec.k,
    m: spec.m,
    stateBytes: state.length,
    stateChecksum: h.checksum,
    segments: sizes.length,
    segmentBytes: spec.segmentBytes,
    bodyBytes
  }))
}

/** Codes one segment of a state: its k + m ZMFG frames (snapshot fragment i takes frame i). */
export function codeSegment(payload: Uint8Array, coder: ErasureCoder): Uint8Array[] {
  return encodeStripe(payload, coder).map(encodeFragment)
}

/** What went into a rebuilt state. */
export interface AssembleReport {
  /** Fragment indices decoded from. */
  used: number[]
  /** Fragment indices rejected as corrupt or mismatched (treated as erasures). */
  corrupt: number[]
}

/**
 * Rebuilds and verifies a state from fragments of one (owner, version): any k valid ones. Each
 * segment is decoded with codec's decodeStripe (corrupt segment frames become erasures), and
 * the result must pass the whole-state checksum and match the label's. Throws
 * TooFewFragmentsError (codec) or a STATE_* ProtocolError.
 */
export function assembleState(frags: readonly SnapshotFragment[], coder: ErasureCoder): { state: Uint8Array; report: AssembleReport } {
  return runSync(assembleWork(frags, coder))
}

/** {@link assembleState} that pauses every {@link PAUSE_EVERY_BYTES} (see {@link stripeStateAsync}). */
export async function assembleStateAsync(
  frags: readonly SnapshotFragment[],
  coder: ErasureCoder,
  pause: () => Promise<void>
): Promise<{ state: Uint8Array; report: AssembleReport }> {
  return await runPaused(assembleWork(frags, coder), pause)
}

function* assembleWork(frags: readonly SnapshotFragment[], coder: ErasureCoder): Generator<number, { state: Uint8Array; report: AssembleReport }> {
  const first = frags[0]
  if (first === undefined)
    throw new TooFewFragmentsError(
      coder.k,
      coder.m,
      [],
      Array.from({ length: coder.k + coder.m }, (_, i) => i)
    )
  const l = first.label
  const sizes = segmentSizes(l.stateBytes, l.segmentBytes)
  const out = new Uint8Array(l.stateBytes)
  const used = new Set<number>()
  const corrupt = new Set<number>()
  let o = 0
  for (let s = 0; s < sizes.length; s++) {
    const rows = frags.map(f => f.segments[s] ?? new Uint8Array(0))
    const dec = decodeStripe(rows, coder, { payloadBytes: sizes[s] })
    for (const r of dec.rejected) corrupt.add(frags[r.position]!.label.index)
    for (const i of dec.used) used.add(i)
    out.set(dec.payload, o)
    o += sizes[s]!
    yield sizes[s]!
  }
  const h = verifyState(out)
  if (h.checksum !== l.stateChecksum || h.step !== l.version) {
    throw snapshotError(
      SnapshotErrorCode.STATE_CHECKSUM,
      `rebuilt state is step ${h.step} checksum ${h.checksum}, the labels say step ${l.version} checksum ${l.stateChecksum}`
    )
  }
  return { state: out, report: { used: [...used].sort((a, b) => a - b), corrupt: [...corrupt].sort((a, b) => a - b) } }
}
