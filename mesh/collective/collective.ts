import {
  AbortError,
  InvalidArgumentError,
  ProtocolError,
  checkCap,
  defineCounter,
  shardRange,
  type Clock,
  type Counter,
  type Logger,
  type MetricsRegistry,
  type Range
} from '../../core/index.ts'
import { checkName } from '../checks.ts'
import { StreamResetError } from '../errors.ts'
import type { View } from '../membership.ts'
import type { ByteStream, PeerId, PeerNet } from '../peernet.ts'
import { CollectiveError, type CollectiveFailure } from './errors.ts'
import { COLLECTIVE_DEFAULTS, COLLECTIVE_LIMITS } from './limits.ts'
import { ENCODINGS, MessageParser, OP_KINDS, encodeHeader, joinMessage, type Message, type MessageHeader, type OpKind } from './message.ts'
import { Mailbox, zeroTierBytes, type OpApi, type Payload, type TierBytes } from './op.ts'
import { BufferPool } from './pool.ts'
import { buildHierarchy, linkTier, ringOrder, type Hierarchy, type LinkTier, type TierKey } from './topology.ts'

export interface CollectiveInit {
  net: PeerNet
  view: View
  clock: Clock
  /** Namespace of the stream protocol, so several instances can share a PeerNet. Default 'main'. */
  name?: string
  /** Payload bytes per pipelined message. Default 1 MiB, at most COLLECTIVE_LIMITS.maxChunkBytes. */
  chunkBytes?: number
  /**
   * No-progress bound (ms): a call that neither receives nor sends anything for this long
   * fails with reason 'timeout' (`COLLECTIVE_DEFAULTS.noticeGraceMs` later, once it has heard
   * which member stalled first). Pass a function to follow the failure detector (e.g.
   * `() => membership.status().detectionBoundMs + allowance`). Default 10 s.
   */
  timeoutMs?: number | (() => number)
  /** Label keys of the tiers, innermost first (e.g. ['host', 'zone']). Default ['zone']. */
  tiers?: readonly TierKey[]
  metrics?: MetricsRegistry
  log?: Logger
  /**
   * Called for every message as it is handed to its stream (before the write completes):
   * the per-operation, per-tier byte counts a caller keeps (the simulator's cross-zone
   * figures). Synchronous and side-effect free for the collective.
   */
  onSent?: (sent: CollectiveSent) => void
}

/** Body encoding names, as {@link ENCODINGS} numbers them. */
export type EncodingName = keyof typeof ENCODINGS
const ENCODING_NAMES = new Map<number, EncodingName>(Object.entries(ENCODINGS).map(([k, v]) => [v, k as EncodingName]))

/** One collective message this node sent: operation kind, body encoding, training step, link tier and bytes (header included). */
export interface CollectiveSent {
  op: OpKind
  encoding: EncodingName
  step: number
  tier: LinkTier
  bytes: number
}

export interface CallOptions {
  /** Training step the call belongs to; messages of another step are protocol errors. Default 0. */
  step?: number
  signal?: AbortSignal
}

/** A completed call: the data and the bytes this node sent for it, per tier. */
export interface CollectiveResult<T> {
  data: T
  op: string
  bytes: TierBytes
}

export interface CollectiveStats {
  /** Per operation label: completed calls and bytes sent per tier. */
  ops: Record<string, { calls: number; bytes: TierBytes }>
  /** Messages of operations that had already finished, dropped. */
  staleDropped: number
  failure: CollectiveError | undefined
  /** Body and partial-sum buffers: allocated, loans served by reuse, bytes held idle (pool.ts). */
  pool: { made: number; reused: number; idleBytes: number }
}

interface OpRun {
  seq: number
  kind: OpKind
  label: string
  step: number
  ctrl: AbortController
  bytes: TierBytes
  boxes: Map<number, Mailbox>
  failure: CollectiveError | undefined
  failed: Promise<never>
  rejectFailed: (err: Error) => void
  waiting: Map<number, number>
  lastProgress: number
  timer: number | undefined
  localAbort: boolean
  /** Bodies sent whose transport still holds them (they may be views of the caller's arrays). */
  unreleased: number
  onDrained: (() => void) | undefined
}

interface Pending {
  msgs: Message[]
  bytes: number
  wake: Array<() => void>
}

/**
 * Failure notice: u32 operation sequence number, u8 reason (index in REASON_NAMES), u32 rank
 * of the member the failure started on (NO_RANK: none named, blame the sender).
 */
