import { checkCap, createThreadPool, InvalidArgumentError, ProtocolError, spareThreads, type ThreadPool } from '../core/index.ts'
import { TooFewFragmentsError, type ErasureCoderName } from '../codec/index.ts'
import type { SnapshotCoder } from './coder.ts'
import type { CoderReply, CoderRequest, WireError } from './coder-protocol.ts'
import { SnapshotCoderError } from './errors.ts'
import { segmentFrameSizes, segmentSizes, stripeLabels, type OnSegment, type SnapshotFragment, type StripeSpec } from './fragment.ts'
import { SNAPSHOT_LIMITS } from './limits.ts'

/** How a thread coder is built. */
export interface ThreadCoderInit {
  /** Threads (default {@link defaultCoderThreads}); at most SNAPSHOT_LIMITS.maxCoderThreads. */
  threads?: number
  /** The erasure coder inside the threads ('simd' default, 'wasm'); both give the same bytes. */
  impl?: ErasureCoderName
  /** The thread's entry module (default coder-worker next to this file; tests point it at a failing one). */
  entry?: URL
}

/**
 * Threads by default: one per core beyond the trainer's, at most two. A node codes one
 * placement at a time (the capturer places one buffer at a time), so a second thread only
 * codes alternate segments of a large state or a recovery's decode beside a placement; more
 * would take cores from the trainer and the other processes on the host, and each thread is a
 * V8 isolate (~10 MiB) plus the coder's wasm memory.
 */
export function defaultCoderThreads(): number {
  return spareThreads(1, 2)
}

// The sources run with Node's type stripping (.ts), the package from dist/ (.js).
const ENTRY = import.meta.url.endsWith('.ts') ? new URL('./coder-worker.ts', import.meta.url) : new URL('./coder-worker.js', import.meta.url)

type Done = Extract<CoderReply, { ok: true }>
type Ok<O extends Done['op']> = Extract<Done, { op: O }>
type Pool = ThreadPool<CoderRequest, CoderReply>

/**
 * The coder on worker threads (coder-worker.ts). State bytes are read in place from shared
 * memory (`alloc` gives SharedArrayBuffer views; other buffers are copied into one once), and
 * fragments and rebuilt states come back as transferred buffers. Threads start on start() or first use
 * and are unref'd while idle, so an idle coder never keeps a process alive. A thread that
 * crashes or exits rejects its jobs with SnapshotCoderError and is replaced by the next job.
 */
export function createThreadCoder(init: ThreadCoderInit = {}): SnapshotCoder {
  const size = init.threads ?? defaultCoderThreads()
  if (!Number.isSafeInteger(size) || size < 1) throw new InvalidArgumentError(`threads must be an integer >= 1, got ${size}`)
  checkCap('snapshot coder threads', size, SNAPSHOT_LIMITS.maxCoderThreads)
  const pool: Pool = createThreadPool<CoderRequest, CoderReply>({
    size,
    entry: init.entry ?? ENTRY,
    workerData: { impl: init.impl },
    name: 'snapshot coder',
    doing: 'snapshot coding',
    maxJobs: SNAPSHOT_LIMITS.maxCoderJobs,
    errorOf: r => fromWire((r as Extract<CoderReply, { ok: false }>).error),
    threadError: message => new SnapshotCoderError(message)
  })
  return {
    name: 'threads',
    alloc: bytes => new Uint8Array(new SharedArrayBuffer(bytes)),
    async seal(state, options = {}) {
      const r: Ok<'seal'> = await pool.submit(id => ({ id, op: 'seal', state: shared(state) }), options.signal)
      return r.checksum
    },
    stripe: (state, spec, options = {}) => stripeOn(pool, size, state, spec, options),
    async assemble(frags, k, m, options = {}) {
      const r: Ok<'assemble'> = await pool.submit(id => ({ id, op: 'assemble', frags: packed(frags), k, m }), options.signal)
      return { state: r.state, report: r.report }
    },
    start: () => pool.start(),
    stop: () => pool.stop()
  }
}

/** Codes a stripe's segments on the pool, at most two per thread in flight, handed on in order. */
async function stripeOn(
  pool: Pool,
  threads: number,
  state: Uint8Array,
  spec: StripeSpec,
  options: { signal?: AbortSignal; onSegment?: OnSegment }
): Promise<SnapshotFragment[]> {
  const labels = stripeLabels(state, spec)
  const src = shared(state)
  const sizes = segmentSizes(state.length, spec.segmentBytes)
  const want = segmentFrameSizes(labels[0]!)
  const perIndex: Uint8Array[][] = labels.map(() => [])
  const queued: Array<Promise<Ok<'segment'>>> = []
  let next = 0
  let offset = 0
  const launch = (): void => {
    const [o, size] = [offset, sizes[next]!]
    offset += size
    next++
    const p = pool.submit<Ok<'segment'>>(id => ({ id, op: 'segment', state: src, offset: o, size, k: spec.k, m: spec.m }), options.signal)
    // A failure is seen when its turn comes; until then it must not count as unhandled.
    p.catch(() => {})
    queued.push(p)
  }
  while (next < sizes.length && queued.length < 2 * threads) launch()
  for (let s = 0; s < sizes.length; s++) {
    const { frames } = await queued.shift()!
    if (frames.length !== labels.length || frames.some(f => f.length !== want[s]))
      throw new SnapshotCoderError(`snapshot coder thread returned ${frames.length} frames of the wrong shape for segment ${s}`)
    frames.forEach((f, i) => perIndex[i]!.push(f))
    options.onSegment?.(s, frames)
    if (next < sizes.length) launch()
  }
  return labels.map((label, i) => ({ label, segments: perIndex[i]! }))
}

/** `bytes` in shared memory: itself when it is, else one copy. */
function shared(bytes: Uint8Array): Uint8Array {
  if (bytes.buffer instanceof SharedArrayBuffer) return bytes
  const out = new Uint8Array(new SharedArrayBuffer(bytes.length))
  out.set(bytes)
  return out
}

/**
 * Fragments with their segments packed into one SharedArrayBuffer. Posting the segments as
 * they are would clone each one's whole backing buffer (a received chunk can be a view into a
 * much larger one, or into the store's own copy).
 */
function packed(frags: readonly SnapshotFragment[]): SnapshotFragment[] {
  const total = frags.reduce((a, f) => a + f.segments.reduce((b, s) => b + s.length, 0), 0)
  const buf = new Uint8Array(new SharedArrayBuffer(total))
  let o = 0
  return frags.map(f => ({
    label: f.label,
    segments: f.segments.map(s => {
      buf.set(s, o)
      o += s.length
      return buf.subarray(o - s.length, o)
    })
  }))
}

/** The typed error a thread's error stands for. */
function fromWire(e: WireError): Error {
  switch (e.kind) {
    case 'too-few':
      return new TooFewFragmentsError(e.k, e.m, e.present, e.missing, e.corrupt)
    case 'protocol':
      return new ProtocolError(e.code, e.message, e.details, e.action)
    case 'other':
      return new SnapshotCoderError(`snapshot coder thread: ${e.name}: ${e.message}`)
  }
}
