import { ProtocolError, checkCap, defineCounter, settleOnAbort, throwIfAborted, type Counter, type Logger, type MetricsRegistry } from '../core/index.ts'
import { TooFewFragmentsError } from '../codec/index.ts'
import type { PeerId } from '../mesh/index.ts'
import { NoSnapshotError, snapshotError, SnapshotErrorCode, TransferTimeoutError, UnrecoverableError } from './errors.ts'
import type { SnapshotCoder } from './coder.ts'
import {
  decodeLabel,
  fragmentDigest,
  LABEL_HEAD_BYTES,
  labelLength,
  segmentFrameSizes,
  verifyFragment,
  type FragmentLabel,
  type SnapshotFragment
} from './fragment.ts'
import { SNAPSHOT_LIMITS } from './limits.ts'
import type { Manifest } from './manifest.ts'
import { decodeState, type RankState } from './state.ts'
import type { FragmentStore } from './store.ts'
import { abortOnSignal, joinLabel, replyError, type Transfers } from './transfer.ts'
import { encodeRequest, FETCH_PROTOCOL, Op, readReply, Status, StreamReader, u16le } from './wire.ts'

/** What to recover: an owner's newest complete version, or a given version (e.g. the recovery point). */
export interface RecoverRequest {
  owner: PeerId
  version?: number
  epoch?: number
  /**
   * Where to look for holders when no manifest of the owner is known (a node that joined after
   * it was gossiped): these peers are asked what they hold (LIST). Default: every connected peer.
   */
  peers?: readonly PeerId[]
}

/** How a recovery went: which fragments it used, and which it could not. */
export interface RecoveryReport {
  owner: PeerId
  rank: number
  version: number
  epoch: number
  k: number
  m: number
  /** Fragment indices the state was decoded from, and who sent them. */
  used: Array<{ index: number; holder: PeerId }>
  /** Fragments that could not be fetched (holder gone, timed out, not found). */
  missing: Array<{ index: number; holder: PeerId; reason: string }>
  /** Fragments that arrived corrupt or did not match the manifest (treated as erasures). */
  corrupt: Array<{ index: number; holder: PeerId; reason: string }>
  /** Where holders came from: a gossiped manifest or LIST replies. */
  source: 'manifest' | 'list'
}

/** A recovered state. */
export interface Recovered {
  state: RankState
  /** The verified serialized state (what decodeState read; `state`'s buffers may view into it). */
  bytes: Uint8Array
  report: RecoveryReport
}

/** The stripe a recovery fetches: its identity, checks, and the holder of each fragment index. */
export interface RecoveryPlan {
  owner: PeerId
  rank: number
  version: number
  epoch: number
  k: number
  m: number
  stateChecksum: bigint
  holders: Map<number, PeerId>
  /** Fragment digests from the manifest (undefined when the plan came from LIST replies). */
  digests: bigint[] | undefined
  source: 'manifest' | 'list'
}

/** What a recovery client uses. */
export interface RecoveryClientDeps {
  self: PeerId
  /** This node's own fragments, read without a stream. */
  store: Pick<FragmentStore, 'get' | 'list'>
  transfers: Pick<Transfers, 'open' | 'watchdog' | 'idleMs'>
  /** The newest known manifest of `owner` matching version and epoch where given. */
  manifest: (owner: PeerId, version?: number, epoch?: number) => Manifest | undefined
  /** Connected peers, asked with LIST when no manifest is known. */
  peers: () => PeerId[]
  /** Decodes and verifies the fetched fragments (shared with placement). */
  coder: Pick<SnapshotCoder, 'assemble'>
  /** Aborted when the service stops: ends every recovery in flight. */
  signal: AbortSignal
  log?: Logger
  metrics?: MetricsRegistry
}

/**
 * Recovers an owner's state from its holders: any k valid fragments, fetched in parallel
 * (FETCH_PROTOCOL) from whichever holders answer; a holder that dies, times out or serves a
 * corrupt fragment costs one fetch, and the next index is asked for instead.
 */
export interface RecoveryClient {
  /**
   * Fetches, decodes and verifies. Settles when its signal fires even if a transfer inside it
   * stopped listening (wedged below the idle timeouts): callers can always give up on it.
   */
  recover(req: RecoverRequest, options?: { signal?: AbortSignal }): Promise<Recovered>
}

interface FetchContext {
  deps: RecoveryClientDeps
  corrupt: Counter | undefined
}