const NOTICE_BYTES = 9
const NO_RANK = 0xffffffff
const REASON_NAMES: readonly CollectiveFailure[] = ['peer-gone', 'timeout', 'protocol', 'aborted', 'closed', 'unrecoverable']

const boxKey = (src: number, phase: number): number => src * 256 + phase

/**
 * The transport and lifecycle of collectives over one view: a long-lived stream to each peer
 * (opened on first use), per-peer readers that route checked messages to the running
 * operation, operations run one at a time in call order (every member calls the same
 * operations in the same order), byte accounting per tier, and failure handling.
 *
 * Failure: a member's disconnect, a broken or reset stream, bytes that do not decode or fit
 * the operation, no progress within `timeoutMs`, the caller's abort or stop() fail the
 * running call with a {@link CollectiveError} and poison the instance. Poisoning sends a
 * failure notice naming where the failure started and resets every stream, so each other
 * member's call fails at once too instead of waiting for its own timeout, and reports the same
 * origin: a failure anywhere reaches every survivor within the timeout bound plus
 * `noticeGraceMs` and a few link latencies. Later calls reject at once.
 *
 * Bytes are copied as little as the transport allows, because on a 2-core box every copy and
 * every fresh buffer showed in the ring's throughput: a body is parsed straight into the
 * place its operation gives for it (`Landing`: the output, for f32 and raw words) or into a
 * pooled buffer (pool.ts); a message goes out as a gathered write of its header and a view
 * of the body (ByteStream.writev) where the stream has it. Such a body may be the caller's
 * input or result, so a call resolves only once the transport has released every body it sent.
 */
export class CollectiveCore {
  readonly net: PeerNet
  readonly view: View
  readonly clock: Clock
  readonly rank: number
  readonly size: number
  readonly chunkBytes: number
  readonly tiers: readonly TierKey[]
  readonly hierarchy: Hierarchy
  /** Ranks in ring order (tier groups contiguous). */
  readonly ring: readonly number[]
  readonly protocol: string
  /** Topic of the failure notices (direct messages). */
  readonly noticeTopic: string
  private readonly timeout: () => number
  private readonly log: Logger | undefined
  private readonly onSent: ((sent: CollectiveSent) => void) | undefined
  private readonly rankOf = new Map<PeerId, number>()
  private readonly tierTo: LinkTier[]
  private readonly life = new AbortController()
  private readonly outbound = new Map<number, Promise<ByteStream>>()
  private readonly outStreams = new Set<ByteStream>()
  private readonly chains = new Map<number, Promise<void>>()
  private readonly inbound = new Map<number, ByteStream>()
  private readonly ended = new Set<number>()
  private readonly pending = new Map<number, Pending>()
  private readonly totals = new Map<string, { calls: number; bytes: TierBytes }>()
  /** Message bodies and partial sums, reused across chunks and calls. */
  readonly pool = new BufferPool(COLLECTIVE_LIMITS.maxPoolIdleBytes, COLLECTIVE_LIMITS.maxPooledBufferBytes)
  private readonly sentBytes: Counter<'op' | 'tier'> | undefined
  private readonly failures: Counter<'reason'> | undefined
  private unsubscribe: (() => void) | undefined
  private unsubscribeNotices: (() => void) | undefined
  /** Pending verdict on a stream a member reset (see peerReset). */
  private resetTimer: number | undefined
  /** Deciding who stalled, after a no-progress timeout here or elsewhere (see suspectStall). */
  private stall: { timer: number; start: number; waitedOn: Map<number, number>; message: string } | undefined
  private tail: Promise<unknown> = Promise.resolve()
  private nextSeq = 0
  private lastStarted = -1
  private active: OpRun | undefined
  private failure: CollectiveError | undefined
  private started = false
  private stopped = false
  private staleDropped = 0

