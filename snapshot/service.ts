import { InvalidArgumentError, type Clock, type Logger, type MetricsRegistry } from '../core/index.ts'
import { erasureCoderCache, type ErasureCoderName } from '../codec/index.ts'
import type { PeerId, PeerNet, View } from '../mesh/index.ts'
import type { CaptureOptions, CaptureTicket } from './capture.ts'
import { createInlineCoder, type SnapshotCoder } from './coder.ts'
import { createManifestGossip } from './gossip.ts'
import { createHolder } from './holder.ts'
import { SNAPSHOT_LIMITS } from './limits.ts'
import { createManifestBook } from './manifest-book.ts'
import type { Manifest } from './manifest.ts'
import { validateStripeParams, type PlacementScope } from './placement.ts'
import { createPlacer, type PlaceResult, type PlacerInit } from './placer.ts'
import { createRecoveryClient, type RecoverRequest, type Recovered } from './recovery.ts'
import type { RankState } from './state.ts'
import { createFragmentStore, type FragmentStore, type RecoveryPoint } from './store.ts'
import { createTransfers } from './transfer.ts'

/** The erasure code and bounds of a snapshot service. */
export interface SnapshotServiceInit {
  /** Data fragments per stripe. */
  k: number
  /** Parity fragments per stripe: any m holders may be lost. */
  m: number
  /** Erasure coder of the inline snapshot coder ('simd' default, 'wasm'); both produce the same bytes. */
  coder?: ErasureCoderName
  /** Payload bytes per stripe segment (default SNAPSHOT_LIMITS.segmentBytes). */
  segmentBytes?: number
  /** This node's FragmentStore cap (default SNAPSHOT_LIMITS.defaultStoreBytes). */
  storeCapBytes?: number
  /** A transfer with no bytes moving for this long is abandoned, and recovery moves on to another holder (ms). */
  idleTimeoutMs?: number
  /** Times a put refused as FUTURE_EPOCH (the holder has not installed the view yet) is retried. */
  putRetries?: number
  /** Wait between those retries (ms). */
  putRetryMs?: number
  /** Re-place the newest own snapshot under every new view (default true). */
  autoRestripe?: boolean
  /** Where fragments go: 'spread' over hosts and zones (default) or 'zone' (the owner's zone first). */
  placement?: PlacementScope
}

/** What a snapshot service uses: the node's net and clock, and optional coder, log and metrics. */
export interface SnapshotDeps {
  net: PeerNet
  clock: Clock
  /**
   * Where checksums and erasure coding run. Default: inline on this thread, pausing on
   * `clock` (the simulator and tests). Real nodes pass a thread coder (createThreadCoder);
   * the service does not own it: whoever made it stops it.
   */
  coder?: SnapshotCoder
  log?: Logger
  metrics?: MetricsRegistry
}

/**
 * One node's snapshots: it holds other ranks' fragments (holder.ts), places its own (placer.ts),
 * recovers anyone's (recovery.ts) and tracks manifests and the recovery point
 * (manifest-book.ts, gossip.ts).
 */
