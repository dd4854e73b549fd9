import { ZeromeshError } from '../../core/index.ts'
import { NCCL_RESULT_NAMES } from './nccl-ffi.ts'

/**
 * An NCCL call returned, or a communicator reported through ncclCommGetAsyncError, a result
 * other than ncclSuccess / ncclInProgress. `result` is the `ncclResult_t`, `resultName` its
 * enum name, `text` NCCL's ncclGetErrorString and `lastError` its ncclGetLastError (the detail,
 * may be empty). A communicator that raised this has been aborted unless the call was rejected
 * before anything was enqueued.
 */
export class NcclError extends ZeromeshError {
  static override name = 'NcclError'
  readonly call: string
  readonly result: number
  readonly resultName: string
  readonly text: string
  readonly lastError: string

  constructor(call: string, result: number, text: string, lastError = '') {
    const resultName = NCCL_RESULT_NAMES[result] ?? `ncclResult ${result}`
    const tail = lastError === '' ? '' : `: ${lastError}`
    super(`${call} failed: ${resultName} (${result}) ${text}${tail}`, { call, result, resultName })
    this.call = call
    this.result = result
    this.resultName = resultName
    this.text = text
    this.lastError = lastError
  }
}

/**
 * An NCCL operation (communicator init, a collective, a graceful close) did not finish within
 * its `timeoutMs`: a peer is gone or stuck. The communicator has been aborted (ncclCommAbort);
 * the caller builds a new one on the next view.
 */
export class NcclTimeoutError extends ZeromeshError {
  static override name = 'NcclTimeoutError'
  readonly op: string
  readonly timeoutMs: number

  constructor(op: string, timeoutMs: number) {
    super(`${op} did not complete within ${timeoutMs} ms; the communicator was aborted`, { op, timeoutMs })
    this.op = op
    this.timeoutMs = timeoutMs
  }
}

/** An operation on a communicator that was aborted, is closing or was closed. */
export class NcclCommClosedError extends ZeromeshError {
  static override name = 'NcclCommClosedError'
  readonly op: string
  readonly state: string

  constructor(op: string, state: string) {
    super(`${op}: the communicator is ${state}`, { op, state })
    this.op = op
    this.state = state
  }
}
