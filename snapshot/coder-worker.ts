// The entry point of a snapshot coder thread (spawned by coder-threads.ts). It runs the same
// functions as the inline coder (state.ts's sealState, fragment.ts's codeSegment and
// assembleState), so both produce the same bytes. One job at a time: a request in, one reply
// out, the reply's buffers transferred (never copied) back.
import { parentPort, workerData } from 'node:worker_threads'
import { erasureCoderCache, TooFewFragmentsError, type ErasureCoderName } from '../codec/index.ts'
import { ProtocolError } from '../core/index.ts'
import type { CoderReply, CoderRequest, WireError } from './coder-protocol.ts'
import { assembleState, codeSegment } from './fragment.ts'
import { sealState } from './state.ts'

const impl = (workerData as { impl?: ErasureCoderName } | undefined)?.impl
const coderFor = erasureCoderCache(impl)

/** An error as plain data: the typed errors a caller matches on keep their fields. */
function wireError(err: unknown): WireError {
  if (err instanceof TooFewFragmentsError) return { kind: 'too-few', k: err.k, m: err.m, present: err.present, missing: err.missing, corrupt: err.corrupt }
  if (err instanceof ProtocolError) return { kind: 'protocol', code: err.code, message: err.message, details: err.details, action: err.action }
  const e = err instanceof Error ? err : new Error(String(err))
  return { kind: 'other', name: e.name, message: e.message }
}

function run(req: CoderRequest): { reply: CoderReply; transfer: ArrayBuffer[] } {
  switch (req.op) {
    case 'seal':
      return { reply: { id: req.id, ok: true, op: 'seal', checksum: sealState(req.state) }, transfer: [] }
    case 'segment': {
      const frames = codeSegment(req.state.subarray(req.offset, req.offset + req.size), coderFor(req.k, req.m))
      return { reply: { id: req.id, ok: true, op: 'segment', frames }, transfer: frames.map(f => f.buffer as ArrayBuffer) }
    }
    case 'assemble': {
      const { state, report } = assembleState(req.frags, coderFor(req.k, req.m))
      return { reply: { id: req.id, ok: true, op: 'assemble', state, report }, transfer: [state.buffer as ArrayBuffer] }
    }
  }
}

parentPort?.on('message', (req: CoderRequest) => {
  let out: { reply: CoderReply; transfer: ArrayBuffer[] }
  try {
    out = run(req)
  } catch (err) {
    out = { reply: { id: req.id, ok: false, error: wireError(err) }, transfer: [] }
  }
  parentPort!.postMessage(out.reply, out.transfer)
})