export interface SnapshotService {
  readonly store: FragmentStore
  start(): Promise<void>
  stop(): Promise<void>
  /** Installs a view: puts are checked against it, placements use it, and (autoRestripe) the newest own snapshot is re-placed under it. */
  setView(view: View): void
  view(): View | undefined
  /** Double-buffered asynchronous capture (see capture.ts for the trainer's contract). */
  capture(state: RankState, options?: CaptureOptions): CaptureTicket<PlaceResult>
  /** Undefined when no kept capture waits to be placed, else a promise that resolves once none does (capture.ts). */
  room(): Promise<void> | undefined
  /** Re-places the newest own snapshot under the current view (what autoRestripe does). */
  restripe(): CaptureTicket<PlaceResult> | undefined
  /** Waits until no capture is queued or placing. */
  idle(): Promise<void>
  /** Newest own placed snapshot (sealed bytes), for local rollback and the disk tier. */
  retained(): { step: number; bytes: Uint8Array } | undefined
  /** Fragment bytes this node stored on holders so far, by the tier of the link to each. */
  placedBytes(): { host: number; zone: number; wan: number }
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

/** Creates the snapshot service of one node: the components wired over one store and one view. */
export function createSnapshotService(init: SnapshotServiceInit, deps: SnapshotDeps): SnapshotService {
  const { net, clock } = deps
  const self = net.self.id
  const log = deps.log?.child({ component: 'snapshot' })
  const placerInit = placerInitOf(init)
  // Coding a large state gives the event loop back every few MiB (a zero-delay sleep on the
  // node's clock: a macrotask on real time, an ordered timer in the simulator).
  const breathe = (): Promise<void> => clock.sleep(0)
  const coder = deps.coder ?? createInlineCoder({ coderFor: erasureCoderCache(init.coder), breathe })
  const store = createFragmentStore({ self, capBytes: init.storeCapBytes, scope: init.placement ?? 'spread' }, { log, metrics: deps.metrics })
  let current: View | undefined
  let started = false
  const lifetime = new AbortController()
  const view = (): View | undefined => current
  const transfers = createTransfers({ idleMs: init.idleTimeoutMs ?? SNAPSHOT_LIMITS.defaultIdleTimeoutMs }, { clock, net })
  const book = createManifestBook({ view, store, log })
  const gossip = createManifestGossip({ net, onManifest: mf => book.apply(mf) })
  const recovery = createRecoveryClient({
    self,
    store,
    transfers,
    manifest: book.newest,
    peers: () => net.peers().map(p => p.id),
    coder,
    signal: lifetime.signal,
    log,
    metrics: deps.metrics
  })
  const placer = createPlacer(placerInit, {
    self,
    view,
    transfers,
    clock,
    coder,
    publish: (mf: Manifest) => {
      book.apply(mf)
      return gossip.announce(mf)
    },
    signal: lifetime.signal,
    log,
    metrics: deps.metrics
  })
  const holder = createHolder({ net, store, watchdog: transfers.watchdog, log })

  return {
    store,
    async start() {
      if (started) return
      started = true
      holder.start()
      gossip.start()
    },
    async stop() {
      if (!started) return
      started = false
      placer.stop()
      lifetime.abort()
      holder.stop()
      gossip.stop()
      store.clear()
    },
    setView(v) {
      if (current !== undefined && v.epoch <= current.epoch) return
      const first = current === undefined
      current = { epoch: v.epoch, members: v.members.map(x => ({ ...x })) }
      store.setView(current)
      book.update()
      if (!first && init.autoRestripe !== false && current.members.some(x => x.id === self)) placer.restripe()
    },
    view,
    capture: (state, options) => placer.capture(state, options),
    room: () => placer.room(),
    restripe: () => placer.restripe(),
    idle: () => placer.idle(),
    retained: () => placer.retained(),
    placedBytes: () => placer.placedBytes(),
    place: placer.place,
    recover: recovery.recover,
    manifests: owner => book.list(owner),
    recoveryPoint: () => book.recoveryPoint(),
    forget(owner) {
      book.forget(owner)
      store.forget(owner)
    }
  }
}

/** Checks the stripe shape and segment size, and fills in the placement defaults. */
function placerInitOf(init: SnapshotServiceInit): PlacerInit {
  const { k, m } = init
  validateStripeParams(k, m, k + m + 1)
  const segmentBytes = init.segmentBytes ?? SNAPSHOT_LIMITS.segmentBytes
  if (!Number.isSafeInteger(segmentBytes) || segmentBytes < 1 || segmentBytes > 0xffffffff)
    throw new InvalidArgumentError(`segmentBytes must be an integer in [1, 2^32), got ${segmentBytes}`)
  return {
    k,
    m,
    segmentBytes,
    putRetries: init.putRetries ?? SNAPSHOT_LIMITS.defaultPutRetries,
    putRetryMs: init.putRetryMs ?? SNAPSHOT_LIMITS.defaultPutRetryMs,
    scope: init.placement ?? 'spread'
  }
}
