import { AbortError, settleOnAbort, type Logger } from '../../core/index.ts'
import { AuthenticationError } from '../errors.ts'
import type { ByteStream, PeerId, StreamHandler } from '../peernet.ts'
import { describe, mapOpenError } from './errors.ts'
import { openStream, type MeshNode } from './node.ts'
import { Libp2pByteStream, type OpenStreams } from './stream-adapter.ts'

/** The libp2p protocol id of a PeerNet protocol name. */
function protocolId(p: string): string {
  return `/zeromesh${p.startsWith('/') ? '' : '/'}${p}`
}

/**
 * Stream protocols on libp2p: the handler table (which the bulk channel serves too),
 * registering each handler with the node, refusing streams from peers not admitted to the
 * run, and opening libp2p streams.
 */
export class StreamProtocols {
  private readonly handlers = new Map<string, StreamHandler>()
  private readonly isAdmitted: (peer: PeerId) => boolean
  private readonly streams: OpenStreams
  private readonly log: Logger
  private node: MeshNode | undefined

  constructor(init: { isAdmitted: (peer: PeerId) => boolean; streams: OpenStreams; log: Logger }) {
    this.isAdmitted = init.isAdmitted
    this.streams = init.streams
    this.log = init.log
  }

  get(protocol: string): StreamHandler | undefined {
    return this.handlers.get(protocol)
  }

  /** Sets the handler of `protocol`, registering it at once if a node is attached. */
  set(protocol: string, handler: StreamHandler): void {
    this.handlers.set(protocol, handler)
    if (this.node !== undefined) void this.register(this.node, protocol, handler)
  }

  delete(protocol: string): void {
    this.handlers.delete(protocol)
    void this.node?.unhandle(protocolId(protocol)).catch(() => {})
  }

  /** Registers every handler with `node`, and later ones as they come. */
  async attach(node: MeshNode): Promise<void> {
    this.node = node
    for (const [protocol, handler] of this.handlers) await this.register(node, protocol, handler)
  }

  /** Opens a libp2p stream; rejects with the PeerNet errors of `open()`. */
  async open(node: MeshNode, peer: PeerId, protocol: string, signal?: AbortSignal): Promise<ByteStream> {
    let raw
    try {
      raw = await settleOnAbort(signal, openStream(node, peer, protocolId(protocol), { signal }), s => s.abort(new AbortError('open abandoned')))
    } catch (err) {
      throw mapOpenError(err, peer, protocol, signal)
    }
    return this.streams.track(new Libp2pByteStream(raw, peer, protocol))
  }

  private async register(node: MeshNode, protocol: string, handler: StreamHandler): Promise<void> {
    await node.unhandle(protocolId(protocol)).catch(() => {})
    await node.handle(
      protocolId(protocol),
      (raw, conn) => {
        const peer = conn.remotePeer.toString()
        if (!this.isAdmitted(peer)) {
          this.log.debug({ peer, protocol }, 'stream from an unauthenticated peer refused')
          raw.abort(new AuthenticationError('not authenticated to this run'))
          return
        }
        const s = this.streams.track(new Libp2pByteStream(raw, peer, protocol))
        Promise.resolve()
          .then(() => handler(s))
          .catch(err => {
            this.log.debug({ peer, protocol, err: describe(err) }, 'stream handler failed')
            s.abort(err instanceof Error ? err : new Error(String(err)))
          })
      },
      { maxInboundStreams: 256, maxOutboundStreams: 256, runOnLimitedConnection: true }
    )
  }
}
