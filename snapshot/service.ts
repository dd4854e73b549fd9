import {
  AbortError, InvalidArgumentError, ProtocolError, throwIfAborted, settleOnAbort, checkCap,
  defineCounter, type Clock, type Counter, type Logger, type MetricsRegistry
} from '../core/index.ts'
import { createErasureCoder, TooFewFragmentsError, type ErasureCoder, type ErasureCoderName } from '../codec/index.ts'
import type { ByteStream, PeerId, PeerNet, View } from '../mesh/index.ts'
import { createCapturer, type Capturer, type CaptureTicket } from './capture.ts'
import {
  NoSnapshotError, PlacementFailedError, snapshotError, SnapshotErrorCode, StoreFullError, TransferTimeoutError, UnrecoverableError
} from './errors.ts'
import {
  assembleStateAsync, decodeLabel, encodeLabel, fragmentDigest, LABEL_HEAD_BYTES, labelLength, segmentFrameSizes, stripeStateAsync, verifyFragment,
  type FragmentLabel, type SnapshotFragment
} from './fragment.ts'
import { SNAPSHOT_LIMITS } from './limits.ts'
import { decodeManifest, encodeManifest, MANIFEST_TOPIC, type Manifest } from './manifest.ts'
import { placeStripe, validateStripeParams } from './placement.ts'
import { decodeState, type RankState } from './state.ts'
import { createFragmentStore, type FragmentStore, type RecoveryPoint } from './store.ts'
import { encodeReply, encodeRequest, Op, readReply, readRequest, Status, StreamReader, u16le, writeAll } from './wire.ts'

/** Stream protocol: an owner pushes one fragment to its holder. */
export const PUT_PROTOCOL = '/zeromesh/snapshot/put/1.0.0'
/** Stream protocol: fetch one fragment (GET) or the labels held for an owner (LIST). */
export const FETCH_PROTOCOL = '/zeromesh/snapshot/fetch/1.0.0'

export interface SnapshotServiceInit {
  /** Data fragments per stripe. */
  k: number
  /** Parity fragments per stripe: any m holders may be lost. */
  m: number
  /** Erasure coder ('simd' default, 'wasm'); both produce the same bytes. */
  coder?: ErasureCoderName
  /** Payload bytes per stripe segment (default SNAPSHOT_LIMITS.segmentBytes). */
  segmentBytes?: number
  /** This node's FragmentStore cap (default SNAPSHOT_LIMITS.defaultStoreBytes). */
  storeCapBytes?: number
  /** A transfer with no bytes moving for this long is abandoned, and recovery moves on to another holder (ms). */
  idleTimeoutMs?: number
  /** FUTURE_EPOCH retries of a put, and the wait between them. */
  putRetries?: number
  putRetryMs?: number
  /** Re-place the newest own snapshot under every new view (default true). */
  autoRestripe?: boolean
}

export interface SnapshotDeps {
  net: PeerNet
  clock: Clock
  log?: Logger
  metrics?: MetricsRegistry
}

/** A placed stripe. */
export interface PlaceResult {
  manifest: Manifest
  /** Holders that already had their fragment (a retried put). */
  duplicates: number
}

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

export interface RecoveryReport {
  owner: PeerId
  rank: number
  version: number
  epoch: number
  k: number
  m: number
  /** Fragment indices the state was decoded from, and who sent them. */
  used: Array<{ index: number, holder: PeerId }>
  /** Fragments that could not be fetched (holder gone, timed out, not found). */
  missing: Array<{ index: number, holder: PeerId, reason: string }>
  /** Fragments that arrived corrupt or did not match the manifest (treated as erasures). */
  corrupt: Array<{ index: number, holder: PeerId, reason: string }>
  /** Where holders came from: a gossiped manifest or LIST replies. */
  source: 'manifest' | 'list'
}

export interface Recovered {
  state: RankState
  /** The verified serialized state (what decodeState read; `state`'s buffers may view into it). */
  bytes: Uint8Array
  report: RecoveryReport
}

