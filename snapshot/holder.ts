import { ProtocolError, type Logger } from '../core/index.ts'
import type { ByteStream, PeerNet } from '../mesh/index.ts'
import { SnapshotErrorCode, StoreFullError } from './errors.ts'
import { decodeLabel, encodeLabel, LABEL_HEAD_BYTES, labelLength, segmentFrameSizes } from './fragment.ts'
import type { FragmentStore, Reservation } from './store.ts'
import { joinLabel, type Transfers } from './transfer.ts'
import { encodeCount, encodeReply, FETCH_PROTOCOL, Op, PUT_PROTOCOL, readRequest, Status, StreamReader, writeAll } from './wire.ts'

/** What a holder uses: handler registration on the net, the store it fills, idle timers. */
export interface HolderDeps {
  net: Pick<PeerNet, 'handle' | 'unhandle'>
  store: FragmentStore
  watchdog: Transfers['watchdog']
  log?: Logger
}

/**
 * The holder side of snapshots: receives fragments pushed to this node (PUT_PROTOCOL) into its
 * FragmentStore, which decides what to accept and how long to keep it, and serves them back
 * (FETCH_PROTOCOL: GET one fragment, LIST the labels held for an owner).
 */
export interface Holder {
  /** Registers the PUT and FETCH handlers. */
  start(): void
  /** Unregisters them; transfers in progress run to their end or their idle timeout. */
  stop(): void
}

/** Creates the holder of one node over `deps.store`. */
export function createHolder(deps: HolderDeps): Holder {
  const onPut = (stream: ByteStream): Promise<void> => handlePut(deps, stream)
  const onFetch = (stream: ByteStream): Promise<void> => handleFetch(deps, stream)
  return {
    start() {
      deps.net.handle(PUT_PROTOCOL, onPut)
      deps.net.handle(FETCH_PROTOCOL, onFetch)
    },
    stop() {
      deps.net.unhandle(PUT_PROTOCOL)
      deps.net.unhandle(FETCH_PROTOCOL)
    }
  }
}

/** The code a refused reservation is answered with, or undefined for an error that is not a refusal. */
function refusalCode(err: unknown): string | undefined {
  return err instanceof ProtocolError ? err.code : err instanceof StoreFullError ? SnapshotErrorCode.STORE_FULL : undefined
}

/**
 * One PUT: label in, reply (OK / DUPLICATE / ERROR), body in, reply. The label is checked and
 * room reserved before the body is read, so a refused or oversized fragment costs its label.
 */
async function handlePut({ store, watchdog, log }: HolderDeps, stream: ByteStream): Promise<void> {
  const dog = watchdog(stream, 'put')
  const reader = new StreamReader(stream, dog.poke)
  let reservation: Reservation | undefined
  try {
    const head = await reader.read(LABEL_HEAD_BYTES, 'label')
    const len = labelLength(head)
    const label = decodeLabel(joinLabel(head, await reader.read(len - LABEL_HEAD_BYTES, 'label')))
    try {
      reservation = store.reserve(label)
    } catch (err) {
      const code = refusalCode(err)
      if (code === undefined) throw err
      await stream.write(encodeReply(Status.ERROR, code, (err as Error).message))
      await stream.end()
      return
    }
    if (reservation.duplicate) {
      await stream.write(encodeReply(Status.DUPLICATE))
      await stream.end()
      return
    }
    await stream.write(encodeReply(Status.OK))
    const segments: Uint8Array[] = []
    for (const size of segmentFrameSizes(label)) segments.push(await reader.read(size, 'fragment segment'))
    const r = reservation
    reservation = undefined
    try {
      store.commit(r, segments)
    } catch (err) {
      if (!(err instanceof ProtocolError)) throw err
      await stream.write(encodeReply(Status.ERROR, err.code, err.message))
      await stream.end()
      return
    }
    await stream.write(encodeReply(Status.OK))
    await stream.end()
  } catch (err) {
    log?.debug({ peer: stream.remote, err: (err as Error).message }, 'snapshot put failed')
    stream.abort(err as Error)
  } finally {
    dog.done()
    if (reservation !== undefined) store.release(reservation)
  }
}

/** One FETCH: a request in, then a fragment (GET) or the labels held for an owner (LIST) out. */
async function handleFetch({ store, watchdog, log }: HolderDeps, stream: ByteStream): Promise<void> {
  const dog = watchdog(stream, 'fetch')
  const reader = new StreamReader(stream, dog.poke)
  try {
    const req = await readRequest(reader)
    if (req.op === Op.LIST) {
      const labels = store.list(req.owner).map(encodeLabel)
      await stream.write(encodeReply(Status.OK))
      await stream.write(encodeCount(labels.length))
      for (const l of labels) await stream.write(l)
    } else {
      const f = store.get(req.owner, req.version, req.epoch, req.index)
      if (f === undefined) {
        await stream.write(encodeReply(Status.ERROR, SnapshotErrorCode.NOT_FOUND, `no fragment ${req.index} of ${req.owner}@${req.version}/${req.epoch}`))
      } else {
        await stream.write(encodeReply(Status.OK))
        await stream.write(encodeLabel(f.label))
        for (const seg of f.segments) {
          await writeAll(stream, seg)
          dog.poke()
        }
      }
    }
    await stream.end()
  } catch (err) {
    log?.debug({ peer: stream.remote, err: (err as Error).message }, 'snapshot fetch failed')
    stream.abort(err as Error)
  } finally {
    dog.done()
  }
}