  constructor(init: CollectiveInit) {
    const { net, view } = init
    this.net = net
    this.view = view
    this.clock = init.clock
    this.log = init.log
    this.onSent = init.onSent
    const members = view.members
    if (members.length < 1) throw new InvalidArgumentError('a collective needs a view with at least one member')
    checkCap('collective group size', members.length, COLLECTIVE_LIMITS.maxGroupSize)
    if (!Number.isSafeInteger(view.epoch) || view.epoch < 0 || view.epoch > 0xffffffff)
      throw new InvalidArgumentError(`view epoch must be a u32, got ${view.epoch}`)
    members.forEach((m, r) => {
      if (this.rankOf.has(m.id)) throw new InvalidArgumentError(`member ${m.id} appears twice in the view`)
      this.rankOf.set(m.id, r)
    })
    const rank = this.rankOf.get(net.self.id)
    if (rank === undefined) throw new InvalidArgumentError(`this node (${net.self.id}) is not a member of view ${view.epoch}`)
    this.rank = rank
    this.size = members.length
    const chunkBytes = init.chunkBytes ?? COLLECTIVE_DEFAULTS.chunkBytes
    if (!Number.isSafeInteger(chunkBytes) || chunkBytes < COLLECTIVE_LIMITS.minChunkBytes || chunkBytes > COLLECTIVE_LIMITS.maxChunkBytes) {
      throw new InvalidArgumentError(
        `chunkBytes must be an integer in [${COLLECTIVE_LIMITS.minChunkBytes}, ${COLLECTIVE_LIMITS.maxChunkBytes}], got ${chunkBytes}`
      )
    }
    this.chunkBytes = chunkBytes
    const t = init.timeoutMs ?? COLLECTIVE_DEFAULTS.timeoutMs
    this.timeout = typeof t === 'function' ? t : () => t
    if (typeof t === 'number' && !(t > 0 && Number.isFinite(t))) throw new InvalidArgumentError(`timeoutMs must be a positive finite number, got ${t}`)
    const tiers = init.tiers ?? ['zone']
    checkCap('collective tiers', tiers.length, COLLECTIVE_LIMITS.maxTiers)
    for (const k of tiers) if (k !== 'zone' && k !== 'host') throw new InvalidArgumentError(`unknown tier key ${String(k)}`)
    this.tiers = [...tiers]
    this.hierarchy = buildHierarchy(members, this.tiers)
    this.ring = ringOrder(this.hierarchy)
    const me = members[rank]!
    this.tierTo = members.map(m => linkTier(me, m))
    const name = init.name ?? 'main'
    this.protocol = `/zeromesh/collective/1/${name}/${view.epoch}`
    checkName('protocol', this.protocol)
    this.noticeTopic = `${this.protocol}/failed`
    checkName('topic', this.noticeTopic)
    if (init.metrics !== undefined) {
      const reg = init.metrics
      this.sentBytes =
        (reg.getSingleMetric('zeromesh_collective_sent_bytes_total') as Counter<'op' | 'tier'> | undefined) ??
        defineCounter(reg, { name: 'zeromesh_collective_sent_bytes_total', help: 'Bytes sent by collectives (headers included)', labelNames: ['op', 'tier'] })
      this.failures =
        (reg.getSingleMetric('zeromesh_collective_failures_total') as Counter<'reason'> | undefined) ??
        defineCounter(reg, { name: 'zeromesh_collective_failures_total', help: 'Collective calls failed', labelNames: ['reason'] })
    }
  }

  /** Registers the stream handler and watches members' disconnects. */
  async start(): Promise<void> {
    if (this.started) return
    if (this.stopped) throw new InvalidArgumentError('a stopped collective cannot be restarted; create a new one')
    this.started = true
    this.net.handle(this.protocol, stream => {
      this.accept(stream)
    })
    // A member whose call failed tells the others straight away: streams it never opened
    // cannot carry a reset, and waiting for the timeout would be slow.
    this.unsubscribeNotices = this.net.subscribe(this.noticeTopic, {
      validate: msg => {
        const r = this.rankOf.get(msg.from)
        if (r === undefined || r === this.rank || msg.data.length !== NOTICE_BYTES) return 'reject'
        const origin = new DataView(msg.data.buffer, msg.data.byteOffset, NOTICE_BYTES).getUint32(5, true)
        return origin === NO_RANK || origin < this.size ? 'accept' : 'reject'
      },
      deliver: msg => {
        // The root cause travels on: the reason and the member the failure started on (the
        // one that stalled or crashed, as the member that first saw it named it), so every
        // survivor reports the same culprit, not the messenger. No culprit: the sender.
        const theirs = REASON_NAMES[msg.data[4]!] ?? 'aborted'
        const origin = new DataView(msg.data.buffer, msg.data.byteOffset, NOTICE_BYTES).getUint32(5, true)
        const sender = this.rankOf.get(msg.from)!
        const blamed = origin === NO_RANK ? sender : origin
        const via = blamed === sender ? '' : `, started on ${this.view.members[blamed]!.id}`
        if (theirs === 'timeout') this.suspectStall(sender, blamed, `member ${msg.from} timed out (waiting on ${this.view.members[blamed]!.id})`)
        else this.fail(theirs === 'closed' ? 'aborted' : theirs, blamed, `member ${msg.from} failed (${theirs}${via})`)
      }
    })
    this.unsubscribe = this.net.on('peer:disconnect', id => {
      const r = this.rankOf.get(id)
      if (r !== undefined && r !== this.rank) this.fail('peer-gone', r, `member ${id} disconnected`)
    })
  }

