import { z } from 'zod'
import type { Clock } from '../../core/index.ts'
import { createEnvelopeCodec } from '../../codec/index.ts'
import type { MembershipStatus, PeerId, View } from '../../mesh/index.ts'
import type { NodeEvent } from '../events.ts'
import type { TrainStatus } from '../train/config.ts'
import type { SnapshotPlacement } from '../train/trainer.ts'

/**
 * What a node's dashboard shows (node/dashboard/server.ts serves it): the view, each rank's
 * progress, the loss curve, bytes per tier, the snapshot placement map, a timeline and the
 * run's config. Built from this node's own events and status, and from `dash/progress`: every
 * training node gossips a small summary of itself once a second, so any node's page shows
 * every rank (a spare's page too). Everything kept is bounded (DASHBOARD_LIMITS).
 */

/** Caps of the dashboard's memory and gossip (docs/LIMITS.md). */
export const DASHBOARD_LIMITS = Object.freeze({
  /** Points one series keeps; at the cap every other point is dropped (the curve keeps its shape). */
  maxSeriesPoints: 4096,
  /** Timeline entries kept (the oldest go first). */
  maxTimeline: 1000,
  /** Views kept in the epoch history. */
  maxViews: 256,
  /** Nodes whose progress is kept (members of the view are never dropped for others). */
  maxNodes: 1024,
  /** One `dash/progress` gossip message (bytes), checked before decoding. */
  maxProgressBytes: 2048,
  /** How often a training node gossips its progress (while a page is served somewhere), and the page is updated (ms). */
  tickMs: 1000,
  /** How often a node serving a page tells the others to gossip their progress (ms; gossip.ts). */
  watchEveryMs: 10_000,
  /** How long a node gossips its progress after the last such beacon (ms). */
  watchTimeoutMs: 30_000
})

export const PROGRESS_TOPIC = 'dash/progress'

const tiers = z.strictObject({ host: z.number().min(0), zone: z.number().min(0), wan: z.number().min(0) })
const progressSchema = z.strictObject({
  zone: z.string().max(128),
  host: z.string().max(128),
  role: z.enum(['waiting', 'rank', 'spare', 'done', 'failed']),
  rank: z
    .int()
    .min(0)
    .max(1 << 20)
    .optional(),
  step: z.int().min(0),
  steps: z.int().min(0),
  loss: z.number().optional(),
  tokensPerS: z.number().min(0).optional(),
  bytes: tiers,
  snapshotStep: z.int().min(0).optional(),
  phase: z.string().max(160),
  dashboard: z.string().max(256).optional()
})
const progressCodec = createEnvelopeCodec({ progress: progressSchema }, { maxBytes: DASHBOARD_LIMITS.maxProgressBytes })

/** One node's progress, as it gossips it. */
export type Progress = z.output<typeof progressSchema>

export function encodeProgress(p: Progress): Uint8Array {
  return progressCodec.encode('progress', p)
}
/** Decodes a `dash/progress` message; throws a ProtocolError on anything malformed. */
export function decodeProgress(data: Uint8Array): Progress {
  return progressCodec.decode(data).payload
}

/** A series' points: [ms since the node started, ...values]. */
export type Point = number[]

/**
 * An append-only series bounded at maxSeriesPoints: when full, every other point goes and
 * `gen` grows, so a reader that kept `gen` and a count knows whether to append or start over.
 */
export class Series {
  points: Point[] = []
  gen = 0
  push(p: Point): void {
    if (this.points.length >= DASHBOARD_LIMITS.maxSeriesPoints) {
      this.points = this.points.filter((_, i) => i % 2 === 1)
      this.gen++
    }
    this.points.push(p)
  }
}

export interface TimelineEntry {
  /** ms since the node started. */
  t: number
  kind: 'started' | 'view' | 'lost' | 'joined' | 'paused' | 'resumed' | 'recovery' | 'done' | 'failed' | 'spare' | 'stopping'
  text: string
  /** How long it took (a recovery), ms. */
  ms?: number
}

export interface MemberRow {
  id: PeerId
  zone: string
  host: string
  rank: number
  /** A training rank (rank < world size), a spare, or a member of a mesh that does not train. */
  role: 'rank' | 'spare' | 'member'
  live: boolean
  self: boolean
}

