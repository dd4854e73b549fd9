import type { Socket } from 'node:net'
import type { Connection, Stream } from '@libp2p/interface'
import { z } from 'zod'
import { AbortError, type Clock, type Logger } from '../../core/index.ts'
import { createEnvelopeCodec } from '../../codec/index.ts'
import { MESH_LIMITS } from '../limits.ts'
import { MessageReader, writeMessage } from '../lp.ts'
import type { PeerId } from '../peernet.ts'
import { freePort, PunchFailedError, simultaneousOpen } from '../punch.ts'
import { describe } from './errors.ts'
import { openStream, type MeshNode } from './node.ts'
import { isIpLiteral, onLink } from './reach.ts'
import { Libp2pByteStream } from './stream-adapter.ts'

/**
 * The signalling of a bulk-channel hole punch (../punch.ts), on a libp2p stream that rides
 * whatever connection the pair has (a relayed one included):
 *
 *   initiator -> responder : offer  { ip, port, lan }   where to aim at the initiator
 *   responder -> initiator : answer { ip, port, lan }   where to aim at the responder
 *                            refuse { why }
 *
 * `ip` is the sender's external address (its NAT's), `lan` the one it binds. A peer whose `lan`
 * is on a network this host is attached to sits on the same LAN, behind the same NAT, which
 * need not forward a connection from inside back inside (hairpinning; Linux masquerade does
 * not): both ends then aim at each other's `lan` (each decides alike: a LAN is symmetric).
 *
 * Right after the answer both ends connect() to each other from the ports they named. The
 * initiator becomes the TLS client of the bulk connection; the responder hands its socket to
 * the bulk channel's listener (`onSocket`). Only admitted peers are answered, at most
 * MESH_LIMITS.punch.maxInFlightPerPeer at once each.
 */
export const PUNCH_PROTOCOL = '/zeromesh/punch/1.0.0'
/** The refusal of a responder with MESH_LIMITS.punch.maxInFlightPerPeer punches of ours in flight. */
const BUSY = 'busy'
const MAX_MESSAGE = 256
const zIp = z.string().max(45).refine(isIpLiteral, 'not an IP address')
const codec = createEnvelopeCodec(
  {
    offer: z.strictObject({ ip: zIp, port: z.int().min(1).max(65535), lan: zIp }),
    answer: z.strictObject({ ip: zIp, port: z.int().min(1).max(65535), lan: zIp }),
    refuse: z.strictObject({ why: z.string().max(128) })
  },
  { maxBytes: MAX_MESSAGE }
)

/** Where to aim at a peer: its external address, or its own one when it is on our LAN. */
function aim(peer: { ip: string; lan: string }): string {
  return onLink(peer.lan) ? peer.lan : peer.ip
}

export interface PuncherInit {
  clock: Clock
  log: Logger
  /** The IP the bulk channel listens on: punches bind it. */
  bindHost: () => string
  /** Where peers should aim at us (reach.ts), or undefined when we do not know. */
  advertisedIp: () => string | undefined
  isAdmitted: (peer: PeerId) => boolean
  /** The responder's socket, connected: the bulk channel serves it. */
  onSocket: (socket: Socket) => void
  /** A punch ended (either role). */
  onResult: (peer: PeerId, ok: boolean) => void
}

export class Puncher {
  private readonly init: PuncherInit
  private readonly inFlight = new Map<PeerId, number>()
  private node: MeshNode | undefined

  constructor(init: PuncherInit) {
    this.init = init
  }

  async attach(node: MeshNode): Promise<void> {
    this.node = node
    await node.handle(PUNCH_PROTOCOL, this.respond, { runOnLimitedConnection: true, maxInboundStreams: 64 })
  }