  /**
   * Stops: a running call fails with reason 'closed'; when idle, outbound streams are ended
   * cleanly (peers finishing their last call still get every byte) and inbound ones reset.
   */
  async stop(): Promise<void> {
    if (this.stopped) return
    this.stopped = true
    this.unsubscribe?.()
    try {
      this.unsubscribeNotices?.()
      this.net.unhandle(this.protocol)
    } catch {
      // The PeerNet was stopped first: its handlers are gone with it.
    }
    if (this.active !== undefined) this.fail('closed', undefined, 'the collective was stopped')
    this.clearVerdictTimers()
    const ends: Array<Promise<unknown>> = []
    for (const s of this.outStreams) ends.push(this.failure === undefined ? s.end().catch(() => {}) : Promise.resolve(s.abort()))
    for (const s of this.inbound.values()) s.abort(new AbortError('collective stopped'))
    this.life.abort(new AbortError('collective stopped'))
    for (const p of this.pending.values()) for (const w of p.wake.splice(0)) w()
    await Promise.all(ends)
  }

  /** Aborted (reason: the first failure, or an AbortError after stop()) when the instance is poisoned. */
  get failed(): AbortSignal {
    return this.life.signal
  }

  /** Bytes of `length` elements this rank owns (the ZeRO shard of rank r is range r). */
  shardOf(length: number): Range {
    return shardRange(length, this.size, this.rank)
  }

  /** The group (ranks ascending) sharing this node's `scope` label and every outer tier label. */
  scopeGroup(scope: 'all' | TierKey): readonly number[] {
    if (scope === 'all') return this.hierarchy.top.members
    const i = this.tiers.indexOf(scope)
    if (i < 0) throw new InvalidArgumentError(`scope ${scope} is not one of the tiers [${this.tiers.join(', ')}]`)
    const keys = this.tiers.slice(i)
    const me = this.view.members[this.rank]!
    const out: number[] = []
    this.view.members.forEach((m, r) => {
      if (keys.every(k => m[k] === me[k])) out.push(r)
    })
    return out
  }

  stats(): CollectiveStats {
    const ops: CollectiveStats['ops'] = {}
    for (const [k, v] of this.totals) ops[k] = { calls: v.calls, bytes: { ...v.bytes } }
    return { ops, staleDropped: this.staleDropped, failure: this.failure, pool: this.pool.stats() }
  }

  /**
   * Runs one operation after the previous ones (calls are ordered by when they are made).
   * `algo` declares its expected messages, calls ready(), and does the work.
   */
  run<T>(kind: OpKind, label: string, opts: CallOptions, algo: (op: OpApi) => Promise<T>): Promise<CollectiveResult<T>> {
    const step = opts.step ?? 0
    if (!Number.isSafeInteger(step) || step < 0) throw new InvalidArgumentError(`step must be a non-negative safe integer, got ${step}`)
    const seq = this.nextSeq++
    const result = this.tail.then(() => this.execute(seq, kind, label, step, opts.signal, algo))
    this.tail = result.catch(() => {})
    return result
  }

  private async execute<T>(
    seq: number,
    kind: OpKind,
    label: string,
    step: number,
    signal: AbortSignal | undefined,
    algo: (op: OpApi) => Promise<T>
  ): Promise<CollectiveResult<T>> {
    const ctx = { op: label, step }
    if (!this.started || this.stopped) throw new CollectiveError('closed', `collective ${this.stopped ? 'stopped' : 'not started'}`, ctx)
    if (this.failure !== undefined) {
      throw new CollectiveError(
        this.failure.reason,
        `collective already failed: ${this.failure.message}`,
        { ...ctx, peer: this.failure.peer },
        { cause: this.failure }
      )
    }
    if (signal?.aborted === true) throw new AbortError('collective call aborted before it started', { op: label, step })
    let rejectFailed!: (err: Error) => void
    const failed = new Promise<never>((_resolve, reject) => {
      rejectFailed = reject
    })
    failed.catch(() => {})
    const op: OpRun = {
      seq,
      kind,
      label,
      step,
      ctrl: new AbortController(),
      bytes: zeroTierBytes(),
      boxes: new Map(),
      failure: undefined,
      failed,
      rejectFailed,
      waiting: new Map(),
      lastProgress: this.clock.monotonic(),
      timer: undefined,
      localAbort: false,
      unreleased: 0,
      onDrained: undefined
    }
    this.active = op
    this.lastStarted = seq
    const onAbort = (): void => {
      op.localAbort = true
      this.fail('aborted', this.rank, 'aborted by the caller')
    }
    signal?.addEventListener('abort', onAbort, { once: true })
    this.armWatchdog(op, this.timeout())
    try {
      const data = await Promise.race([algo(this.api(op)).then(d => this.drained(op).then(() => d)), op.failed])
      const t = this.totals.get(label) ?? { calls: 0, bytes: zeroTierBytes() }
      t.calls++
      for (const k of ['host', 'zone', 'wan'] as const) t.bytes[k] += op.bytes[k]
      this.totals.set(label, t)
      return { data, op: label, bytes: op.bytes }
    } catch (err) {
      if (op.localAbort) throw new AbortError('collective call aborted', { op: label, step })
      if (op.failure === undefined) {
        // A local error (bad input, a non-finite gradient): the caller gets it as it is, and
        // the members waiting on this node are released by the reset streams.
        this.fail('aborted', this.rank, `failed locally: ${(err as Error).message}`, err)
        throw err
      }
      throw op.failure
    } finally {
      signal?.removeEventListener('abort', onAbort)
      if (op.timer !== undefined) this.clock.clearTimeout(op.timer)
      for (const b of op.boxes.values()) b.failAll(op.failure ?? new AbortError('operation over'))
      this.active = undefined
    }
  }

