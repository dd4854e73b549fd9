import { multiaddr, type Multiaddr } from '@multiformats/multiaddr'
import { z } from 'zod'
import type { Clock, Logger } from '../../core/index.ts'
import { createEnvelopeCodec } from '../../codec/index.ts'
import type { GossipHandler, PeerId } from '../peernet.ts'
import { MESH_LIMITS } from '../limits.ts'
import { describe } from './errors.ts'
import { dialable, offLinkPrivate } from './reach.ts'

/** The reserved gossip topic of address announcements. */
export const ANNOUNCE_TOPIC = '__addrs'
const announceCodec = createEnvelopeCodec({
  addrs: z.strictObject({ addrs: z.array(z.string().max(256)).max(16) })
})

/** An announcement of `addrs` (the first 16) as it travels on ANNOUNCE_TOPIC. */
export function encodeAnnouncement(addrs: readonly string[]): Uint8Array {
  return announceCodec.encode('addrs', { addrs: addrs.slice(0, 16) })
}

/** What the announcer needs from the PeerNet around it. */
export interface AnnouncerInit {
  clock: Clock
  log: Logger
  /** Time between announcements. */
  intervalMs: number
  /** Multiaddrs to dial at start and whenever no peer is admitted. */
  bootstrap: string[]
  /** Our own addresses, each ending in /p2p/<id>. */
  addrs: () => string[]
  publish: (topic: string, data: Uint8Array) => Promise<void>
  subscribe: (topic: string, handler: GossipHandler) => () => void
  dial: (addrs: Multiaddr | Multiaddr[], options?: { signal?: AbortSignal }) => Promise<unknown>
  /** Whether any peer is admitted. */
  hasPeers: () => boolean
  /** How many peers are admitted (a change means the mesh is still forming or healing). */
  peerCount: () => number
  /** Peers whose announcements need no dial: admitted, ourselves, or denied. */
  known: (peer: PeerId) => boolean
}

/** A peer whose addresses were announced: when to dial it again if it is not connected. */
interface Remembered {
  addrs: Multiaddr[]
  /** Redials that found it unreachable in a row. */
  fails: number
  /** Monotonic ms before which it is not dialled again. */
  next: number
}

/**
 * Address announcements, so that every pair of peers connects (gossipsub only reaches peers
 * through existing connections): each node publishes its multiaddrs (the first after at most
 * 500 ms) and dials the announced addresses of peers it has not admitted.
 *
 * A node publishes every intervalMs while the mesh around it changes, then less and less often
 * while nothing does: the wait doubles after each announcement up to
 * MESH_LIMITS.maxAnnounceIntervalMs. Anything that can mean a peer lacks our addresses resets it
 * to intervalMs: our addresses changed (a relay slot, a new interface), the number of admitted
 * peers changed (a node joined, left, or came back after a cut), or a peer we have not admitted
 * announced itself (it has not reached us yet, so it may not know where we are). Every gossip
 * message crosses every link of the mesh, a slow inter-site link too; a stable mesh of N nodes
 * announcing every 2 s moved N announcements (each up to 16 multiaddrs) through every
 * node every 2 s for nothing.
 *
 * Announcements cannot cross a partition, so a node also remembers every peer's announced
 * addresses (up to MESH_LIMITS.maxRememberedPeers) and, each period, dials again up to
 * `redialsPerPeriod` remembered peers that are not connected, each with a backoff that doubles
 * from the period up to `maxRedialBackoffMs` while it stays unreachable: when a cut zone heals,
 * both sides reconnect within a backoff period instead of waiting for a gossip path that the
 * cut removed.
 */
export class Announcer {
  private readonly init: AnnouncerInit
  private timer: number | undefined
  private running = false
  private readonly book = new Map<PeerId, Remembered>()
  /** Tentative dials in flight (see dial()), by peer. */
  private readonly tentative = new Map<PeerId, AbortController>()
  /** The publishing schedule: the current wait, when the next announcement is due, and what the last one saw. */
  private wait = 0
  private due = 0
  private seen: { addrs: string; peers: number } | undefined
  /** A peer we have not admitted announced itself since the last announcement. */
  private stranger = false

  constructor(init: AnnouncerInit) {
    this.init = init
  }

  /** Subscribes to announcements, dials the bootstrap list and schedules the first announcement. */
  start(): void {
    this.running = true
    this.init.subscribe(ANNOUNCE_TOPIC, {
      validate: m => {
        try {
          announceCodec.decode(m.data)
          return 'accept'
        } catch {
          return 'reject'
        }
      },
      deliver: m => {
        const env = announceCodec.decode(m.data)
        if (env.type !== 'addrs') return
        const addrs = env.payload.addrs.flatMap(a => {
          try {
            return [multiaddr(a)]
          } catch {
            return []
          }
        })
        if (addrs.length > 0) this.remember(m.from, addrs)
        if (this.init.known(m.from)) return
        this.stranger = true
        if (addrs.length > 0) this.dial(m.from, addrs, 'dial to announced peer failed')
      }
    })
    this.dialBootstrap()
    this.timer = this.init.clock.setTimeout(this.announce, Math.min(this.init.intervalMs, 500))
  }