/** Creates the recovery client of one node. */
export function createRecoveryClient(deps: RecoveryClientDeps): RecoveryClient {
  const ctx: FetchContext = {
    deps,
    corrupt:
      deps.metrics === undefined
        ? undefined
        : defineCounter(deps.metrics, {
            name: 'zeromesh_snapshot_corrupt_fragments_total',
            help: 'Fragments fetched for recovery that were corrupt or did not match their manifest'
          })
  }
  return {
    recover(req, options = {}) {
      const outer = options.signal === undefined ? deps.signal : AbortSignal.any([options.signal, deps.signal])
      return settleOnAbort(outer, recoverUnder(ctx, req, outer), () => {})
    }
  }
}

async function recoverUnder(ctx: FetchContext, req: RecoverRequest, outer: AbortSignal): Promise<Recovered> {
  const { deps } = ctx
  throwIfAborted(outer)
  const plan = await planFor(deps, req, outer)
  const round = startFetchRound(ctx, plan, outer)
  await round.enough
  await round.finish()
  throwIfAborted(outer)
  const report: RecoveryReport = {
    owner: plan.owner,
    rank: plan.rank,
    version: plan.version,
    epoch: plan.epoch,
    k: plan.k,
    m: plan.m,
    used: [],
    missing: round.missing.sort((a, b) => a.index - b.index),
    corrupt: round.corrupt.sort((a, b) => a.index - b.index),
    source: plan.source
  }
  const unrecoverable = (missing: number[], corrupt: number[]): UnrecoverableError =>
    new UnrecoverableError({ owner: plan.owner, rank: plan.rank, version: plan.version, k: plan.k, m: plan.m, missing, corrupt })
  if (round.got.size < plan.k)
    throw unrecoverable(
      report.missing.map(x => x.index),
      report.corrupt.map(x => x.index)
    )
  const entries = [...round.got.entries()].sort((a, b) => a[0] - b[0]).slice(0, plan.k)
  let assembled: Awaited<ReturnType<SnapshotCoder['assemble']>>
  try {
    assembled = await deps.coder.assemble(
      entries.map(([, v]) => v.f),
      plan.k,
      plan.m,
      { signal: outer }
    )
  } catch (err) {
    if (err instanceof TooFewFragmentsError) throw unrecoverable(err.missing, err.corrupt)
    throw err
  }
  report.used = entries.map(([index, v]) => ({ index, holder: v.holder }))
  deps.log?.info(
    { owner: plan.owner, version: plan.version, used: report.used.length, missing: report.missing.length, corrupt: report.corrupt.length },
    'snapshot recovered'
  )
  return { state: decodeState(assembled.state), bytes: assembled.state, report }
}

/** The holders to fetch from: a known manifest's, or else what the peers say they hold (LIST). */
async function planFor(deps: RecoveryClientDeps, req: RecoverRequest, signal: AbortSignal): Promise<RecoveryPlan> {
  const mf = deps.manifest(req.owner, req.version, req.epoch)
  if (mf !== undefined) {
    return {
      owner: mf.owner,
      rank: mf.rank,
      version: mf.version,
      epoch: mf.epoch,
      k: mf.k,
      m: mf.m,
      stateChecksum: mf.stateChecksum,
      holders: new Map(mf.holders.map((h, i) => [i, h])),
      digests: mf.digests,
      source: 'manifest'
    }
  }
  const peers = req.peers ?? [deps.self, ...deps.peers()]
  const lists = await Promise.allSettled(peers.filter(p => p !== req.owner).map(async p => ({ peer: p, labels: await listAt(deps, p, req.owner, signal) })))
  return planFromLists(
    req,
    lists.flatMap(r => (r.status === 'fulfilled' ? [r.value] : [])),
    peers.length
  )
}

/**
 * Chooses the stripe to fetch from LIST replies: the newest (version, then epoch) with at least
 * k fragment indices held, each index from the first peer that reported it. Throws
 * UnrecoverableError when stripes are held but none has k fragments, NoSnapshotError when none
 * is held at all (`asked` peers were asked).
 */
