import { AbortError, InvalidArgumentError } from '../core/index.ts'
import {
  ByteQueue,
  MESH_LIMITS,
  PeerGoneError,
  ProtocolNotSupportedError,
  StreamResetError,
  checkChunkSize,
  checkName,
  type ByteStream,
  type PeerId
} from '../mesh/index.ts'
import { requireStartedNode, type SimLinks, type SimNode } from './net-links.ts'

function aborted(signal?: AbortSignal): boolean {
  return signal?.aborted === true
}

/**
 * One end of a simulated stream: chunks cross the fabric in order (no jitter), take their share
 * of the links they cross, and a writer waits while more than the write buffer cap is in
 * flight or unread at the other end.
 */
class SimStream implements ByteStream {
  readonly remote: PeerId
  readonly protocol: string
  readonly inbound = new ByteQueue()
  peer!: SimStream
  private readonly links: SimLinks
  private readonly from: SimNode
  private readonly to: () => SimNode
  private inFlight = 0
  private lastArrival = 0
  private readonly roomWaiters: Array<() => void> = []
  private closedWrite = false
  private failed: Error | undefined

  constructor(links: SimLinks, from: SimNode, to: () => SimNode, remote: PeerId, protocol: string) {
    this.links = links
    this.from = from
    this.to = to
    this.remote = remote
    this.protocol = protocol
  }

  fail(err: Error): void {
    this.failed ??= err
    this.inbound.fail(err)
    for (const w of this.roomWaiters.splice(0)) w()
  }

  /** Sends bytes (or the end marker) in order: a stream is FIFO, so no jitter. */
  private send(chunk: Uint8Array | 'end' | 'reset'): void {
    const to = this.to()
    const bytes = typeof chunk === 'string' ? 0 : chunk.length
    const tier = this.links.tierOf(this.from, to)
    this.inFlight += bytes
    const data = typeof chunk === 'string' ? chunk : this.links.maybeCorrupt(chunk, this.links.profile(tier))
    this.links.send(this.from, to, tier, { bytes, landed: at => this.land(to, tier, at, data, bytes) })
  }

  /** What left the path at `at` reaches the other end after the latency, in order. */
  private land(to: SimNode, tier: number, at: number, data: Uint8Array | 'end' | 'reset', bytes: number): void {
    const arrival = Math.max(this.links.arrivalAfter(this.from, to, tier, at, false), this.lastArrival)
    this.lastArrival = arrival
    this.links.deliverAt(to, arrival, () => {
      this.inFlight -= bytes
      for (const w of this.roomWaiters.splice(0)) w()
      if (data === 'end') this.peer.inbound.end()
      else if (data === 'reset') this.peer.fail(new StreamResetError(`stream reset by ${this.from.info.id}`))
      else this.peer.inbound.push(data)
    })
  }

  async write(chunk: Uint8Array, options: { signal?: AbortSignal } = {}): Promise<void> {
    checkChunkSize(chunk)
    if (options.signal?.aborted === true) throw new AbortError('write aborted')
    if (this.failed !== undefined) throw this.failed
    if (this.closedWrite) throw new InvalidArgumentError('write after end()')
    this.send(chunk)
    const cap = MESH_LIMITS.maxStreamWriteBufferBytes
    while (this.inFlight + this.peer.inbound.bytes > cap) {
      if (this.failed !== undefined) throw this.failed
      if (aborted(options.signal)) throw new AbortError('write aborted')
      // Room appears when bytes land (inFlight falls) or, once what is in flight fits, when
      // the reader reads. Each wait resolves only on such a change, never at once.
      const waits: Array<Promise<unknown>> = [new Promise<void>(resolve => this.roomWaiters.push(resolve))]
      if (this.inFlight < cap) waits.push(this.peer.inbound.waitForRoom(cap - this.inFlight, options.signal).catch(() => {}))
      if (options.signal !== undefined) waits.push(new Promise<void>(resolve => options.signal!.addEventListener('abort', () => resolve(), { once: true })))
      await Promise.race(waits)
    }
    if (this.failed !== undefined) throw this.failed
    if (aborted(options.signal)) throw new AbortError('write aborted')
  }

  async end(): Promise<void> {
    if (this.closedWrite || this.failed !== undefined) return
    this.closedWrite = true
    this.send('end')
  }

  abort(reason?: Error): void {
    if (this.failed !== undefined) return
    this.send('reset')
    this.fail(reason ?? new AbortError('stream aborted locally'))
    this.from.streams.delete(this)
  }

  [Symbol.asyncIterator](): AsyncIterator<Uint8Array> {
    return this.inbound[Symbol.asyncIterator]()
  }
}

/**
 * PeerNet.open on SimLinks: one round trip to the peer, then a stream pair whose far end is
 * handed to the peer's handler (a handler's error aborts that end).
 */
export async function openSimStream(
  links: SimLinks,
  node: SimNode,
  peer: PeerId,
  protocol: string,
  options: { signal?: AbortSignal } = {}
): Promise<ByteStream> {
  const sim = links.sim
  requireStartedNode(node)
  checkName('protocol', protocol)
  if (options.signal?.aborted === true) throw new AbortError('open aborted')
  const remote = links.nodes.get(peer)
  if (remote === undefined || !links.linked(node, remote)) throw new PeerGoneError(`peer ${peer} is not connected`, { peer })
  // The request travels to the peer and the answer comes back: one round trip, each way a
  // signal behind what the pair sent before it.
  await new Promise<void>((resolve, reject) => {
    let settled = false
    const onAbort = (): void => {
      if (settled) return
      settled = true
      reject(new AbortError('open aborted'))
    }
    links.signal(node, remote, () => {
      links.signal(remote, node, () => {
        if (settled) return
        settled = true
        options.signal?.removeEventListener('abort', onAbort)
        resolve()
      })
    })
    options.signal?.addEventListener('abort', onAbort, { once: true })
  })
  if (!links.linked(node, remote)) throw new PeerGoneError(`peer ${peer} went away while opening`, { peer })
  const handler = remote.handlers.get(protocol)
  if (handler === undefined) throw new ProtocolNotSupportedError(`peer ${peer} does not handle ${protocol}`, { peer, protocol })
  const mine = new SimStream(links, node, () => remote, peer, protocol)
  const theirs = new SimStream(links, remote, () => node, node.info.id, protocol)
  mine.peer = theirs
  theirs.peer = mine
  node.streams.add(mine)
  remote.streams.add(theirs)
  sim.trace('open', { from: node.info.id, to: peer, protocol })
  Promise.resolve()
    .then(() => handler(theirs))
    .catch((err: unknown) => theirs.abort(err instanceof Error ? err : new Error(String(err))))
  return mine
}
