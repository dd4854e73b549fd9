import {
  InvalidArgumentError,
  ProtocolError,
  throwIfAborted,
  defineCounter,
  type Clock,
  type Counter,
  type Logger,
  type MetricsRegistry
} from '../core/index.ts'
import type { PeerId, View } from '../mesh/index.ts'
import { createCapturer, type CaptureTicket, type CaptureOptions } from './capture.ts'
import type { SnapshotCoder } from './coder.ts'
import { PlacementFailedError, SnapshotErrorCode, TransferTimeoutError } from './errors.ts'
import { encodeLabel, fragmentDigest, stripeLabels, type FragmentLabel, type StripeSpec } from './fragment.ts'
import type { Manifest } from './manifest.ts'
import { placeStripe, type PlacementScope } from './placement.ts'
import type { RankState } from './state.ts'
import { abortOnSignal, replyError, type Transfers } from './transfer.ts'
import { PUT_PROTOCOL, readReply, Status, StreamReader, writeAll } from './wire.ts'

/** A placed stripe. */
export interface PlaceResult {
  manifest: Manifest
  /** Holders that already had their fragment (a retried put). */
  duplicates: number
}

/** How a placer stripes and pushes (validated by the service). */
export interface PlacerInit {
  k: number
  m: number
  segmentBytes: number
  /** FUTURE_EPOCH retries of a put, and the wait between them (ms). */
  putRetries: number
  putRetryMs: number
  /** Where fragments go (placement.ts). */
  scope: PlacementScope
}

/** What a placer uses. */
export interface PlacerDeps {
  self: PeerId
  /** The view placements are made under (rank, epoch, holders). */
  view: () => View | undefined
  transfers: Pick<Transfers, 'open' | 'watchdog' | 'idleMs'>
  clock: Pick<Clock, 'sleep' | 'turn'>
  /** Seals and codes the states placed (shared with recovery). */
  coder: Pick<SnapshotCoder, 'alloc' | 'seal' | 'stripe'>
  /** Records and announces a placed stripe's manifest; placement waits for it. */
  publish: (mf: Manifest) => Promise<void>
  /** Aborted when the service stops: ends every placement in flight. */
  signal: AbortSignal
  log?: Logger
  metrics?: MetricsRegistry
}

/**
 * The sender side of snapshots: captures a rank's state (double-buffered, see capture.ts),
 * stripes it into k + m fragments, pushes fragment i to the i-th holder of the rank's placement
 * (PUT_PROTOCOL, FUTURE_EPOCH refusals retried) and publishes the manifest once every holder
 * has its fragment.
 */
export interface Placer {
  capture(state: RankState, options?: CaptureOptions): CaptureTicket<PlaceResult>
  /** Undefined when no kept capture waits to be placed, else a promise that resolves once none does (capture.ts). */
  room(): Promise<void> | undefined
  /** Re-places the newest own snapshot under the current view. */
  restripe(): CaptureTicket<PlaceResult> | undefined
  /** Waits until no capture is queued or placing. */
  idle(): Promise<void>
  /** Newest own placed snapshot (sealed bytes). */
  retained(): { step: number; bytes: Uint8Array } | undefined
  /** Stripes and places sealed state bytes now under the current view. */
  place(sealed: Uint8Array, options?: { signal?: AbortSignal }): Promise<PlaceResult>
  /** Stops capturing: the placement in flight is aborted, queued captures settle as failed. */
  stop(): void
  /** Fragment bytes this node stored on holders so far, by the tier of the link to each (same host, same zone, across zones). */
  placedBytes(): { host: number; zone: number; wan: number }
}

type PutOutcome = 'stored' | 'duplicate'

interface PutContext {
  transfers: PlacerDeps['transfers']
  clock: PlacerDeps['clock']
  retries: number
  retryMs: number
  placed: Counter | undefined
}