export function planFromLists(req: RecoverRequest, replies: ReadonlyArray<{ peer: PeerId; labels: readonly FragmentLabel[] }>, asked: number): RecoveryPlan {
  const groups = new Map<string, { l: FragmentLabel; holders: Map<number, PeerId> }>()
  for (const reply of replies) {
    for (const l of reply.labels) {
      if ((req.version !== undefined && l.version !== req.version) || (req.epoch !== undefined && l.epoch !== req.epoch)) continue
      const key = `${l.version}/${l.epoch}/${l.stateChecksum}/${l.k}/${l.m}`
      let g = groups.get(key)
      if (g === undefined) {
        g = { l, holders: new Map() }
        groups.set(key, g)
      }
      if (!g.holders.has(l.index)) g.holders.set(l.index, reply.peer)
    }
  }
  const best = [...groups.values()].filter(g => g.holders.size >= g.l.k).sort((a, b) => b.l.version - a.l.version || b.l.epoch - a.l.epoch)[0]
  if (best === undefined) {
    const partial = [...groups.values()].sort((a, b) => b.l.version - a.l.version)[0]
    if (partial !== undefined) {
      const l = partial.l
      const all = Array.from({ length: l.k + l.m }, (_, i) => i)
      throw new UnrecoverableError({
        owner: req.owner,
        rank: l.rank,
        version: l.version,
        k: l.k,
        m: l.m,
        missing: all.filter(i => !partial.holders.has(i)),
        corrupt: []
      })
    }
    throw new NoSnapshotError(
      `no snapshot of ${req.owner}${req.version === undefined ? '' : ` version ${req.version}`} is known or held by any of ${asked} peers`,
      { owner: req.owner }
    )
  }
  const l = best.l
  return {
    owner: req.owner,
    rank: l.rank,
    version: l.version,
    epoch: l.epoch,
    k: l.k,
    m: l.m,
    stateChecksum: l.stateChecksum,
    holders: best.holders,
    digests: undefined,
    source: 'list'
  }
}

/** One fetch round: k workers take fragment indices in order until k fragments are in. */
interface FetchRound {
  got: Map<number, { f: SnapshotFragment; holder: PeerId }>
  missing: RecoveryReport['missing']
  corrupt: RecoveryReport['corrupt']
  /** Resolves once k fragments are in or every worker ran out of indices. */
  enough: Promise<void>
  /** Aborts the fetches still running and waits for the workers to end. */
  finish(): Promise<unknown>
}

function startFetchRound(ctx: FetchContext, plan: RecoveryPlan, outer: AbortSignal): FetchRound {
  // Systematic code: data fragments first (no decoding work when they all arrive), then parity.
  const queue = [...plan.holders.keys()].sort((a, b) => a - b)
  const round: Omit<FetchRound, 'enough' | 'finish'> = { got: new Map(), missing: [], corrupt: [] }
  for (let i = 0; i < plan.k + plan.m; i++) {
    if (!plan.holders.has(i)) round.missing.push({ index: i, holder: '', reason: 'no holder known' })
  }
  const ctl = new AbortController()
  const signal = AbortSignal.any([outer, ctl.signal])
  let wake: () => void = () => {}
  const enough = new Promise<void>(resolve => {
    wake = resolve
  })
  let active = 0
  const worker = async (): Promise<void> => {
    active++
    try {
      while (round.got.size < plan.k && !signal.aborted) {
        const index = queue.shift()
        if (index === undefined) return
        const holder = plan.holders.get(index)!
        try {
          const f = await fetchOne(ctx.deps, plan, index, holder, signal)
          round.got.set(index, { f, holder })
        } catch (err) {
          if (signal.aborted) return
          recordFailure(ctx, plan, round, index, holder, err as Error)
        }
      }
    } finally {
      active--
      if (round.got.size >= plan.k || active === 0) wake()
    }
  }
  const workers = Array.from({ length: Math.min(plan.k, queue.length) }, () => worker())
  if (workers.length === 0) wake()
  return {
    ...round,
    enough,
    finish() {
      ctl.abort()
      return Promise.allSettled(workers)
    }
  }
}

/** A failed fetch: corrupt (a protocol error about the fragment itself) or missing (anything else). */
function recordFailure(ctx: FetchContext, plan: RecoveryPlan, round: Pick<FetchRound, 'missing' | 'corrupt'>, index: number, holder: PeerId, e: Error): void {
  const isCorrupt = e instanceof ProtocolError && e.code !== SnapshotErrorCode.NOT_FOUND && e.code !== SnapshotErrorCode.REQUEST_MALFORMED
  if (!isCorrupt) {
    round.missing.push({ index, holder, reason: `${e.name}: ${e.message}` })
    return
  }
  round.corrupt.push({ index, holder, reason: `${e.code}: ${e.message}` })
  ctx.corrupt?.inc()
  ctx.deps.log?.warn({ owner: plan.owner, version: plan.version, index, holder, code: e.code }, 'corrupt snapshot fragment treated as an erasure')
}