  stop(): void {
    this.running = false
    if (this.timer !== undefined) this.init.clock.clearTimeout(this.timer)
  }

  /** The period's work: publish when due (see the class comment), then bootstrap and redial as every period. */
  private readonly announce = (): void => {
    if (!this.running) return
    const addrs = this.init.addrs().slice(0, 16)
    const now = this.init.clock.monotonic()
    const seen = { addrs: addrs.join(' '), peers: this.init.peerCount() }
    const changed = this.stranger || this.seen === undefined || seen.addrs !== this.seen.addrs || seen.peers !== this.seen.peers
    if (changed) {
      this.wait = this.init.intervalMs
      this.due = now
    }
    if (now >= this.due) {
      this.init.publish(ANNOUNCE_TOPIC, encodeAnnouncement(addrs)).catch(err => this.init.log.debug({ err: describe(err) }, 'address announce failed'))
      this.due = now + this.wait
      this.wait = Math.min(MESH_LIMITS.maxAnnounceIntervalMs, Math.max(this.init.intervalMs, 2 * this.wait))
    }
    this.seen = seen
    this.stranger = false
    if (!this.init.hasPeers()) this.dialBootstrap()
    this.redial()
    this.timer = this.init.clock.setTimeout(this.announce, this.init.intervalMs)
  }

  /** Records a peer's announced addresses (the newest announcement wins; heard from last, forgotten last). */
  private remember(peer: PeerId, addrs: Multiaddr[]): void {
    const had = this.book.get(peer)
    this.book.delete(peer)
    this.book.set(peer, { addrs, fails: had?.fails ?? 0, next: had?.next ?? 0 })
    if (this.book.size > MESH_LIMITS.maxRememberedPeers) this.book.delete(this.book.keys().next().value!)
  }

  /** Dials remembered peers that are not connected and are due, a few per period. */
  private redial(): void {
    const now = this.init.clock.monotonic()
    let budget: number = MESH_LIMITS.redialsPerPeriod
    for (const [peer, r] of this.book) {
      if (budget === 0) break
      if (this.init.known(peer)) {
        r.fails = 0
        r.next = 0
        continue
      }
      if (r.next > now) continue
      budget--
      r.next = now + Math.min(MESH_LIMITS.maxRedialBackoffMs, this.init.intervalMs * 2 ** r.fails)
      r.fails = Math.min(r.fails + 1, 30)
      this.dial(peer, r.addrs, 'redial of a remembered peer failed')
    }
  }

  /**
   * Dials `addrs` of `peer` (those {@link dialable} from here); a failure is logged with the
   * addresses tried and how long it took. A dial to nothing but private addresses off this
   * host's networks (another LAN's, most likely: a peer announces them before it holds a relay
   * slot) is tentative: it gives up after MESH_LIMITS.tentativeDialMs, and a later dial of that
   * peer cancels it at once. Such a dial usually gets no answer at all, and libp2p would make
   * every later dial of the peer wait behind it.
   */
  private dial(peer: PeerId, all: Multiaddr[], what: string): void {
    const addrs = dialable(all)
    if (addrs.length === 0) return
    const t0 = this.init.clock.monotonic()
    const ac = new AbortController()
    const tentative = addrs.every(offLinkPrivate)
    this.tentative.get(peer)?.abort()
    this.tentative.delete(peer)
    let timer: number | undefined
    if (tentative) {
      this.tentative.set(peer, ac)
      timer = this.init.clock.setTimeout(() => ac.abort(), MESH_LIMITS.tentativeDialMs)
    }
    this.init
      .dial(addrs, { signal: ac.signal })
      .catch(err =>
        this.init.log.debug(
          { peer, err: describe(err), addrs: addrs.map(a => a.toString()), ms: Math.round(this.init.clock.monotonic() - t0), tentative },
          what
        )
      )
      .finally(() => {
        if (timer !== undefined) this.init.clock.clearTimeout(timer)
        if (this.tentative.get(peer) === ac) this.tentative.delete(peer)
      })
  }

  private dialBootstrap(): void {
    for (const a of this.init.bootstrap) {
      this.init.dial(multiaddr(a)).catch(err => this.init.log.debug({ addr: a, err: describe(err) }, 'bootstrap dial failed'))
    }
  }
}
