import { multiaddr } from '@multiformats/multiaddr'
import type { Clock, Logger } from '../../core/index.ts'
import { MESH_LIMITS } from '../limits.ts'
import type { PeerId } from '../peernet.ts'
import { describe } from './errors.ts'
import { internals, type MeshNode } from './node.ts'
import { isRelayed } from './reach.ts'

/**
 * The reservations a private member holds. Once reach.ts says this node is behind a NAT, it
 * asks admitted peers it is connected to directly (those it dialled first: it reached them, so
 * others can) for a Circuit Relay v2 slot until it holds MESH_LIMITS.relay.perMember, by
 * listening on `<relay address>/p2p-circuit` (libp2p's transport makes and refreshes the
 * reservation, and adds the relayed address to the ones the announcer publishes). A relay that
 * refuses (it is private too, or not of this run) or fails is left alone for
 * MESH_LIMITS.relay.retryMs. Checked every `intervalMs`.
 */
export class RelayClient {
  private readonly init: {
    clock: Clock
    log: Logger
    intervalMs: number
    isPrivate: () => boolean
    admitted: () => Iterable<PeerId>
  }
  private node: MeshNode | undefined
  private timer: number | undefined
  private readonly refused = new Map<PeerId, number>()
  private pending = false

  constructor(init: RelayClient['init']) {
    this.init = init
  }

  start(node: MeshNode): void {
    this.node = node
    this.timer = this.init.clock.setTimeout(this.tick, Math.min(500, this.init.intervalMs))
  }

  stop(): void {
    if (this.timer !== undefined) this.init.clock.clearTimeout(this.timer)
    this.timer = undefined
    this.node = undefined
  }

  /** The relays we hold a reservation on (from our relayed listen addresses). */
  relays(): PeerId[] {
    const out = new Set<PeerId>()
    for (const a of this.node?.getMultiaddrs() ?? []) {
      const parts = a.getComponents()
      const at = parts.findIndex(c => c.name === 'p2p-circuit')
      if (at > 0 && parts[at - 1]?.name === 'p2p' && parts[at - 1]!.value !== undefined) out.add(parts[at - 1]!.value!)
    }
    return [...out]
  }

  private readonly tick = (): void => {
    if (this.node === undefined) return
    if (!this.pending && this.init.isPrivate()) {
      this.pending = true
      this.reserve()
        .catch(err => this.init.log.debug({ err: describe(err) }, 'relay reservation round failed'))
        .finally(() => {
          this.pending = false
        })
    }
    this.timer = this.init.clock.setTimeout(this.tick, this.init.intervalMs)
  }

  /** One round: asks candidates, one at a time, until enough reservations are held. */
  private async reserve(): Promise<void> {
    const node = this.node
    if (node === undefined) return
    const now = this.init.clock.monotonic()
    const held = new Set(this.relays())
    for (const peer of this.candidates()) {
      if (held.size >= MESH_LIMITS.relay.perMember) return
      if (held.has(peer) || (this.refused.get(peer) ?? 0) > now) continue
      const conn = node.getConnections().find(c => c.remotePeer.toString() === peer && !isRelayed(c) && c.status === 'open')
      if (conn === undefined) continue
      const addr = multiaddr(`${conn.remoteAddr.toString().replace(/\/p2p\/[^/]+$/, '')}/p2p/${peer}/p2p-circuit`)
      try {
        await internals(node).transportManager.listen([addr])
        if (this.relays().includes(peer)) {
          held.add(peer)
          this.init.log.info({ relay: peer }, 'holding a relay reservation')
        } else {
          throw new Error('the reservation did not yield a relayed address')
        }
      } catch (err) {
        this.refused.set(peer, this.init.clock.monotonic() + MESH_LIMITS.relay.retryMs)
        if (this.refused.size > MESH_LIMITS.maxTrackedPeers) this.refused.delete(this.refused.keys().next().value!)
        this.init.log.debug({ relay: peer, err: describe(err) }, 'relay reservation refused or failed')
      }
    }
  }

  /** Admitted peers we dialled directly first, then the other directly connected ones. */
  private candidates(): PeerId[] {
    const node = this.node
    if (node === undefined) return []
    const admitted = new Set(this.init.admitted())
    const direct = node.getConnections().filter(c => !isRelayed(c) && admitted.has(c.remotePeer.toString()))
    const outbound = direct.filter(c => c.direction === 'outbound').map(c => c.remotePeer.toString())
    return [...new Set([...outbound, ...direct.map(c => c.remotePeer.toString())])]
  }
}