/** Checks a fetched fragment against the plan: its label, its segments, its manifest digest. */
function checkFetched(plan: RecoveryPlan, index: number, holder: PeerId, f: SnapshotFragment): SnapshotFragment {
  const l = f.label
  if (
    l.owner !== plan.owner ||
    l.version !== plan.version ||
    l.epoch !== plan.epoch ||
    l.index !== index ||
    l.k !== plan.k ||
    l.m !== plan.m ||
    l.stateChecksum !== plan.stateChecksum
  ) {
    throw snapshotError(
      SnapshotErrorCode.FRAGMENT_CORRUPT,
      `fragment from ${holder} is labelled ${l.owner}@${l.version}/${l.epoch} #${l.index}, asked for ${plan.owner}@${plan.version}/${plan.epoch} #${index}`
    )
  }
  verifyFragment(f)
  if (plan.digests !== undefined && fragmentDigest(f.segments) !== plan.digests[index]) {
    throw snapshotError(SnapshotErrorCode.FRAGMENT_HASH, `fragment ${index} from ${holder} does not match its manifest digest`)
  }
  return f
}

/** One fragment, from this node's store or by a GET to its holder, checked against the plan. */
async function fetchOne(deps: RecoveryClientDeps, plan: RecoveryPlan, index: number, holder: PeerId, signal: AbortSignal): Promise<SnapshotFragment> {
  if (holder === deps.self) {
    const f = deps.store.get(plan.owner, plan.version, plan.epoch, index)
    if (f === undefined) throw snapshotError(SnapshotErrorCode.NOT_FOUND, `fragment ${index} not held locally`, {}, 'ignore')
    return checkFetched(plan, index, holder, { label: f.label, segments: f.segments })
  }
  const { transfers } = deps
  const stream = await transfers.open(holder, FETCH_PROTOCOL, signal, `fetch from ${holder}`)
  const dog = transfers.watchdog(stream, `fetch from ${holder}`)
  const off = abortOnSignal(signal, stream)
  try {
    const reader = new StreamReader(stream, dog.poke)
    await stream.write(encodeRequest(Op.GET, plan.owner, plan.version, plan.epoch, index), { signal })
    await stream.end()
    const reply = await readReply(reader)
    if (reply.status !== Status.OK) throw replyError(reply, holder)
    const head = await reader.read(LABEL_HEAD_BYTES, 'label')
    const len = labelLength(head)
    const label = decodeLabel(joinLabel(head, await reader.read(len - LABEL_HEAD_BYTES, 'label')))
    const segments: Uint8Array[] = []
    for (const size of segmentFrameSizes(label)) segments.push(await reader.read(size, 'fragment segment'))
    return checkFetched(plan, index, holder, { label, segments })
  } catch (err) {
    stream.abort(err as Error)
    if (dog.timedOut()) throw new TransferTimeoutError(`fetch of fragment ${index} from ${holder} made no progress for ${transfers.idleMs} ms`)
    throw err
  } finally {
    dog.done()
    off()
  }
}

/** The labels `peer` holds for `owner` (a LIST; this node's own store read directly). */
async function listAt(deps: RecoveryClientDeps, peer: PeerId, owner: PeerId, signal: AbortSignal): Promise<FragmentLabel[]> {
  if (peer === deps.self) return deps.store.list(owner)
  const { transfers } = deps
  const stream = await transfers.open(peer, FETCH_PROTOCOL, signal, `list at ${peer}`)
  const dog = transfers.watchdog(stream, `list from ${peer}`)
  const off = abortOnSignal(signal, stream)
  try {
    const reader = new StreamReader(stream, dog.poke)
    await stream.write(encodeRequest(Op.LIST, owner), { signal })
    await stream.end()
    const reply = await readReply(reader)
    if (reply.status !== Status.OK) throw replyError(reply, peer)
    const n = u16le(await reader.read(2, 'list count'))
    checkCap('snapshot list entries', n, SNAPSHOT_LIMITS.maxListEntries)
    const out: FragmentLabel[] = []
    for (let i = 0; i < n; i++) {
      const head = await reader.read(LABEL_HEAD_BYTES, 'label')
      const len = labelLength(head)
      out.push(decodeLabel(joinLabel(head, await reader.read(len - LABEL_HEAD_BYTES, 'label'))))
    }
    return out.filter(l => l.owner === owner)
  } catch (err) {
    stream.abort(err as Error)
    throw err
  } finally {
    dog.done()
    off()
  }
}
