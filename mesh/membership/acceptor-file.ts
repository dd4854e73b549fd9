import { join } from 'node:path'
import { createEnvelopeCodec } from '../../codec/index.ts'
import { readFileCapped, writeFileDurableSync, ZeromeshError } from '../../core/index.ts'
import { IDENTITY_FILE } from '../identity.ts'
import type { AcceptorRecord, AcceptorStore } from './types.ts'
import { acceptorRecordSchema } from './view-codec.ts'

/** The acceptor record file of a data dir could not be read, decoded or written. */
export class AcceptorRecordError extends ZeromeshError {
  static override name = 'AcceptorRecordError'
}

/** The file in a node's data dir that keeps its acceptor record (beside its identity key). */
export const ACCEPTOR_RECORD_FILE = 'acceptor.record'
/** The most bytes an acceptor record file may have (an envelope holding one view of `maxMembers` members). */
export const ACCEPTOR_RECORD_MAX_BYTES = 256 * 1024

/**
 * The acceptor record kept in `<dataDir>/acceptor.record`: each save writes a temporary file,
 * fsyncs it, renames it over the old one and fsyncs the directory, so a crash (of the process
 * or the machine) leaves the old record or the new one, and the new one once save returned.
 * It lives beside the identity key on purpose: a node that loses one must lose the other (a
 * new key makes a new acceptor, which owes nothing to the old one's answers).
 *
 * `load` of a file that is missing is undefined (a node that never answered after genesis);
 * one that cannot be read or decoded is an AcceptorRecordError naming the file and the way
 * out: the node must not answer as an acceptor without it.
 */
export function fileAcceptorStore(dataDir: string, maxMembers = 1024): AcceptorStore {
  const file = join(dataDir, ACCEPTOR_RECORD_FILE)
  const codec = createEnvelopeCodec({ acceptor: acceptorRecordSchema(maxMembers) }, { maxBytes: ACCEPTOR_RECORD_MAX_BYTES })
  return {
    load(): AcceptorRecord | undefined {
      let bytes: Buffer
      try {
        bytes = readFileCapped(file, ACCEPTOR_RECORD_MAX_BYTES, 'acceptor record')
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined
        throw new AcceptorRecordError(`cannot read ${file}: ${(err as Error).message}`)
      }
      try {
        return codec.decode(bytes).payload as AcceptorRecord
      } catch (err) {
        throw new AcceptorRecordError(
          `${file} is not an acceptor record (${(err as Error).message}); this node cannot vote on views safely without it: restore the file, or move it away together with ${join(dataDir, IDENTITY_FILE)} to join as a new node`
        )
      }
    },
    save(record: AcceptorRecord): void {
      try {
        writeFileDurableSync(file, codec.encode('acceptor', record))
      } catch (err) {
        throw new AcceptorRecordError(`cannot write ${file}: ${(err as Error).message}`)
      }
    }
  }
}
