// One rank of a multi-GPU NCCL run (driven by ./nccl-ranks.ts): argv = rank, nranks, sizes
// (comma-separated element counts for the timing pass). The CUDA device is $ZEROMESH_CUDA_DEVICE.
// Rank 0 creates the unique id and prints it ({"id": hex}); the others read it as the first line
// of stdin, as the trainer would receive it over the mesh. Then: init, exact checks of each
// collective over small integers (exact in f32 and bf16), timings, close. Every result is one
// JSON line on stdout; a failure prints {"error": ...} and exits 1.
import { createInterface } from 'node:readline'
import { createBackend, type CudaBackend, loadNccl, type NcclComm, type Tensor } from '../../gpu/index.ts'
import { bf16ToF32, f32ToBf16 } from '../../codec/index.ts'

const rank = Number(process.argv[2])
const nranks = Number(process.argv[3])
const sizes = (process.argv[4] ?? '').split(',').filter(Boolean).map(Number)
const say = (line: Record<string, unknown>): void => void process.stdout.write(`${JSON.stringify({ rank, ...line })}\n`)

async function firstLine(): Promise<string> {
  const rl = createInterface({ input: process.stdin })
  for await (const line of rl) {
    rl.close()
    return line
  }
  throw new Error('stdin closed before the unique id came')
}

async function uniqueId(create: () => Uint8Array): Promise<Uint8Array> {
  if (rank === 0) {
    const id = create()
    say({ id: Buffer.from(id).toString('hex') })
    return id
  }
  const msg = JSON.parse(await firstLine()) as { id: string }
  return new Uint8Array(Buffer.from(msg.id, 'hex'))
}

/** Uploads small integers as `dtype` (exact in both f32 and bf16). */
function upload(be: CudaBackend, dtype: 'f32' | 'bf16', values: number[]): Tensor {
  const t = be.alloc(dtype, [values.length])
  be.write(t, dtype === 'f32' ? Float32Array.from(values) : Uint16Array.from(values, f32ToBf16))
  return t
}

function download(be: CudaBackend, t: Tensor): number[] {
  const h = be.read(t)
  return h instanceof Uint16Array ? Array.from(h, bf16ToF32) : Array.from(h)
}

function expectEqual(what: string, got: number[], want: number[]): void {
  const i = want.findIndex((w, j) => got[j] !== w)
  if (i >= 0 || got.length !== want.length) throw new Error(`${what}: element ${i} is ${got[i]}, want ${want[i]}`)
}

/** Each collective on values where every rank's contribution is known, compared exactly. */
async function check(be: CudaBackend, comm: NcclComm, dtype: 'f32' | 'bf16'): Promise<void> {
  const chunk = 1000
  const n = chunk * nranks
  const mine = (i: number): number => ((i % 13) + 1) * (rank + 1)
  const all = (i: number): number => ((i % 13) + 1) * ((nranks * (nranks + 1)) / 2)
  const send = upload(
    be,
    dtype,
    Array.from({ length: n }, (_, i) => mine(i))
  )
  const sum = be.alloc(dtype, [n])
  await comm.allReduce(send, sum)
  expectEqual(
    `allReduce ${dtype}`,
    download(be, sum),
    Array.from({ length: n }, (_, i) => all(i))
  )
  const part = be.alloc(dtype, [chunk])
  await comm.reduceScatter(send, part)
  expectEqual(
    `reduceScatter ${dtype}`,
    download(be, part),
    Array.from({ length: chunk }, (_, i) => all(rank * chunk + i))
  )
  const own = upload(
    be,
    dtype,
    Array.from({ length: chunk }, () => rank + 1)
  )
  const gathered = be.alloc(dtype, [n])
  await comm.allGather(own, gathered)
  expectEqual(
    `allGather ${dtype}`,
    download(be, gathered),
    Array.from({ length: n }, (_, i) => Math.floor(i / chunk) + 1)
  )
  for (const t of [send, sum, part, own, gathered]) be.free(t)
  say({ check: dtype, ok: true })
}

/** Seconds per all-reduce of `n` f32 (median of 5 after a warm-up), and the device copy of the same bytes as the baseline. */
async function time(be: CudaBackend, comm: NcclComm, n: number): Promise<void> {
  const x = be.alloc('f32', [n])
  const y = be.alloc('f32', [n])
  await comm.allReduce(x, x)
  const runs: number[] = []
  for (let i = 0; i < 5; i++) {
    const t0 = performance.now()
    await comm.allReduce(x, x)
    runs.push((performance.now() - t0) / 1000)
  }
  const seconds = runs.sort((a, b) => a - b)[2]!
  const copySeconds = be.timeMs(() => be.copyBytes(y, x, n * 4)) / 1000
  const bytes = n * 4
  const algbw = bytes / seconds / 1e9
  // The bus bandwidth of a ring all-reduce: each byte crosses 2(n-1)/n links.
  const busbw = (algbw * 2 * (nranks - 1)) / nranks
  say({ bench: 'nccl.allreduce', impl: 'nccl', nranks, bytes, seconds, algbw_gbps: algbw, busbw_gbps: busbw, memcpy_gbps: (2 * bytes) / copySeconds / 1e9 })
  be.free(x)
  be.free(y)
}

async function main(): Promise<void> {
  const be = (await createBackend('cuda')) as CudaBackend
  const { nccl, reason } = loadNccl()
  if (nccl === undefined) throw new Error(reason)
  const id = await uniqueId(() => nccl.createUniqueId())
  const t0 = performance.now()
  const comm = await nccl.initComm({ backend: be, id, nranks, rank, timeoutMs: 120_000 })
  say({ bench: 'nccl.init', nranks, device: be.info.name, version: nccl.version, seconds: (performance.now() - t0) / 1000 })
  try {
    await check(be, comm, 'f32')
    await check(be, comm, 'bf16')
    for (const n of sizes) await time(be, comm, n)
  } finally {
    await comm.close()
  }
  be.dispose()
  say({ done: true })
  // NCCL may leave idle helper threads behind; the rank's work is over.
  process.exit(0)
}

main().catch((err: Error) => {
  say({ error: `${err.name}: ${err.message}` })
  process.exit(1)
})
