import test from 'ava'
import { ProtocolError, protocolError } from '../../core/index.ts'
import { CodecErrorCode, codecError } from '../../codec/index.ts'
import { SnapshotErrorCode, snapshotError } from '../../snapshot/errors.ts'

// One protocol-error factory: codec's and snapshot's are core's, typed to their codes.

test('protocolError builds a ProtocolError with the code, details and action (reject unless said)', t => {
  const e = protocolError('X_BAD', 'bad bytes', { bytes: 3 })
  t.true(e instanceof ProtocolError)
  t.is(e.name, 'ProtocolError')
  t.is(e.code, 'X_BAD')
  t.is(e.action, 'reject')
  t.deepEqual(e.details, { code: 'X_BAD', bytes: 3 })
  t.is(protocolError('X_OLD', 'stale', {}, 'ignore').action, 'ignore')
})

test("codecError and snapshotError are the one factory, with their layers' codes", t => {
  t.is(codecError, protocolError)
  t.is(snapshotError, protocolError)
  const c = codecError(CodecErrorCode.FRAME_TOO_LARGE, 'too big')
  const s = snapshotError(SnapshotErrorCode.STALE_EPOCH, 'old', { epoch: 1 }, 'ignore')
  t.deepEqual([c.name, c.code, c.action], ['ProtocolError', 'FRAME_TOO_LARGE', 'reject'])
  t.deepEqual([s.name, s.code, s.action], ['ProtocolError', 'STALE_EPOCH', 'ignore'])
})