export interface SnapshotService {
  readonly store: FragmentStore
  start(): Promise<void>
  stop(): Promise<void>
  /** Installs a view: puts are checked against it, placements use it, and (autoRestripe) the newest own snapshot is re-placed under it. */
  setView(view: View): void
  view(): View | undefined
  /** Double-buffered asynchronous capture (see capture.ts for the trainer's contract). */
  capture(state: RankState): CaptureTicket<PlaceResult>
  /** Re-places the newest own snapshot under the current view (what autoRestripe does). */
  restripe(): CaptureTicket<PlaceResult> | undefined
  /** Waits until no capture is queued or placing. */
  idle(): Promise<void>
  /** Newest own placed snapshot (sealed bytes), for local rollback and the disk tier. */
  retained(): { step: number, bytes: Uint8Array } | undefined
  /** Stripes and places sealed state bytes now under the current view. */
  place(sealed: Uint8Array, options?: { signal?: AbortSignal }): Promise<PlaceResult>
  /** Fetches any k valid fragments in parallel from their holders, decodes and verifies. */
  recover(req: RecoverRequest, options?: { signal?: AbortSignal }): Promise<Recovered>
  /** Manifests known for `owner`, newest first. */
  manifests(owner: PeerId): Manifest[]
  /** Newest version complete for every member of the current view, under its epoch. */
  recoveryPoint(): RecoveryPoint | undefined
  /** Drops manifests and held fragments of a departed owner once its state lives elsewhere. */
  forget(owner: PeerId): void
}