/** Creates the placer of one node. */
export function createPlacer(init: PlacerInit, deps: PlacerDeps): Placer {
  const { self, log } = deps
  const { k, m } = init
  const ctx: PutContext = {
    transfers: deps.transfers,
    clock: deps.clock,
    retries: init.putRetries,
    retryMs: init.putRetryMs,
    placed:
      deps.metrics === undefined
        ? undefined
        : defineCounter(deps.metrics, { name: 'zeromesh_snapshot_placed_bytes_total', help: 'Fragment bytes pushed to holders' })
  }

  const tally = { host: 0, zone: 0, wan: 0 }
  const place = async (sealed: Uint8Array, options: { signal?: AbortSignal } = {}): Promise<PlaceResult> => {
    const signal = options.signal === undefined ? deps.signal : AbortSignal.any([options.signal, deps.signal])
    throwIfAborted(signal)
    const v = deps.view()
    if (v === undefined) throw new InvalidArgumentError('no view installed: cannot place a snapshot')
    const rank = v.members.findIndex(x => x.id === self)
    if (rank < 0) throw new InvalidArgumentError(`${self} is not a member of view ${v.epoch}`)
    const spec: StripeSpec = { owner: self, rank, epoch: v.epoch, k, m, segmentBytes: init.segmentBytes }
    const labels = stripeLabels(sealed, spec)
    const holders = placeStripe(v, rank, k, m, init.scope)
    // Puts start at once and send each segment as soon as it is coded.
    const feeds = labels.map(() => new FrameFeed())
    const coding = deps.coder.stripe(sealed, spec, { signal, onSegment: (_, frames) => frames.forEach((f, i) => feeds[i]!.push(f)) }).then(
      frags => {
        for (const f of feeds) f.close()
        return frags
      },
      (err: Error) => {
        for (const f of feeds) f.close(err)
        throw err
      }
    )
    coding.catch(() => {})
    const results = await Promise.allSettled(labels.map((l, i) => put(ctx, holders[i]!, l, feeds[i]!, signal)))
    const frags = await coding
    throwIfAborted(signal)
    // Fragment bytes stored, by the tier of the link to their holder.
    const me = v.members[rank]!
    results.forEach((r, i) => {
      if (r.status !== 'fulfilled' || r.value !== 'stored') return
      const h = v.members.find(x => x.id === holders[i])
      const tier = h === undefined || h.zone !== me.zone ? 'wan' : h.host === me.host ? 'host' : 'zone'
      tally[tier] += labels[i]!.bodyBytes
    })
    const failed = failures(results, holders)
    const l = labels[0]!
    if (failed.length > 0) {
      log?.warn(
        { version: l.version, epoch: v.epoch, failed: failed.length, why: failed.map(f => `${f.holder}: ${f.reason}`) },
        'snapshot placement incomplete'
      )
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
    await deps.publish(manifest)
    return { manifest, duplicates: results.filter(r => r.status === 'fulfilled' && r.value === 'duplicate').length }
  }

  const capturer = createCapturer<PlaceResult>((sealed, signal) => place(sealed, { signal }), deps.coder, { turn: () => deps.clock.turn() })
  return {
    placedBytes: () => ({ ...tally }),
    capture: (state, options) => capturer.capture(state, options),
    room: () => capturer.room(),
    restripe: () => capturer.requeue(),
    idle: () => capturer.idle(),
    retained: () => capturer.retained(),
    place,
    stop: () => capturer.stop()
  }
}

/** The puts that failed, by fragment index. */
function failures(results: Array<PromiseSettledResult<PutOutcome>>, holders: readonly PeerId[]): Array<{ index: number; holder: PeerId; reason: string }> {
  return results.flatMap((r, i) =>
    r.status === 'rejected' ? [{ index: i, holder: holders[i]!, reason: (r.reason as Error).name + ': ' + (r.reason as Error).message }] : []
  )
}

/** Pushes one fragment, retrying while the holder has not installed the view yet (FUTURE_EPOCH). */
async function put(ctx: PutContext, holder: PeerId, label: FragmentLabel, body: FrameFeed, signal: AbortSignal): Promise<PutOutcome> {
  for (let attempt = 0; ; attempt++) {
    try {
      return await putOnce(ctx, holder, label, body, signal)
    } catch (err) {
      if (!(err instanceof ProtocolError) || err.code !== SnapshotErrorCode.FUTURE_EPOCH || attempt >= ctx.retries) throw err
      await ctx.clock.sleep(ctx.retryMs, { signal })
    }
  }
}

/** One PUT exchange (see PUT_PROTOCOL). */
async function putOnce({ transfers, placed }: PutContext, holder: PeerId, label: FragmentLabel, body: FrameFeed, signal: AbortSignal): Promise<PutOutcome> {
  const stream = await transfers.open(holder, PUT_PROTOCOL, signal, `put to ${holder}`)
  const dog = transfers.watchdog(stream, `put to ${holder}`)
  const off = abortOnSignal(signal, stream)
  try {
    const reader = new StreamReader(stream, dog.poke)
    await stream.write(encodeLabel(label), { signal })
    const first = await readReply(reader)
    if (first.status === Status.ERROR) throw replyError(first, holder)
    if (first.status === Status.DUPLICATE) {
      await stream.end()
      return 'duplicate'
    }
    for await (const seg of body.read()) {
      await writeAll(stream, seg, signal)
      dog.poke()
    }
    await stream.end()
    const last = await readReply(reader)
    if (last.status === Status.ERROR) throw replyError(last, holder)
    placed?.inc(label.bodyBytes)
    return 'stored'
  } catch (err) {
    stream.abort(err as Error)
    if (dog.timedOut()) throw new TransferTimeoutError(`put to ${holder} made no progress for ${transfers.idleMs} ms`)
    throw err
  } finally {
    dog.done()
    off()
  }
}

/**
 * One fragment's segment frames as they are coded: a put sends each as soon as it is here
 * and waits for the next; a retried put reads them again from the first. Coding failing
 * (`close(err)`) ends every reader with that error.
 */
class FrameFeed {
  private readonly frames: Uint8Array[] = []
  private ended = false
  private error: Error | undefined
  private waiters: Array<() => void> = []

  push(frame: Uint8Array): void {
    this.frames.push(frame)
    this.wake()
  }

  close(error?: Error): void {
    this.ended = true
    this.error = error
    this.wake()
  }

  async *read(): AsyncGenerator<Uint8Array> {
    for (let i = 0; ; i++) {
      while (i >= this.frames.length && !this.ended) await new Promise<void>(resolve => this.waiters.push(resolve))
      if (this.error !== undefined) throw this.error
      if (i >= this.frames.length) return
      yield this.frames[i]!
    }
  }

  private wake(): void {
    const w = this.waiters
    this.waiters = []
    for (const f of w) f()
  }
}
