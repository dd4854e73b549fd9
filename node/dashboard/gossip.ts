import type { Clock } from '../../core/index.ts'
import type { PeerNet } from '../../mesh/index.ts'
import { DASHBOARD_LIMITS, decodeProgress, encodeProgress, PROGRESS_TOPIC, type DashboardRecorder } from './model.ts'

/** Beacons of the nodes that serve a dashboard (empty messages: their arrival is the news). */
export const WATCH_TOPIC = 'dash/watch'

/** The progress gossip of one node (see {@link startProgressGossip}). */
export interface ProgressGossip {
  /** Whether this node gossips its progress now (it serves a page, or heard a beacon lately). */
  publishing(): boolean
  stop(): void
}

/**
 * A node's share of the dashboard's gossip. Every tick (DASHBOARD_LIMITS.tickMs) it samples
 * itself (`recorder.tick()`) and calls `onTick` (the page's update); it gossips its progress
 * only while somebody looks: it serves a page itself, or a node that does sent a beacon within
 * the last `watchTimeoutMs`. A serving node sends a beacon at once and every `watchEveryMs`.
 * Each gossip message crosses every link of the mesh several times (gossipsub forwards what it
 * flood-published), a slow inter-site link too: four nodes gossiping their progress every
 * second moved about 23 KiB/s between them, on runs whose pages nobody had opened.
 */
export function startProgressGossip(o: { net: PeerNet; clock: Clock; recorder: DashboardRecorder; serving: boolean; onTick?: () => void }): ProgressGossip {
  const { net, clock, recorder } = o
  const L = DASHBOARD_LIMITS
  let watchedAt = Number.NEGATIVE_INFINITY
  let running = true
  const offProgress = net.subscribe(PROGRESS_TOPIC, {
    validate: m => {
      try {
        decodeProgress(m.data)
        return 'accept'
      } catch {
        return 'reject'
      }
    },
    deliver: m => recorder.progress(m.from, decodeProgress(m.data))
  })
  const offWatch = net.subscribe(WATCH_TOPIC, {
    validate: m => (m.data.length === 0 ? 'accept' : 'reject'),
    deliver: () => {
      watchedAt = clock.monotonic()
    }
  })
  const publishing = (): boolean => o.serving || clock.monotonic() - watchedAt <= L.watchTimeoutMs
  let tickTimer: number | undefined
  let beaconTimer: number | undefined
  const tick = (): void => {
    if (!running) return
    const own = recorder.tick()
    if (own !== undefined && publishing()) net.publish(PROGRESS_TOPIC, encodeProgress(own)).catch(() => {})
    o.onTick?.()
    tickTimer = clock.setTimeout(tick, L.tickMs)
  }
  const beacon = (): void => {
    if (!running) return
    net.publish(WATCH_TOPIC, new Uint8Array(0)).catch(() => {})
    beaconTimer = clock.setTimeout(beacon, L.watchEveryMs)
  }
  tickTimer = clock.setTimeout(tick, L.tickMs)
  if (o.serving) beacon()
  return {
    publishing,
    stop() {
      running = false
      if (tickTimer !== undefined) clock.clearTimeout(tickTimer)
      if (beaconTimer !== undefined) clock.clearTimeout(beaconTimer)
      offProgress()
      offWatch()
    }
  }
}