  /** Resolves once no transport holds a body `op` sent: only then may the caller touch its arrays again. */
  private drained(op: OpRun): Promise<void> {
    if (op.unreleased === 0) return Promise.resolve()
    return new Promise(resolve => {
      op.onDrained = resolve
    })
  }

  /** Counts a body handed to a transport; the returned function (idempotent) marks it released. */
  private lend(op: OpRun, onReleased: (() => void) | undefined): () => void {
    op.unreleased++
    let done = false
    return () => {
      if (done) return
      done = true
      onReleased?.()
      if (--op.unreleased === 0) op.onDrained?.()
    }
  }

  private api(op: OpRun): OpApi {
    return {
      self: this.rank,
      expect: (src, phase, count, land) => {
        if (count <= 0) return
        if (src === this.rank || src < 0 || src >= this.size) throw new InvalidArgumentError(`cannot expect messages from rank ${src}`)
        const k = boxKey(src, phase)
        if (op.boxes.has(k)) throw new InvalidArgumentError(`messages from rank ${src} in phase ${phase} declared twice`)
        op.boxes.set(k, new Mailbox(count, land))
      },
      ready: () => {
        this.drainPending(op)
      },
      send: (dst, phase, index, payload) => this.send(op, dst, phase, index, payload),
      recv: async (src, phase, index) => {
        const box = op.boxes.get(boxKey(src, phase))
        if (box === undefined) throw new InvalidArgumentError(`no messages from rank ${src} in phase ${phase} were declared`)
        if (this.ended.has(src) && box.next <= index && !box.has(index)) {
          this.fail('peer-gone', src, `member ${this.view.members[src]!.id} ended its stream`)
        }
        op.waiting.set(src, (op.waiting.get(src) ?? 0) + 1)
        try {
          return await Promise.race([box.take(index), op.failed])
        } finally {
          const n = op.waiting.get(src)! - 1
          if (n === 0) op.waiting.delete(src)
          else op.waiting.set(src, n)
        }
      },
      check: (src, fn) => {
        try {
          fn()
        } catch (err) {
          if (err instanceof ProtocolError) this.fail('protocol', src, err.message, err)
          throw op.failure ?? err
        }
      },
      guard: p => Promise.race([p, op.failed]),
      buffer: bytes => this.pool.acquire(bytes),
      recycle: b => {
        this.pool.release(b)
      }
    }
  }