/** The page's whole state (GET /api/state; the stream's first message). */
export interface DashboardState {
  run: string
  self: { id: PeerId; zone: string; host: string }
  /** ms since this node started. */
  t: number
  /** The run's settings, as this node was started with them. */
  config: Record<string, string | number | boolean>
  view: { epoch: number; worldSize: number | undefined; members: MemberRow[]; joining: PeerId[]; paused: boolean; leader: PeerId | undefined }
  views: Array<{ t: number; epoch: number; members: number; lost: PeerId[]; joined: PeerId[] }>
  /** Each node's latest progress (own status, or its gossip), with when it was heard. */
  nodes: Record<PeerId, Progress & { t: number }>
  placement: SnapshotPlacement[]
  timeline: TimelineEntry[]
  /** Series: `loss` [t, step, loss]; `tiers` [t, host, zone, wan] (bytes sent by every node together); `rank:<id>` [t, step, tokens/s]. */
  series: Record<string, { gen: number; points: Point[] }>
}

/** What the recorder reads from its node. */
export interface DashboardSources {
  clock: Clock
  run: string
  self: { id: PeerId; zone: string; host: string }
  config: Record<string, string | number | boolean>
  /** This node's own dashboard URL, gossiped so other pages can link to it. */
  dashboard?: () => string | undefined
  membership: () => MembershipStatus
  training?: () => TrainStatus
  placement?: () => SnapshotPlacement[]
  /** The run's world size now (undefined: the node does not train). */
  worldSize: () => number | undefined
}

/** Collects what the page shows; see the module comment. */
export class DashboardRecorder {
  private readonly src: DashboardSources
  private readonly started: number
  private readonly timeline: TimelineEntry[] = []
  private readonly views: DashboardState['views'] = []
  private readonly nodes = new Map<PeerId, Progress & { t: number }>()
  readonly series = new Map<string, Series>()
  private lastView: View | undefined
  private lastLossStep = -1

  constructor(src: DashboardSources) {
    this.src = src
    this.started = src.clock.monotonic()
  }

  /** ms since the node started. */
  now(): number {
    return Math.round(this.src.clock.monotonic() - this.started)
  }

  /** One of this node's events (node/events.ts). */
  event(e: NodeEvent): void {
    const t = this.now()
    switch (e.type) {
      case 'started':
        this.note({ t, kind: 'started', text: `node ${short(e.peerId)} started in zone ${e.zone}, host ${e.host}` })
        break
      case 'paused':
        this.note({ t, kind: e.paused ? 'paused' : 'resumed', text: e.paused ? 'lost contact with the majority: training paused' : 'majority restored' })
        break
      case 'step':
        if (typeof e.loss === 'number') this.loss(t, e.step, e.loss)
        break
      case 'recovery':
        this.note({
          t,
          kind: 'recovery',
          ms: e.ms,
          text: `${e.mode} recovery of rank(s) ${e.lost.join(', ')} from step ${e.fromStep} in ${Math.round(e.ms)} ms; world size ${e.worldSize}`
        })
        break
      case 'done':
        this.note({
          t,
          kind: 'done',
          text: `training done at step ${e.step}${typeof e.evalLoss === 'number' ? `, held-out loss ${e.evalLoss.toFixed(4)}` : ''}`
        })
        break
      case 'failed':
        this.note({ t, kind: 'failed', text: `training failed: ${e.message}` })
        break
      case 'spare':
        this.note({ t, kind: 'spare', text: 'the run ended without this spare' })
        break
      case 'stopping':
        this.note({ t, kind: 'stopping', text: 'the node is leaving the run' })
        break
      default:
        break
    }
  }

  /** A view this node installed. */
  view(v: View): void {
    const t = this.now()
    const before = new Set(this.lastView?.members.map(m => m.id) ?? [])
    const now = new Set(v.members.map(m => m.id))
    const lost = [...before].filter(id => !now.has(id))
    const joined = this.lastView === undefined ? [] : [...now].filter(id => !before.has(id))
    const previous = this.lastView
    this.lastView = v
    this.views.push({ t, epoch: v.epoch, members: v.members.length, lost, joined })
    if (this.views.length > DASHBOARD_LIMITS.maxViews) this.views.shift()
    const name = (id: PeerId): string => {
      const m = v.members.find(x => x.id === id) ?? previous?.members.find(x => x.id === id) ?? this.nodes.get(id)
      return m === undefined ? short(id) : `${m.host} (${short(id)})`
    }
    if (lost.length > 0) this.note({ t, kind: 'lost', text: `lost ${lost.map(name).join(', ')}` })
    if (joined.length > 0) this.note({ t, kind: 'joined', text: `joined: ${joined.map(name).join(', ')}` })
    this.note({ t, kind: 'view', text: `view ${v.epoch}: ${v.members.length} members` })
  }

