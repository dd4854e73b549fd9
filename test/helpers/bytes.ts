import { checksum64, FRAME_MAGIC } from '../../codec/index.ts'
import { ProtocolError } from '../../core/index.ts'

/** Header bytes of an encoded frame (the header length is derived from its rank byte). */
export function headerLength(frame: Uint8Array): number {
  return 56 + 8 * frame[6]! + 8
}

/**
 * Rewrites header fields of an encoded frame and recomputes the header checksum: the tool of a
 * peer that sends well-formed lies. `edit` receives a DataView over the header.
 */
export function forgeHeader(frame: Uint8Array, edit: (v: DataView) => void): Uint8Array {
  const out = frame.slice()
  const len = headerLength(out)
  const v = new DataView(out.buffer, 0, len)
  edit(v)
  v.setUint32(0, FRAME_MAGIC, true)
  const end = 56 + 8 * v.getUint8(6)
  if (end + 8 <= out.length) v.setBigUint64(end, checksum64(out.subarray(0, end)), true)
  return out
}

/**
 * Runs `fn` and returns 'ok' if it returned, or the `code` of the ProtocolError it threw.
 * Anything else it throws is a defect and propagates (failing the test).
 */
export function protocolCode(fn: () => unknown): string {
  try {
    fn()
  } catch (err) {
    if (err instanceof ProtocolError) return err.code
    throw err
  }
  return 'ok'
}
