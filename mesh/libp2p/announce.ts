import { multiaddr, type Multiaddr } from '@multiformats/multiaddr'
import { z } from 'zod'
import type { Clock, Logger } from '../../core/index.ts'
import { createEnvelopeCodec } from '../../codec/index.ts'
import type { GossipHandler, PeerId } from '../peernet.ts'
import { describe } from './errors.ts'

/** The reserved gossip topic of address announcements. */
export const ANNOUNCE_TOPIC = '__addrs'
const announceCodec = createEnvelopeCodec({
  addrs: z.strictObject({ addrs: z.array(z.string().max(256)).max(16) })
})

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
  dial: (addrs: Multiaddr | Multiaddr[]) => Promise<unknown>
  /** Whether any peer is admitted. */
  hasPeers: () => boolean
  /** Peers whose announcements need no dial: admitted, ourselves, or denied. */
  known: (peer: PeerId) => boolean
}

/**
 * Address announcements, so that every pair of peers connects (gossipsub only reaches peers
 * through existing connections): each node publishes its multiaddrs every intervalMs (the
 * first after at most 500 ms) and dials the announced addresses of peers it has not admitted.
 */
export class Announcer {
  private readonly init: AnnouncerInit
  private timer: number | undefined
  private running = false

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
        if (this.init.known(m.from)) return
        const env = announceCodec.decode(m.data)
        if (env.type !== 'addrs') return
        const addrs = env.payload.addrs.flatMap(a => {
          try {
            return [multiaddr(a)]
          } catch {
            return []
          }
        })
        if (addrs.length > 0) this.init.dial(addrs).catch(err => this.init.log.debug({ peer: m.from, err: describe(err) }, 'dial to announced peer failed'))
      }
    })
    this.dialBootstrap()
    this.timer = this.init.clock.setTimeout(this.announce, Math.min(this.init.intervalMs, 500))
  }

  stop(): void {
    this.running = false
    if (this.timer !== undefined) this.init.clock.clearTimeout(this.timer)
  }

  private readonly announce = (): void => {
    if (!this.running) return
    const addrs = this.init.addrs().slice(0, 16)
    this.init
      .publish(ANNOUNCE_TOPIC, announceCodec.encode('addrs', { addrs }))
      .catch(err => this.init.log.debug({ err: describe(err) }, 'address announce failed'))
    if (!this.init.hasPeers()) this.dialBootstrap()
    this.timer = this.init.clock.setTimeout(this.announce, this.init.intervalMs)
  }

  private dialBootstrap(): void {
    for (const a of this.init.bootstrap) {
      this.init.dial(multiaddr(a)).catch(err => this.init.log.debug({ addr: a, err: describe(err) }, 'bootstrap dial failed'))
    }
  }
}