  /** A peer's gossiped progress (already decoded). */
  progress(from: PeerId, p: Progress): void {
    this.keepNode(from, { ...p, t: this.now() })
    if (p.loss !== undefined && p.role === 'rank') this.loss(this.now(), p.step, p.loss)
    this.rankPoint(from, p)
  }

  /**
   * Samples this node's own status (every tickMs): its progress row and series point, and the
   * mesh's bytes per tier. Returns the progress to gossip, or undefined when it does not train.
   */
  tick(): Progress | undefined {
    const tr = this.src.training?.()
    const t = this.now()
    let own: Progress | undefined
    if (tr !== undefined) {
      const url = this.src.dashboard?.()
      own = {
        zone: this.src.self.zone,
        host: this.src.self.host,
        role: tr.role,
        ...(tr.rank === undefined ? {} : { rank: tr.rank }),
        step: tr.step,
        steps: tr.steps,
        ...(tr.loss === undefined || !Number.isFinite(tr.loss) ? {} : { loss: tr.loss }),
        ...(tr.tokensPerS === undefined || !Number.isFinite(tr.tokensPerS) ? {} : { tokensPerS: tr.tokensPerS }),
        bytes: { ...tr.bytes },
        ...(tr.snapshotStep === undefined ? {} : { snapshotStep: tr.snapshotStep }),
        phase: tr.phase.slice(0, 160),
        ...(url === undefined ? {} : { dashboard: url })
      }
      this.keepNode(this.src.self.id, { ...own, t })
      this.rankPoint(this.src.self.id, own)
    }
    const sum = { host: 0, zone: 0, wan: 0 }
    for (const n of this.nodes.values()) {
      sum.host += n.bytes.host
      sum.zone += n.bytes.zone
      sum.wan += n.bytes.wan
    }
    if (this.nodes.size > 0) this.seriesOf('tiers').push([t, sum.host, sum.zone, sum.wan])
    return own
  }

  /** The whole state, for a new page. */
  state(): DashboardState {
    const ms = this.src.membership()
    const world = this.src.worldSize()
    const members: MemberRow[] = ms.members.map(m => ({
      id: m.id,
      zone: m.zone,
      host: m.host,
      rank: m.rank,
      role: world === undefined ? 'member' : m.rank < world ? 'rank' : 'spare',
      live: m.live,
      self: m.id === this.src.self.id
    }))
    const series: DashboardState['series'] = {}
    for (const [k, s] of this.series) series[k] = { gen: s.gen, points: s.points }
    return {
      run: this.src.run,
      self: this.src.self,
      t: this.now(),
      config: this.src.config,
      view: { epoch: ms.epoch, worldSize: world, members, joining: ms.joining, paused: ms.paused, leader: ms.leader },
      views: [...this.views],
      nodes: Object.fromEntries(this.nodes),
      placement: this.src.placement?.() ?? [],
      timeline: [...this.timeline],
      series
    }
  }

  private note(e: TimelineEntry): void {
    this.timeline.push(e)
    if (this.timeline.length > DASHBOARD_LIMITS.maxTimeline) this.timeline.shift()
  }

  /** The loss curve by step: a step replayed after a recovery (the same loss, bit for bit) is not drawn twice. */
  private loss(t: number, step: number, loss: number): void {
    if (step <= this.lastLossStep || !Number.isFinite(loss)) return
    this.lastLossStep = step
    this.seriesOf('loss').push([t, step, loss])
  }

  private rankPoint(id: PeerId, p: Progress): void {
    if (p.role !== 'rank' && p.role !== 'done') return
    const s = this.seriesOf(`rank:${id}`)
    const last = s.points.at(-1)
    if (last !== undefined && last[1] === p.step) return
    s.push([this.now(), p.step, p.tokensPerS ?? 0])
  }

  private keepNode(id: PeerId, row: Progress & { t: number }): void {
    this.nodes.delete(id)
    this.nodes.set(id, row)
    if (this.nodes.size <= DASHBOARD_LIMITS.maxNodes) return
    // Over the cap: the longest-unheard node outside the view goes (with its series).
    const members = new Set(this.src.membership().members.map(m => m.id))
    const victim = [...this.nodes.keys()].find(k => !members.has(k)) ?? this.nodes.keys().next().value!
    this.nodes.delete(victim)
    this.series.delete(`rank:${victim}`)
  }

  private seriesOf(key: string): Series {
    let s = this.series.get(key)
    if (s === undefined) {
      s = new Series()
      this.series.set(key, s)
    }
    return s
  }
}

/** The first characters of a peer id after its common prefix, for labels. */
export function short(id: PeerId): string {
  return id.length > 16 ? `…${id.slice(-8)}` : id
}