/** Creates the snapshot service of one node. */
export function createSnapshotService (init: SnapshotServiceInit, deps: SnapshotDeps): SnapshotService {
  const { net, clock } = deps
  const self = net.self.id
  const log = deps.log?.child({ component: 'snapshot' })
  const k = init.k
  const m = init.m
  validateStripeParams(k, m, k + m + 1)
  const segmentBytes = init.segmentBytes ?? SNAPSHOT_LIMITS.segmentBytes
  if (!Number.isSafeInteger(segmentBytes) || segmentBytes < 1 || segmentBytes > 0xffffffff) throw new InvalidArgumentError(`segmentBytes must be an integer in [1, 2^32), got ${segmentBytes}`)
  const idleMs = init.idleTimeoutMs ?? SNAPSHOT_LIMITS.defaultIdleTimeoutMs
  // Coding a large state gives the event loop back every few MiB (a zero-delay sleep on the
  // node's clock: a macrotask on real time, an ordered timer in the simulator).
  const breathe = (): Promise<void> => clock.sleep(0)
  const putRetries = init.putRetries ?? SNAPSHOT_LIMITS.defaultPutRetries
  const putRetryMs = init.putRetryMs ?? SNAPSHOT_LIMITS.defaultPutRetryMs
  const coders = new Map<string, ErasureCoder>()
  const coderFor = (kk: number, mm: number): ErasureCoder => {
    const key = `${kk}/${mm}`
    let c = coders.get(key)
    if (c === undefined) {
      c = createErasureCoder({ k: kk, m: mm, impl: init.coder })
      coders.set(key, c)
    }
    return c
  }
  const store = createFragmentStore({ self, capBytes: init.storeCapBytes }, { log, metrics: deps.metrics })
  const manifests = new Map<PeerId, Manifest[]>()
  let current: View | undefined
  let rp: RecoveryPoint | undefined
  let started = false
  const stopCtl = new AbortController()
  const unsubs: Array<() => void> = []
  let mCorrupt: Counter | undefined
  let mPlaced: Counter | undefined
  if (deps.metrics !== undefined) {
    mCorrupt = defineCounter(deps.metrics, { name: 'zeromesh_snapshot_corrupt_fragments_total', help: 'Fragments fetched for recovery that were corrupt or did not match their manifest' })
    mPlaced = defineCounter(deps.metrics, { name: 'zeromesh_snapshot_placed_bytes_total', help: 'Fragment bytes pushed to holders' })
  }

  // ---- idle timeouts: a transfer that moves no bytes for idleMs is aborted ----
  const watchdog = (stream: ByteStream, what: string): { poke: () => void, done: () => void, timedOut: () => boolean } => {
    let fired = false
    let id = clock.setTimeout(fire, idleMs)
    function fire (): void {
      fired = true
      stream.abort(new TransferTimeoutError(`${what}: no progress for ${idleMs} ms`))
    }
    return {
      poke () { clock.clearTimeout(id); if (!fired) id = clock.setTimeout(fire, idleMs) },
      done () { clock.clearTimeout(id) },
      timedOut: () => fired
    }
  }
  // Opening a stream is bounded too: a dial to a peer that died without closing its
  // connection can otherwise wait for the transport's own timeout, or forever.
  const openWithin = async (peer: PeerId, protocol: string, signal: AbortSignal, what: string): Promise<ByteStream> => {
    const ctl = new AbortController()
    const id = clock.setTimeout(() => ctl.abort(new TransferTimeoutError(`${what}: opening a stream made no progress for ${idleMs} ms`)), idleMs)
    try {
      const both = AbortSignal.any([signal, ctl.signal])
      return await settleOnAbort(both, net.open(peer, protocol, { signal: both }), st => st.abort())
    } catch (err) {
      if (ctl.signal.aborted && !signal.aborted) throw ctl.signal.reason as Error
      throw err
    } finally {
      clock.clearTimeout(id)
    }
  }
  const onAbort = (signal: AbortSignal, stream: ByteStream): () => void => {
    const fn = (): void => stream.abort(new AbortError('snapshot transfer aborted'))
    signal.addEventListener('abort', fn, { once: true })
    return () => signal.removeEventListener('abort', fn)
  }

  // ---- manifests and the recovery point ----
  const applyManifest = (mf: Manifest): void => {
    let list = manifests.get(mf.owner)
    if (list === undefined) {
      if (manifests.size >= SNAPSHOT_LIMITS.maxManifestOwners) {
        const members = new Set(current?.members.map(x => x.id) ?? [])
        const victim = [...manifests.keys()].find(o => !members.has(o))
        if (victim === undefined) return
        manifests.delete(victim)
      }
      list = []
      manifests.set(mf.owner, list)
    }
    if (list.some(x => x.version === mf.version && x.epoch === mf.epoch)) return
    list.push(mf)
    list.sort((a, b) => b.version - a.version || b.epoch - a.epoch)
    if (list.length > SNAPSHOT_LIMITS.maxManifestsPerOwner) list.length = SNAPSHOT_LIMITS.maxManifestsPerOwner
    store.markComplete(mf.owner, mf.version, mf.epoch)
    updateRecoveryPoint()
  }

  const updateRecoveryPoint = (): void => {
    const v = current
    if (v === undefined) return
    let common: Set<number> | undefined
    for (const mem of v.members) {
      // A member that never placed a snapshot (a spare) holds no state to protect.
      const all = manifests.get(mem.id)
      if (all === undefined || all.length === 0) continue
      const versions = new Set(all.filter(x => x.epoch === v.epoch).map(x => x.version))
      common = common === undefined ? versions : new Set([...common].filter(x => versions.has(x)))
      if (common.size === 0) return
    }
    if (common === undefined) return
    const version = Math.max(...common)
    if (rp !== undefined && (rp.epoch > v.epoch || (rp.epoch === v.epoch && rp.version >= version))) return
    rp = { version, epoch: v.epoch }
    log?.debug({ version, epoch: v.epoch }, 'snapshot recovery point')
    store.setRecoveryPoint(rp)
  }

  // ---- holder side: PUT and FETCH handlers ----
  const handlePut = async (stream: ByteStream): Promise<void> => {
    const dog = watchdog(stream, 'put')
    const reader = new StreamReader(stream, dog.poke)
    let reservation: ReturnType<FragmentStore['reserve']> | undefined
    try {
      const head = await reader.read(LABEL_HEAD_BYTES, 'label')
      const len = labelLength(head)
      const rest = await reader.read(len - LABEL_HEAD_BYTES, 'label')
      const whole = new Uint8Array(len)
      whole.set(head)
      whole.set(rest, LABEL_HEAD_BYTES)
      const label = decodeLabel(whole)
      try {
        reservation = store.reserve(label)
      } catch (err) {
        const code = err instanceof ProtocolError ? err.code : err instanceof StoreFullError ? SnapshotErrorCode.STORE_FULL : undefined
        if (code === undefined) throw err
        await stream.write(encodeReply(Status.ERROR, code, (err as Error).message))
        await stream.end()
        return
      }
      if (reservation.duplicate) {
        await stream.write(encodeReply(Status.DUPLICATE))
        await stream.end()
        return
      }
      await stream.write(encodeReply(Status.OK))
      const segments: Uint8Array[] = []
      for (const size of segmentFrameSizes(label)) segments.push(await reader.read(size, 'fragment segment'))
      const r = reservation
      reservation = undefined
      try {
        store.commit(r, segments)
      } catch (err) {
        if (!(err instanceof ProtocolError)) throw err
        await stream.write(encodeReply(Status.ERROR, err.code, err.message))
        await stream.end()
        return
      }
      await stream.write(encodeReply(Status.OK))
      await stream.end()
    } catch (err) {
      log?.debug({ peer: stream.remote, err: (err as Error).message }, 'snapshot put failed')
      stream.abort(err as Error)
    } finally {
      dog.done()
      if (reservation !== undefined) store.release(reservation)
    }
  }

  const handleFetch = async (stream: ByteStream): Promise<void> => {
    const dog = watchdog(stream, 'fetch')
    const reader = new StreamReader(stream, dog.poke)
    try {
      const req = await readRequest(reader)
      if (req.op === Op.LIST) {
        const labels = store.list(req.owner).map(encodeLabel)
        await stream.write(encodeReply(Status.OK))
        const count = new Uint8Array(2)
        new DataView(count.buffer).setUint16(0, labels.length, true)
        await stream.write(count)
        for (const l of labels) await stream.write(l)
      } else {
        const f = store.get(req.owner, req.version, req.epoch, req.index)
        if (f === undefined) {
          await stream.write(encodeReply(Status.ERROR, SnapshotErrorCode.NOT_FOUND, `no fragment ${req.index} of ${req.owner}@${req.version}/${req.epoch}`))
        } else {
          await stream.write(encodeReply(Status.OK))
          await stream.write(encodeLabel(f.label))
          for (const seg of f.segments) {
            await writeAll(stream, seg)
            dog.poke()
          }
        }
      }
      await stream.end()
    } catch (err) {
      log?.debug({ peer: stream.remote, err: (err as Error).message }, 'snapshot fetch failed')
      stream.abort(err as Error)
    } finally {
      dog.done()
    }
  }

  const replyError = (reply: { code: string, message: string }, holder: PeerId): ProtocolError =>
    snapshotError((Object.values(SnapshotErrorCode) as string[]).includes(reply.code) ? reply.code as typeof SnapshotErrorCode.NOT_FOUND : SnapshotErrorCode.REQUEST_MALFORMED, `${holder}: ${reply.message}`, { holder, code: reply.code }, 'ignore')

  // ---- owner side: put one fragment ----
  const putOnce = async (holder: PeerId, f: SnapshotFragment, signal: AbortSignal): Promise<'stored' | 'duplicate'> => {
    const stream = await openWithin(holder, PUT_PROTOCOL, signal, `put to ${holder}`)
    const dog = watchdog(stream, `put to ${holder}`)
    const off = onAbort(signal, stream)
    try {
      const reader = new StreamReader(stream, dog.poke)
      await stream.write(encodeLabel(f.label), { signal })
      const first = await readReply(reader)
      if (first.status === Status.ERROR) throw replyError(first, holder)
      if (first.status === Status.DUPLICATE) {
        await stream.end()
        return 'duplicate'
      }
      for (const seg of f.segments) {
        await writeAll(stream, seg, signal)
        dog.poke()
      }
      await stream.end()
      const last = await readReply(reader)
      if (last.status === Status.ERROR) throw replyError(last, holder)
      mPlaced?.inc(f.label.bodyBytes)
      return 'stored'
    } catch (err) {
      stream.abort(err as Error)
      if (dog.timedOut()) throw new TransferTimeoutError(`put to ${holder} made no progress for ${idleMs} ms`)
      throw err
    } finally {
      dog.done()
      off()
    }
  }

  const put = async (holder: PeerId, f: SnapshotFragment, signal: AbortSignal): Promise<'stored' | 'duplicate'> => {
    for (let attempt = 0; ; attempt++) {
      try {
        return await putOnce(holder, f, signal)
      } catch (err) {
        if (!(err instanceof ProtocolError) || err.code !== SnapshotErrorCode.FUTURE_EPOCH || attempt >= putRetries) throw err
        await clock.sleep(putRetryMs, { signal })
      }
    }
  }

  // A manifest goes to every connected peer as a direct message (the mesh is a full mesh)
  // rather than through gossipsub: a gossip message is signed and each receiver verifies it,
  // which at one manifest per rank per step cost more CPU than placing the fragments
  // (docs/PERFORMANCE.md). Receivers check the same thing: the sender is the owner. A peer
  // that misses it (not connected yet) asks holders with LIST when it needs the state.
  const announceManifest = async (bytes: Uint8Array): Promise<void> => {
    await Promise.allSettled(net.peers().map(p => net.send(p.id, MANIFEST_TOPIC, bytes)))
  }

  const place = async (sealed: Uint8Array, options: { signal?: AbortSignal } = {}): Promise<PlaceResult> => {
    const signal = options.signal === undefined ? stopCtl.signal : AbortSignal.any([options.signal, stopCtl.signal])
    throwIfAborted(signal)
    const v = current
    if (v === undefined) throw new InvalidArgumentError('no view installed: cannot place a snapshot')
    const rank = v.members.findIndex(x => x.id === self)
    if (rank < 0) throw new InvalidArgumentError(`${self} is not a member of view ${v.epoch}`)
    const coder = coderFor(k, m)
    const frags = await stripeStateAsync(sealed, { owner: self, rank, epoch: v.epoch, coder, segmentBytes }, breathe)
    throwIfAborted(signal)
    const holders = placeStripe(v, rank, k, m)
    const results = await Promise.allSettled(frags.map((f, i) => put(holders[i]!, f, signal)))
    throwIfAborted(signal)
    const failed = results.flatMap((r, i) => r.status === 'rejected' ? [{ index: i, holder: holders[i]!, reason: (r.reason as Error).name + ': ' + (r.reason as Error).message }] : [])
    const l = frags[0]!.label
    if (failed.length > 0) {
      log?.warn({ version: l.version, epoch: v.epoch, failed: failed.length }, 'snapshot placement incomplete')
      throw new PlacementFailedError(self, l.version, failed)
    }
    const manifest: Manifest = {
      owner: self,
      rank,
      epoch: v.epoch,
      version: l.version,
      k,
      m,
      stateBytes: l.stateBytes,
      stateChecksum: l.stateChecksum,
      holders,
      digests: frags.map(f => fragmentDigest(f.segments))
    }
    applyManifest(manifest)
    await announceManifest(encodeManifest(manifest))
    return { manifest, duplicates: results.filter(r => r.status === 'fulfilled' && r.value === 'duplicate').length }
  }

  // ---- recovery ----
  interface Plan {
    owner: PeerId
    rank: number
    version: number
    epoch: number
    k: number
    m: number
    stateChecksum: bigint
    holders: Map<number, PeerId>
    digests: bigint[] | undefined
    source: 'manifest' | 'list'
  }

  const listRemote = async (peer: PeerId, owner: PeerId, signal: AbortSignal): Promise<FragmentLabel[]> => {
    if (peer === self) return store.list(owner)
    const stream = await openWithin(peer, FETCH_PROTOCOL, signal, `list at ${peer}`)
    const dog = watchdog(stream, `list from ${peer}`)
    const off = onAbort(signal, stream)
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
        const whole = new Uint8Array(len)
        whole.set(head)
        whole.set(await reader.read(len - LABEL_HEAD_BYTES, 'label'), LABEL_HEAD_BYTES)
        out.push(decodeLabel(whole))
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

  const planFor = async (req: RecoverRequest, signal: AbortSignal): Promise<Plan> => {
    const known = (manifests.get(req.owner) ?? []).filter(x => (req.version === undefined || x.version === req.version) && (req.epoch === undefined || x.epoch === req.epoch))
    const mf = known[0]
    if (mf !== undefined) {
      return { owner: mf.owner, rank: mf.rank, version: mf.version, epoch: mf.epoch, k: mf.k, m: mf.m, stateChecksum: mf.stateChecksum, holders: new Map(mf.holders.map((h, i) => [i, h])), digests: mf.digests, source: 'manifest' }
    }
    // No manifest: ask the peers what they hold, and take the newest stripe with k fragments.
    const peers = req.peers ?? [self, ...net.peers().map(p => p.id)]
    const lists = await Promise.allSettled(peers.filter(p => p !== req.owner).map(async p => ({ peer: p, labels: await listRemote(p, req.owner, signal) })))
    const groups = new Map<string, { l: FragmentLabel, holders: Map<number, PeerId> }>()
    for (const r of lists) {
      if (r.status !== 'fulfilled') continue
      for (const l of r.value.labels) {
        if ((req.version !== undefined && l.version !== req.version) || (req.epoch !== undefined && l.epoch !== req.epoch)) continue
        const key = `${l.version}/${l.epoch}/${l.stateChecksum}/${l.k}/${l.m}`
        let g = groups.get(key)
        if (g === undefined) {
          g = { l, holders: new Map() }
          groups.set(key, g)
        }
        if (!g.holders.has(l.index)) g.holders.set(l.index, r.value.peer)
      }
    }
    const best = [...groups.values()].filter(g => g.holders.size >= g.l.k).sort((a, b) => b.l.version - a.l.version || b.l.epoch - a.l.epoch)[0]
    if (best === undefined) {
      const partial = [...groups.values()].sort((a, b) => b.l.version - a.l.version)[0]
      if (partial !== undefined) {
        const l = partial.l
        const all = Array.from({ length: l.k + l.m }, (_, i) => i)
        throw new UnrecoverableError({ owner: req.owner, rank: l.rank, version: l.version, k: l.k, m: l.m, missing: all.filter(i => !partial.holders.has(i)), corrupt: [] })
      }
      throw new NoSnapshotError(`no snapshot of ${req.owner}${req.version === undefined ? '' : ` version ${req.version}`} is known or held by any of ${peers.length} peers`, { owner: req.owner })
    }
    const l = best.l
    return { owner: req.owner, rank: l.rank, version: l.version, epoch: l.epoch, k: l.k, m: l.m, stateChecksum: l.stateChecksum, holders: best.holders, digests: undefined, source: 'list' }
  }

  const fetchOne = async (plan: Plan, index: number, holder: PeerId, signal: AbortSignal): Promise<SnapshotFragment> => {
    const check = (f: SnapshotFragment): SnapshotFragment => {
      const l = f.label
      if (l.owner !== plan.owner || l.version !== plan.version || l.epoch !== plan.epoch || l.index !== index || l.k !== plan.k || l.m !== plan.m || l.stateChecksum !== plan.stateChecksum) {
        throw snapshotError(SnapshotErrorCode.FRAGMENT_CORRUPT, `fragment from ${holder} is labelled ${l.owner}@${l.version}/${l.epoch} #${l.index}, asked for ${plan.owner}@${plan.version}/${plan.epoch} #${index}`)
      }
      verifyFragment(f)
      if (plan.digests !== undefined && fragmentDigest(f.segments) !== plan.digests[index]) {
        throw snapshotError(SnapshotErrorCode.FRAGMENT_HASH, `fragment ${index} from ${holder} does not match its manifest digest`)
      }
      return f
    }
    if (holder === self) {
      const f = store.get(plan.owner, plan.version, plan.epoch, index)
      if (f === undefined) throw snapshotError(SnapshotErrorCode.NOT_FOUND, `fragment ${index} not held locally`, {}, 'ignore')
      return check({ label: f.label, segments: f.segments })
    }
    const stream = await openWithin(holder, FETCH_PROTOCOL, signal, `fetch from ${holder}`)
    const dog = watchdog(stream, `fetch from ${holder}`)
    const off = onAbort(signal, stream)
    try {
      const reader = new StreamReader(stream, dog.poke)
      await stream.write(encodeRequest(Op.GET, plan.owner, plan.version, plan.epoch, index), { signal })
      await stream.end()
      const reply = await readReply(reader)
      if (reply.status !== Status.OK) throw replyError(reply, holder)
      const head = await reader.read(LABEL_HEAD_BYTES, 'label')
      const len = labelLength(head)
      const whole = new Uint8Array(len)
      whole.set(head)
      whole.set(await reader.read(len - LABEL_HEAD_BYTES, 'label'), LABEL_HEAD_BYTES)
      const label = decodeLabel(whole)
      const segments: Uint8Array[] = []
      for (const size of segmentFrameSizes(label)) segments.push(await reader.read(size, 'fragment segment'))
      return check({ label, segments })
    } catch (err) {
      stream.abort(err as Error)
      if (dog.timedOut()) throw new TransferTimeoutError(`fetch of fragment ${index} from ${holder} made no progress for ${idleMs} ms`)
      throw err
    } finally {
      dog.done()
      off()
    }
  }

  // A recovery settles when its signal fires even if a transfer inside it stopped listening
  // (wedged below the idle timeouts): callers can always give up on it.
  const recover = (req: RecoverRequest, options: { signal?: AbortSignal } = {}): Promise<Recovered> => {
    const outer = options.signal === undefined ? stopCtl.signal : AbortSignal.any([options.signal, stopCtl.signal])
    return settleOnAbort(outer, recoverUnder(req, outer), () => {})
  }
  const recoverUnder = async (req: RecoverRequest, outer: AbortSignal): Promise<Recovered> => {
    throwIfAborted(outer)
    const plan = await planFor(req, outer)
    const coder = coderFor(plan.k, plan.m)
    // Systematic code: data fragments first (no decoding work when they all arrive), then parity.
    const queue = [...plan.holders.keys()].sort((a, b) => a - b)
    const got = new Map<number, { f: SnapshotFragment, holder: PeerId }>()
    const missing: RecoveryReport['missing'] = []
    const corrupt: RecoveryReport['corrupt'] = []
    for (let i = 0; i < plan.k + plan.m; i++) {
      if (!plan.holders.has(i)) missing.push({ index: i, holder: '', reason: 'no holder known' })
    }
    const ctl = new AbortController()
    const signal = AbortSignal.any([outer, ctl.signal])
    let wake: () => void = () => {}
    const enough = new Promise<void>(resolve => { wake = resolve })
    let active = 0
    const worker = async (): Promise<void> => {
      active++
      try {
        while (got.size < plan.k && !signal.aborted) {
          const index = queue.shift()
          if (index === undefined) return
          const holder = plan.holders.get(index)!
          try {
            const f = await fetchOne(plan, index, holder, signal)
            got.set(index, { f, holder })
          } catch (err) {
            if (signal.aborted) return
            const e = err as Error
            const isCorrupt = err instanceof ProtocolError && err.code !== SnapshotErrorCode.NOT_FOUND && err.code !== SnapshotErrorCode.REQUEST_MALFORMED
            if (isCorrupt) {
              corrupt.push({ index, holder, reason: `${(err as ProtocolError).code}: ${e.message}` })
              mCorrupt?.inc()
              log?.warn({ owner: plan.owner, version: plan.version, index, holder, code: (err as ProtocolError).code }, 'corrupt snapshot fragment treated as an erasure')
            } else {
              missing.push({ index, holder, reason: `${e.name}: ${e.message}` })
            }
          }
        }
      } finally {
        active--
        if (got.size >= plan.k || active === 0) wake()
      }
    }
    const workers = Array.from({ length: Math.min(plan.k, queue.length) }, () => worker())
    if (workers.length === 0) wake()
    await enough
    ctl.abort()
    await Promise.allSettled(workers)
    throwIfAborted(outer)
    const report: RecoveryReport = {
      owner: plan.owner,
      rank: plan.rank,
      version: plan.version,
      epoch: plan.epoch,
      k: plan.k,
      m: plan.m,
      used: [],
      missing: missing.sort((a, b) => a.index - b.index),
      corrupt: corrupt.sort((a, b) => a.index - b.index),
      source: plan.source
    }
    if (got.size < plan.k) {
      throw new UnrecoverableError({ owner: plan.owner, rank: plan.rank, version: plan.version, k: plan.k, m: plan.m, missing: report.missing.map(x => x.index), corrupt: report.corrupt.map(x => x.index) })
    }
    const entries = [...got.entries()].sort((a, b) => a[0] - b[0]).slice(0, plan.k)
    let assembled: Awaited<ReturnType<typeof assembleStateAsync>>
    try {
      assembled = await assembleStateAsync(entries.map(([, v]) => v.f), coder, breathe)
    } catch (err) {
      if (err instanceof TooFewFragmentsError) {
        throw new UnrecoverableError({ owner: plan.owner, rank: plan.rank, version: plan.version, k: plan.k, m: plan.m, missing: err.missing, corrupt: err.corrupt })
      }
      throw err
    }
    report.used = entries.map(([index, v]) => ({ index, holder: v.holder }))
    log?.info({ owner: plan.owner, version: plan.version, used: report.used.length, missing: report.missing.length, corrupt: report.corrupt.length }, 'snapshot recovered')
    return { state: decodeState(assembled.state), bytes: assembled.state, report }
  }

  const capturer: Capturer<PlaceResult> = createCapturer((sealed, signal) => place(sealed, { signal }))

  const service: SnapshotService = {
    store,
    async start () {
      if (started) return
      started = true
      net.handle(PUT_PROTOCOL, handlePut)
      net.handle(FETCH_PROTOCOL, handleFetch)
      unsubs.push(net.subscribe(MANIFEST_TOPIC, {
        validate (msg) {
          try {
            const mf = decodeManifest(msg.data)
            return mf.owner === msg.from ? 'accept' : 'reject'
          } catch (err) {
            return err instanceof ProtocolError ? err.action : 'reject'
          }
        },
        deliver (msg) { applyManifest(decodeManifest(msg.data)) }
      }))
    },
    async stop () {
      if (!started) return
      started = false
      capturer.stop()
      stopCtl.abort()
      net.unhandle(PUT_PROTOCOL)
      net.unhandle(FETCH_PROTOCOL)
      for (const u of unsubs.splice(0)) u()
      store.clear()
    },
    setView (v) {
      if (current !== undefined && v.epoch <= current.epoch) return
      const first = current === undefined
      current = { epoch: v.epoch, members: v.members.map(x => ({ ...x })) }
      store.setView(current)
      updateRecoveryPoint()
      if (!first && init.autoRestripe !== false && current.members.some(x => x.id === self)) capturer.requeue()
    },
    view: () => current,
    capture: state => capturer.capture(state),
    restripe: () => capturer.requeue(),
    idle: () => capturer.idle(),
    retained: () => capturer.retained(),
    place,
    recover,
    manifests: owner => [...(manifests.get(owner) ?? [])],
    recoveryPoint: () => rp,
    forget (owner) {
      manifests.delete(owner)
      store.forget(owner)
    }
  }
  return service
}