  private async send(op: OpRun, dst: number, phase: number, index: number, p: Payload): Promise<void> {
    const release = this.lend(op, p.onReleased)
    if (op.failure !== undefined) {
      release()
      throw op.failure
    }
    const header = encodeHeader(
      {
        kind: OP_KINDS[op.kind],
        phase,
        encoding: p.encoding,
        epoch: this.view.epoch,
        op: op.seq,
        step: op.step,
        src: this.rank,
        index,
        elements: p.elements,
        blockSize: p.blockSize,
        bodyChecksum: p.checksum
      },
      p.body
    )
    const bytes = header.length + p.body.length
    const prev = this.chains.get(dst) ?? Promise.resolve()
    const write = prev.then(async () => {
      let handed = false
      try {
        const s = await this.openTo(dst)
        this.onSent?.({ op: op.kind, encoding: ENCODING_NAMES.get(p.encoding)!, step: op.step, tier: this.tierTo[dst]!, bytes })
        handed = true
        await writeMessage(s, header, p.body, { signal: op.ctrl.signal, onReleased: release })
      } finally {
        if (!handed) release()
      }
    })
    this.chains.set(
      dst,
      write.catch(() => {})
    )
    op.waiting.set(dst, (op.waiting.get(dst) ?? 0) + 1)
    try {
      await Promise.race([write, op.failed])
    } catch (err) {
      if (op.failure === undefined) {
        const why = `sending to ${this.view.members[dst]!.id} failed: ${(err as Error).message}`
        if (err instanceof StreamResetError) {
          this.peerReset(dst, why, err)
          await op.failed.catch(() => {})
        } else {
          this.fail('peer-gone', dst, why, err)
        }
      }
      throw op.failure ?? err
    } finally {
      const n = op.waiting.get(dst)! - 1
      if (n === 0) op.waiting.delete(dst)
      else op.waiting.set(dst, n)
    }
    const tier = this.tierTo[dst]!
    op.bytes[tier] += bytes
    this.sentBytes?.inc({ op: op.label, tier }, bytes)
    op.lastProgress = this.clock.monotonic()
  }

  /** The stream to `dst`, opened once; retried while the peer has not registered the protocol yet. */
  private openTo(dst: number): Promise<ByteStream> {
    let p = this.outbound.get(dst)
    if (p !== undefined) return p
    const id = this.view.members[dst]!.id
    p = (async () => {
      let delay: number = COLLECTIVE_DEFAULTS.openRetryMs
      for (;;) {
        try {
          const s = await this.net.open(id, this.protocol, { signal: this.life.signal })
          if (this.life.signal.aborted) {
            s.abort()
            throw new AbortError('collective stopped')
          }
          this.outStreams.add(s)
          return s
        } catch (err) {
          // The peer may not have built its instance for this view yet: wait for it, bounded
          // by the operation's no-progress timeout.
          if ((err as Error).name !== 'ProtocolNotSupportedError' || this.life.signal.aborted) throw err
          await this.clock.sleep(delay, { signal: this.life.signal })
          delay = Math.min(delay * 2, 250)
        }
      }
    })()
    p.catch(() => {})
    this.outbound.set(dst, p)
    return p
  }

  private accept(stream: ByteStream): void {
    const src = this.rankOf.get(stream.remote)
    if (src === undefined || src === this.rank || this.stopped || this.failure !== undefined) {
      stream.abort(new ProtocolError('COLLECTIVE_NOT_MEMBER', `stream from ${stream.remote}, not a member of view ${this.view.epoch}`))
      return
    }
    if (this.inbound.has(src)) {
      stream.abort(new ProtocolError('COLLECTIVE_DUPLICATE_STREAM', `second stream from ${stream.remote}`))
      this.fail('protocol', src, `member ${stream.remote} opened a second stream`)
      return
    }
    this.inbound.set(src, stream)
    void this.readLoop(src, stream)
  }

  private async readLoop(src: number, stream: ByteStream): Promise<void> {
    const parser = new MessageParser({ land: h => this.landing(src, h), acquire: bytes => this.pool.acquire(bytes) })
    try {
      for await (const chunk of stream) {
        if (this.stopped || this.failure !== undefined) return
        for (const m of parser.push(chunk)) this.route(src, m)
        const p = this.pending.get(src)
        while (p !== undefined && p.bytes > COLLECTIVE_LIMITS.maxPendingBytesPerPeer && !this.stopped && this.failure === undefined) {
          await new Promise<void>(resolve => p.wake.push(resolve))
        }
      }
      parser.end()
      this.ended.add(src)
      const op = this.active
      if (op !== undefined && [...op.boxes].some(([k, b]) => Math.floor(k / 256) === src && b.open)) {
        this.fail('peer-gone', src, `member ${stream.remote} ended its stream mid-operation`)
      }
    } catch (err) {
      if (this.stopped || this.failure !== undefined) return
      if (err instanceof ProtocolError) {
        stream.abort(err)
        this.fail('protocol', src, `bad bytes from ${stream.remote}: ${err.message}`, err)
      } else if (err instanceof StreamResetError) {
        this.peerReset(src, `${stream.remote} reset its stream: ${(err as Error).message}`, err)
      } else {
        this.fail('peer-gone', src, `stream from ${stream.remote} failed: ${(err as Error).message}`, err)
      }
    }
  }

