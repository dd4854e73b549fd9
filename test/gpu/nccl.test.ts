// NCCL on the GPU host: a one-rank communicator over the CUDA backend's stream (NCCL refuses two
// ranks on one GPU, so every collective is the identity here and is compared exactly with the
// input), an init that can never complete (a second rank that never comes) ended by its timeout
// or its signal, and the checks made before NCCL is called. Skipped, with the reason, where
// CUDA or libnccl is missing. Two ranks on two GPUs: bench/nccl.ts.
//   bash .device/run.sh ava --verbose test/gpu/nccl.test.ts
import test, { type ExecutionContext } from 'ava'
import type { Tensor } from '../../gpu/backend.ts'
import type { CudaBackend } from '../../gpu/cuda/index.ts'
import { loadNccl, type Nccl, type NcclComm } from '../../gpu/cuda/nccl.ts'
import { cpu, down, gpuTest, rand, roundBf16, up } from './_cuda.ts'

const loaded = loadNccl()
if (loaded.nccl === undefined) process.stderr.write(`test/gpu/nccl: skipping: no NCCL here (${loaded.reason})\n`)

/** A test needing CUDA and NCCL, or a skipped one naming what is missing. */
function ncclTest(title: string, fn: (t: ExecutionContext, be: CudaBackend, nccl: Nccl) => Promise<void>): void {
  const nccl = loaded.nccl
  if (nccl === undefined) {
    test.skip(`${title} [skipped: no NCCL here (${loaded.reason})]`, () => {})
    return
  }
  gpuTest(title, (t, be) => fn(t, be, nccl))
}

async function oneRank(be: CudaBackend, nccl: Nccl): Promise<NcclComm> {
  return await nccl.initComm({ backend: be, id: nccl.createUniqueId(), nranks: 1, rank: 0, timeoutMs: 60_000 })
}

const SIZES = [1, 1000, 65_539, 1 << 20]
const DTYPES = ['f32', 'bf16'] as const

/** The input as the device holds it (bf16: rounded), which a one-rank reduction must return exactly. */
function input(dtype: 'f32' | 'bf16', n: number, seed: number): Float32Array {
  const x = rand(n, seed, 3)
  return dtype === 'bf16' ? roundBf16(x) : x
}

function same(t: ExecutionContext, got: Float32Array, want: Float32Array, label: string): void {
  t.is(got.length, want.length, `${label}: length`)
  for (let i = 0; i < want.length; i++) {
    if (!Object.is(got[i], want[i])) {
      t.fail(`${label}: element ${i} is ${got[i]}, want ${want[i]}`)
      return
    }
  }
  t.pass()
}

function free(be: CudaBackend, ...ts: Tensor[]): void {
  for (const x of ts) be.free(x)
}

ncclTest('a one-rank communicator joins and reports its size, rank and the library version', async (t, be, nccl) => {
  t.log(`NCCL ${nccl.version} on ${be.info.name}`)
  const comm = await oneRank(be, nccl)
  t.is(comm.state, 'ready')
  t.is(comm.nranks, 1)
  t.is(comm.rank, 0)
  await comm.close()
  t.is(comm.state, 'closed')
})

ncclTest('all-reduce, reduce-scatter and all-gather of f32 and bf16 tensors on one rank return the input', async (t, be, nccl) => {
  const comm = await oneRank(be, nccl)
  try {
    for (const dtype of DTYPES) {
      for (const [k, n] of SIZES.entries()) {
        const want = input(dtype, n, 11 + k)
        const send = up(be, dtype, want)
        const recv = be.alloc(dtype, [n])
        await comm.allReduce(send, recv)
        same(t, down(be, recv), want, `allReduce ${dtype} n=${n}`)
        be.fill(recv, 0)
        await comm.reduceScatter(send, recv)
        same(t, down(be, recv), want, `reduceScatter ${dtype} n=${n}`)
        be.fill(recv, 0)
        await comm.allGather(send, recv)
        same(t, down(be, recv), want, `allGather ${dtype} n=${n}`)
        await comm.allReduce(send, send, { op: 'max' })
        same(t, down(be, send), want, `allReduce in place (max) ${dtype} n=${n}`)
        free(be, send, recv)
      }
    }
  } finally {
    await comm.close()
  }
})