  /** Punches a TCP connection to `peer`; rejects with PunchFailedError (or AbortError). */
  async request(peer: PeerId, signal?: AbortSignal): Promise<Socket> {
    const node = this.node
    const host = this.init.bindHost()
    const ip = this.init.advertisedIp()
    if (node === undefined || ip === undefined) throw new PunchFailedError('no address to offer: this node does not know where peers see it yet')
    const deadline = this.deadline(signal)
    let ok = false
    try {
      const port = await freePort(host)
      const raw = await openStream(node, peer, PUNCH_PROTOCOL, { signal: deadline })
      const s = new Libp2pByteStream(raw, peer, PUNCH_PROTOCOL)
      // The reader takes no signal: the deadline resets the stream instead.
      deadline.addEventListener('abort', () => s.abort(), { once: true })
      let remote: { ip: string; port: number; lan: string }
      try {
        await writeMessage(s, codec.encode('offer', { ip, port, lan: host }), { signal: deadline })
        const reply = await new MessageReader(s, MAX_MESSAGE).next()
        if (reply === undefined) throw new PunchFailedError(`${peer} closed the punch stream`)
        const env = codec.decode(reply)
        if (env.type !== 'answer') {
          const why = env.type === 'refuse' ? env.payload.why : env.type
          throw new PunchFailedError(`${peer} refused the punch: ${why}`, { busy: why === BUSY })
        }
        remote = env.payload
        await s.end().catch(() => {})
      } catch (err) {
        s.abort()
        throw err
      }
      const socket = await simultaneousOpen(
        { localHost: host, localPort: port, remoteHost: aim(remote), remotePort: remote.port },
        { clock: this.init.clock, signal: deadline }
      )
      ok = true
      return socket
    } catch (err) {
      if (signal?.aborted === true) throw new AbortError('punch aborted')
      throw err instanceof PunchFailedError ? err : new PunchFailedError(`punch to ${peer} failed: ${describe(err)}`, {}, { cause: err })
    } finally {
      this.init.onResult(peer, ok)
    }
  }

  /** The responder's side. */
  private readonly respond = (raw: Stream, conn: Connection): void => {
    const peer = conn.remotePeer.toString()
    const s = new Libp2pByteStream(raw, peer, PUNCH_PROTOCOL)
    const busy = this.inFlight.get(peer) ?? 0
    if (!this.init.isAdmitted(peer)) {
      s.abort()
      return
    }
    if (busy >= MESH_LIMITS.punch.maxInFlightPerPeer) {
      // Busy is not unpunchable: the asker uses libp2p for this one stream and tries again next time.
      writeMessage(s, codec.encode('refuse', { why: BUSY }))
        .then(() => s.end())
        .catch(() => s.abort())
      return
    }
    this.inFlight.set(peer, busy + 1)
    const deadline = this.deadline()
    // A peer that opens the stream and says nothing is cut off at the deadline.
    deadline.addEventListener('abort', () => s.abort(), { once: true })
    const host = this.init.bindHost()
    const run = async (): Promise<void> => {
      const msg = await new MessageReader(s, MAX_MESSAGE).next()
      if (msg === undefined) return
      const env = codec.decode(msg)
      if (env.type !== 'offer') throw new PunchFailedError(`expected an offer, got ${env.type}`)
      const ip = this.init.advertisedIp()
      if (ip === undefined) {
        await writeMessage(s, codec.encode('refuse', { why: 'no known address' }), { signal: deadline })
        await s.end()
        return
      }
      const port = await freePort(host)
      await writeMessage(s, codec.encode('answer', { ip, port, lan: host }), { signal: deadline })
      void s.end().catch(() => {})
      let ok = false
      try {
        const socket = await simultaneousOpen(
          { localHost: host, localPort: port, remoteHost: aim(env.payload), remotePort: env.payload.port },
          { clock: this.init.clock, signal: deadline }
        )
        ok = true
        this.init.onSocket(socket)
      } finally {
        this.init.onResult(peer, ok)
      }
    }
    run()
      .catch(err => {
        s.abort()
        this.init.log.debug({ peer, err: describe(err) }, 'hole punch (responder) failed')
      })
      .finally(() => {
        const n = (this.inFlight.get(peer) ?? 1) - 1
        if (n <= 0) this.inFlight.delete(peer)
        else this.inFlight.set(peer, n)
      })
  }

  /** A signal that fires at the punch deadline, or with `signal`. */
  private deadline(signal?: AbortSignal): AbortSignal {
    const ac = new AbortController()
    // Signalling plus the connect loop, whose own deadline (deadlineMs) ends it first with the
    // reason of its last failure.
    const timer = this.init.clock.setTimeout(
      () => ac.abort(new PunchFailedError('punch deadline passed')),
      MESH_LIMITS.punch.deadlineMs + MESH_LIMITS.punch.signalMs
    )
    ac.signal.addEventListener('abort', () => this.init.clock.clearTimeout(timer), { once: true })
    return signal === undefined ? ac.signal : AbortSignal.any([signal, ac.signal])
  }
}