  /**
   * A member reset its stream to or from this node: it failed, and it sent its failure notice
   * (with the root cause) before resetting, but the two travel separately and the reset may
   * come first. Wait up to `noticeGraceMs` for the notice (or any other verdict: a disconnect,
   * the watchdog) so this node reports where the failure started; then blame the resetter.
   */
  private peerReset(rank: number, message: string, cause: unknown): void {
    if (this.failure !== undefined || this.resetTimer !== undefined) return
    this.resetTimer = this.clock.setTimeout(() => {
      this.resetTimer = undefined
      this.fail('peer-gone', rank, message, cause)
    }, COLLECTIVE_DEFAULTS.noticeGraceMs)
  }

  /**
   * Where the body of a message from `src` goes as it arrives: the running operation's
   * destination for it when the header is the one that operation expects next (else the
   * message takes the ordinary path, where route() and the algorithm raise any error).
   */
  private landing(src: number, h: MessageHeader): Uint8Array | undefined {
    const op = this.active
    if (op === undefined || op.failure !== undefined || h.op !== op.seq || h.epoch !== this.view.epoch || h.src !== src) return undefined
    if (h.kind !== OP_KINDS[op.kind] || h.step !== op.step) return undefined
    return op.boxes.get(boxKey(src, h.phase))?.landing(h)
  }

  private route(src: number, m: Message): void {
    const h = m.header
    if (h.epoch !== this.view.epoch)
      throw new ProtocolError('COLLECTIVE_WRONG_EPOCH', `message of epoch ${h.epoch} on the stream of epoch ${this.view.epoch}`, { epoch: h.epoch })
    if (h.src !== src) throw new ProtocolError('COLLECTIVE_WRONG_SOURCE', `message claims rank ${h.src} on the stream of rank ${src}`, { claimed: h.src })
    const op = this.active
    if (op !== undefined && h.op === op.seq) {
      this.deliver(op, src, m)
      return
    }
    if (h.op > this.lastStarted) {
      if (h.op - this.lastStarted > COLLECTIVE_LIMITS.maxOpsAhead)
        throw new ProtocolError('COLLECTIVE_TOO_FAR_AHEAD', `message of operation ${h.op} while at ${this.lastStarted}`)
      let p = this.pending.get(src)
      if (p === undefined) this.pending.set(src, (p = { msgs: [], bytes: 0, wake: [] }))
      p.msgs.push(m)
      p.bytes += m.body.length + COLLECTIVE_LIMITS.headerBytes
      return
    }
    this.dropStale(m)
  }

  private dropStale(m: Message): void {
    this.staleDropped++
    if (m.pooled) this.pool.release(m.body)
  }

  private deliver(op: OpRun, src: number, m: Message): void {
    const h = m.header
    if (h.kind !== OP_KINDS[op.kind]) throw new ProtocolError('COLLECTIVE_WRONG_OP', `message of operation kind ${h.kind} during ${op.kind}`, { kind: h.kind })
    if (h.step !== op.step) throw new ProtocolError('COLLECTIVE_WRONG_STEP', `message of step ${h.step} during step ${op.step}`, { step: h.step })
    const box = op.boxes.get(boxKey(src, h.phase))
    if (box === undefined) throw new ProtocolError('COLLECTIVE_UNEXPECTED', `no messages expected from rank ${src} in phase ${h.phase}`, { phase: h.phase })
    box.put(m)
    op.lastProgress = this.clock.monotonic()
  }

  private drainPending(op: OpRun): void {
    for (const [src, p] of this.pending) {
      let i = 0
      try {
        while (i < p.msgs.length && p.msgs[i]!.header.op <= op.seq) {
          const m = p.msgs[i++]!
          p.bytes -= m.body.length + COLLECTIVE_LIMITS.headerBytes
          if (m.header.op === op.seq) this.deliver(op, src, m)
          else this.dropStale(m)
        }
      } catch (err) {
        this.fail('protocol', src, (err as Error).message, err)
        return
      } finally {
        p.msgs.splice(0, i)
        if (p.bytes <= COLLECTIVE_LIMITS.maxPendingBytesPerPeer) for (const w of p.wake.splice(0)) w()
      }
    }
  }

  private armWatchdog(op: OpRun, ms: number): void {
    op.timer = this.clock.setTimeout(() => {
      op.timer = undefined
      if (this.active !== op || op.failure !== undefined) return
      const limit = this.timeout()
      const idle = this.clock.monotonic() - op.lastProgress
      // Sub-millisecond remainders are float noise (re-arming them could spin at one instant).
      if (limit - idle >= 1) {
        this.armWatchdog(op, limit - idle)
        return
      }
      const stalled: number | undefined = op.waiting.keys().next().value
      const message = `no progress for ${Math.round(idle)} ms${stalled !== undefined ? ` waiting on ${this.view.members[stalled]!.id}` : ''}`
      if (stalled === undefined) this.fail('timeout', undefined, message)
      else this.suspectStall(this.rank, stalled, message)
    }, ms)
  }

