// A scripted NCCL (NcclApi) and device (NcclDevice) for host tests of the communicator logic:
// they behave as NCCL's non-blocking mode does (a call leaves the communicator ncclInProgress
// for a while; a call made before it left is ncclInvalidUsage) and record every call.
import { InvalidArgumentError } from '../../core/index.ts'
import type { Tensor, TensorDType } from '../../gpu/backend.ts'
import { TENSOR_DTYPE_BYTES } from '../../gpu/backend.ts'
import type { NcclApi } from '../../gpu/cuda/nccl-ffi.ts'
import type { NcclDevice } from '../../gpu/cuda/nccl-device.ts'

const IN_PROGRESS = 7

export interface FakeComm {
  nranks: number
  rank: number
  /** Polls of ncclCommGetAsyncError left before success; -1: never. */
  polls: number
  state: number
  freed: boolean
}

export interface FakeScript {
  version?: number
  /** Polls an init stays in progress (-1: forever, a rank that never comes). */
  initPolls?: number
  /** Polls a collective stays in progress. */
  opPolls?: number
  /** Set to make the next poll report this error (e.g. 6, ncclRemoteError). */
  failWith?: number
}

export class FakeNccl {
  readonly calls: string[] = []
  readonly comms: FakeComm[] = []
  readonly collectives: Array<{ name: string; args: number[] }> = []
  lastConfig: Uint8Array | null = null
  lastId: Uint8Array | null = null
  readonly script: FakeScript

  constructor(script: FakeScript = {}) {
    this.script = script
  }

  get api(): NcclApi {
    const comm = (h: unknown): FakeComm => {
      const c = h as FakeComm
      if (c.freed) throw new Error('use after free of a fake communicator')
      return c
    }
    const enqueue = (name: string, h: unknown, args: number[]): number => {
      const c = comm(h)
      this.calls.push(name)
      if (c.state === IN_PROGRESS) return 5 // ncclInvalidUsage: the previous call has not finished
      this.collectives.push({ name, args })
      c.state = IN_PROGRESS
      c.polls = this.script.opPolls ?? 2
      return IN_PROGRESS
    }
    return {
      getVersion: out => {
        out[0] = this.script.version ?? 22703
        return 0
      },
      getUniqueId: out => {
        out.fill(9)
        return 0
      },
      commInitRankConfig: (out, nranks, id, rank, config) => {
        this.calls.push('init')
        this.lastId = Uint8Array.from(id)
        this.lastConfig = Uint8Array.from(config)
        const c: FakeComm = { nranks, rank, polls: this.script.initPolls ?? 3, state: IN_PROGRESS, freed: false }
        this.comms.push(c)
        out[0] = c
        return IN_PROGRESS
      },
      commGetAsyncError: (h, out) => {
        const c = comm(h)
        if (this.script.failWith !== undefined) c.state = this.script.failWith
        else if (c.state === IN_PROGRESS && c.polls > 0 && --c.polls === 0) c.state = 0
        out[0] = c.state
        return 0
      },
      commCount: (h, out) => {
        out[0] = comm(h).nranks
        return 0
      },
      commUserRank: (h, out) => {
        out[0] = comm(h).rank
        return 0
      },
      commFinalize: h => {
        this.calls.push('finalize')
        const c = comm(h)
        c.state = IN_PROGRESS
        c.polls = 2
        return IN_PROGRESS
      },
      commAbortAsync: async h => {
        this.calls.push('abort')
        comm(h).freed = true
        return 0
      },
      commDestroyAsync: async h => {
        this.calls.push('destroy')
        comm(h).freed = true
        return 0
      },
      getErrorString: rc => `fake text ${rc}`,
      getLastError: () => 'fake detail',
      allReduce: (s, r, n, d, op, h) => enqueue('allReduce', h, [s, r, n, d, op]),
      reduceScatter: (s, r, n, d, op, h) => enqueue('reduceScatter', h, [s, r, n, d, op]),
      allGather: (s, r, n, d, h) => enqueue('allGather', h, [s, r, n, d]),
      broadcast: (s, r, n, d, root, h) => enqueue('broadcast', h, [s, r, n, d, root])
    }
  }
}

/** A tensor of the fake device at a given address. */
export interface FakeTensor extends Tensor {
  at: number
  device: FakeDevice
}

/** Device memory as a number line: tensors are address ranges; markers pass after `markerPolls` queries. */
export class FakeDevice implements NcclDevice {
  // Any value koffi takes as a void* (the C fake records its address).
  readonly stream = new Uint8Array(8)
  markerPolls = 1
  live = 0
  private next = 4096

  tensor(dtype: TensorDType, length: number): FakeTensor {
    const t: FakeTensor = { dtype, shape: [length], length, at: this.next, device: this }
    this.next += Math.max(256, length * TENSOR_DTYPE_BYTES[dtype])
    return t
  }

  /** A view `offset` elements into `base`. */
  view(base: FakeTensor, offset: number, length: number): FakeTensor {
    return { dtype: base.dtype, shape: [length], length, at: base.at + offset * TENSOR_DTYPE_BYTES[base.dtype], device: this }
  }

  makeCurrent(): void {}

  address(op: string, name: string, t: Tensor): number {
    const f = t as Partial<FakeTensor>
    if (f.device !== this) throw new InvalidArgumentError(`${op}: ${name} is not a tensor of this device`)
    return f.at!
  }

  record(): { left: number } {
    this.live++
    return { left: this.markerPolls }
  }

  done(marker: unknown): boolean {
    const m = marker as { left: number }
    return m.left >= 0 && --m.left <= 0
  }

  release(): void {
    this.live--
  }
}