ncclTest('avg, broadcast and i32 sums on one rank return the input', async (t, be, nccl) => {
  const comm = await oneRank(be, nccl)
  try {
    const want = input('f32', 4099, 5)
    const send = up(be, 'f32', want)
    const recv = be.alloc('f32', [4099])
    await comm.allReduce(send, recv, { op: 'avg' })
    same(t, down(be, recv), want, 'avg')
    be.fill(recv, 0)
    await comm.broadcast(send, recv, { root: 0 })
    same(t, down(be, recv), want, 'broadcast')
    const ints = Int32Array.from({ length: 777 }, (_, i) => i * 7919 - 3_000_000)
    const is = be.alloc('i32', [777])
    const ir = be.alloc('i32', [777])
    be.write(is, ints)
    await comm.allReduce(is, ir)
    t.deepEqual(be.read(ir), ints)
    free(be, send, recv, is, ir)
  } finally {
    await comm.close()
  }
})

ncclTest('collectives run in stream order with the backend: a copy enqueued after one sees its result', async (t, be, nccl) => {
  const comm = await oneRank(be, nccl)
  try {
    const want = input('f32', 1 << 20, 21)
    const send = up(be, 'f32', want)
    const recv = be.alloc('f32', [1 << 20])
    const after = be.alloc('f32', [1 << 20])
    await comm.allReduce(send, recv)
    be.copy(after, recv)
    same(t, down(be, after), want, 'copy after allReduce')
    free(be, send, recv, after)
  } finally {
    await comm.close()
  }
})

ncclTest('an init whose second rank never comes is aborted by its timeout, promptly, with NcclTimeoutError', async (t, be, nccl) => {
  const started = performance.now()
  await t.throwsAsync(nccl.initComm({ backend: be, id: nccl.createUniqueId(), nranks: 2, rank: 0, timeoutMs: 3000 }), { name: 'NcclTimeoutError' })
  const ms = performance.now() - started
  t.log(`rejected after ${ms.toFixed(0)} ms (timeout 3000 ms, then ncclCommAbort)`)
  t.true(ms >= 3000 && ms < 3000 + 20_000, `took ${ms} ms`)
})

ncclTest('an init whose second rank never comes is aborted by its signal with AbortError', async (t, be, nccl) => {
  const ac = new AbortController()
  const timer = setTimeout(() => ac.abort(), 500)
  const started = performance.now()
  try {
    await t.throwsAsync(nccl.initComm({ backend: be, id: nccl.createUniqueId(), nranks: 2, rank: 1, signal: ac.signal }), { name: 'AbortError' })
  } finally {
    clearTimeout(timer)
  }
  t.true(performance.now() - started < 500 + 20_000)
  // The aborted attempts leave NCCL usable: a fresh communicator still works.
  const comm = await oneRank(be, nccl)
  const want = input('bf16', 100, 3)
  const x = up(be, 'bf16', want)
  await comm.allReduce(x, x)
  same(t, down(be, x), want, 'allReduce after aborted inits')
  free(be, x)
  await comm.close()
})

ncclTest('bad inputs are refused before NCCL is called and the communicator stays usable', async (t, be, nccl) => {
  const comm = await oneRank(be, nccl)
  try {
    const f = be.alloc('f32', [64])
    const g = be.alloc('f32', [32])
    const b = be.alloc('bf16', [64])
    const host = cpu.alloc('f32', [64])
    await t.throwsAsync(comm.allReduce(f, b), { name: 'InvalidArgumentError', message: /recv must be f32/ })
    await t.throwsAsync(comm.allReduce(f, g), { name: 'InvalidArgumentError', message: /64 elements/ })
    await t.throwsAsync(comm.allGather(g, f), { name: 'InvalidArgumentError', message: /nranks/ })
    await t.throwsAsync(comm.allReduce(host, f), { name: 'InvalidArgumentError', message: /not a tensor of this cuda backend/ })
    await t.throwsAsync(comm.allReduce(be.view(f, 0, [32]), be.view(f, 1, [32])), { name: 'InvalidArgumentError', message: /overlap/ })
    await t.throwsAsync(comm.broadcast(f, f, { root: 3 }), { name: 'InvalidArgumentError', message: /root/ })
    await t.throwsAsync(nccl.initComm({ backend: be, id: new Uint8Array(64), nranks: 1, rank: 0 }), { name: 'InvalidArgumentError', message: /128 bytes/ })
    t.is(comm.state, 'ready')
    await comm.allReduce(f, f)
    free(be, f, g, b)
  } finally {
    await comm.close()
  }
  await t.throwsAsync(comm.allReduce(be.alloc('f32', [4]), be.alloc('f32', [4])), { name: 'NcclCommClosedError' })
})