  /**
   * `reporter` (this node or, by its notice, another member) made no progress waiting on
   * `waitedOn`. That member may be the one that stalled, or itself be starved by it (on a ring
   * every member downstream of a stall starves, and a starved member's watchdog can fire before
   * the news from upstream arrives). So a timeout is told to every member at once, and each
   * waits `noticeGraceMs` to hear the others' before failing: it then follows the chain of
   * "X timed out waiting on Y" to a member that did not report one, the one that stalled.
   */
  private suspectStall(reporter: number, waitedOn: number, message: string): void {
    if (this.failure !== undefined) return
    if (reporter === this.rank) this.notify('timeout', waitedOn)
    if (this.stall === undefined) {
      const timer = this.clock.setTimeout(() => {
        const st = this.stall!
        this.stall = undefined
        let r = st.start
        const seen = new Set<number>([r])
        for (let next = st.waitedOn.get(r); next !== undefined && !seen.has(next); next = st.waitedOn.get(r)) {
          r = next
          seen.add(r)
        }
        const culprit = r === st.start ? '' : `; ${this.view.members[r]!.id} stalled first`
        this.fail('timeout', r, `${st.message}${culprit}`)
      }, COLLECTIVE_DEFAULTS.noticeGraceMs)
      this.stall = { timer, start: waitedOn, waitedOn: new Map(), message }
    }
    // First word wins: a member's later notice relays the verdict it reached.
    if (!this.stall.waitedOn.has(reporter)) this.stall.waitedOn.set(reporter, waitedOn)
  }

  private clearVerdictTimers(): void {
    if (this.resetTimer !== undefined) this.clock.clearTimeout(this.resetTimer)
    this.resetTimer = undefined
    if (this.stall !== undefined) this.clock.clearTimeout(this.stall.timer)
    this.stall = undefined
  }

  /** Tells every other member that this instance failed, why, and on whom (`peerRank`). */
  private notify(reason: CollectiveFailure, peerRank: number | undefined): void {
    if (!this.started) return
    const notice = new Uint8Array(NOTICE_BYTES)
    const dv = new DataView(notice.buffer)
    dv.setUint32(0, Math.max(0, this.lastStarted), true)
    notice[4] = REASON_NAMES.indexOf(reason)
    dv.setUint32(5, peerRank ?? NO_RANK, true)
    for (const m of this.view.members) {
      if (m.id !== this.net.self.id) this.net.send(m.id, this.noticeTopic, notice).catch(() => {})
    }
  }

  /** Records the first failure, fails the running call and resets every stream. */
  fail(reason: CollectiveFailure, peerRank: number | undefined, message: string, cause?: unknown): void {
    if (this.failure !== undefined) return
    const op = this.active
    const peer = peerRank === undefined ? undefined : this.view.members[peerRank]?.id
    const err = new CollectiveError(
      reason,
      `${op?.label ?? 'collective'} (step ${op?.step ?? '-'}): ${message}`,
      { op: op?.label ?? 'idle', step: op?.step ?? -1, peer },
      cause === undefined ? undefined : { cause }
    )
    this.failure = err
    this.clearVerdictTimers()
    this.failures?.inc({ reason })
    this.log?.debug({ reason, op: err.op, step: err.step, peer }, 'collective failed')
    if (op !== undefined) {
      op.failure = err
      op.rejectFailed(err)
      op.ctrl.abort(err)
    }
    this.life.abort(err)
    this.notify(reason, peerRank)
    for (const s of this.outStreams) s.abort(err)
    for (const s of this.inbound.values()) s.abort(err)
    for (const p of this.pending.values()) for (const w of p.wake.splice(0)) w()
  }
}

/**
 * Writes one message: header and body gathered without a copy where the stream can
 * (ByteStream.writev; `onReleased` once it lets go of them), else joined into one buffer, after
 * which the body is released at once.
 */
async function writeMessage(s: ByteStream, header: Uint8Array, body: Uint8Array, options: { signal: AbortSignal; onReleased: () => void }): Promise<void> {
  if (s.writev !== undefined) {
    await s.writev([header, body], options)
    return
  }
  const joined = joinMessage(header, body)
  options.onReleased()
  await s.write(joined, { signal: options.signal })
}
