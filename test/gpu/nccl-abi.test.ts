// The koffi binding of NCCL against a C stand-in with NCCL's signatures (fixtures/fake-nccl.c),
// built here with the system C compiler: the 128-byte id passed by value keeps every byte, the
// config pointer carries the 2.14 layout, out-parameters and device addresses arrive intact,
// and ncclCommAbort runs on a worker thread. Skipped, with the reason, where no compiler exists.
import test from 'ava'
import { execFileSync } from 'node:child_process'
import { mkdtempSync, rmSync } from 'node:fs'
import { createRequire } from 'node:module'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { RealClock } from '../../core/index.ts'
import { createNccl, type Nccl } from '../../gpu/cuda/nccl.ts'
import { openNccl } from '../../gpu/cuda/nccl-ffi.ts'
import { FakeDevice } from './_nccl-fake.ts'

const dir = mkdtempSync(join(tmpdir(), 'zm-fake-nccl-'))
const lib = join(dir, 'libnccl.so.2')
let reason = ''
try {
  execFileSync('cc', ['-shared', '-fPIC', '-O1', '-o', lib, fileURLToPath(new URL('./fixtures/fake-nccl.c', import.meta.url))], { stdio: 'pipe' })
} catch (err) {
  reason = `no C compiler to build the fake NCCL (${(err as Error).message.split('\n')[0]})`
  process.stderr.write(`test/gpu/nccl-abi: skipping: ${reason}\n`)
}
test.after.always(() => rmSync(dir, { recursive: true, force: true }))

interface Probe {
  lastId(out: Uint8Array): void
  lastConfig(size: bigint[], magic: number[], version: number[], blocking: number[]): void
  lastArgs(out: BigUint64Array): void
  aborts(): number
}

function setup(): { nccl: Nccl; probe: Probe } {
  const koffi = createRequire(import.meta.url)('koffi') as { load: (p: string) => { func: (d: string) => (...a: unknown[]) => unknown } }
  const l = koffi.load(lib)
  const probe: Probe = {
    lastId: l.func('void fake_last_id(void* out)') as Probe['lastId'],
    lastConfig: l.func('void fake_last_config(_Out_ uint64* size, _Out_ uint32* magic, _Out_ uint32* version, _Out_ int* blocking)') as Probe['lastConfig'],
    lastArgs: l.func('void fake_last_args(void* out)') as Probe['lastArgs'],
    aborts: l.func('int fake_aborts()') as Probe['aborts']
  }
  return { nccl: createNccl(openNccl([lib]), { clock: new RealClock() }), probe }
}

const abiTest = (title: string, fn: (t: import('ava').ExecutionContext, s: ReturnType<typeof setup>) => Promise<void>): void => {
  if (reason !== '') test.skip(`${title} [skipped: ${reason}]`, () => {})
  else test.serial(title, t => fn(t, setup()))
}

abiTest('the unique id keeps all 128 bytes (zeros included) out of ncclGetUniqueId and into init by value', async (t, { nccl, probe }) => {
  const id = nccl.createUniqueId()
  const want = Uint8Array.from({ length: 128 }, (_, i) => (i * 37 + 11) & 0xff)
  want[5] = 0
  t.deepEqual(id, want)
  t.is(nccl.version, '2.27.3')
  const comm = await nccl.initComm({ backend: new FakeDevice(), id, nranks: 1, rank: 0, timeoutMs: 5000 })
  const got = new Uint8Array(128)
  probe.lastId(got)
  t.deepEqual(got, want)
  const [size, magic, version, blocking] = [[0n], [0], [0], [-1]]
  probe.lastConfig(size, magic, version, blocking)
  t.deepEqual([Number(size[0]), magic[0], version[0], blocking[0]], [24, 0xcafebeef, 21400, 0])
  t.is(comm.state, 'ready')
  await comm.close()
})

abiTest('collective arguments reach NCCL as passed (addresses as 64-bit, count, dtype, op, stream)', async (t, { nccl, probe }) => {
  const device = new FakeDevice()
  const comm = await nccl.initComm({ backend: device, id: nccl.createUniqueId(), nranks: 1, rank: 0 })
  const a = device.tensor('bf16', 1000)
  const b = device.tensor('bf16', 1000)
  await comm.allReduce(a, b, { op: 'min' })
  const args = new BigUint64Array(8)
  probe.lastArgs(args)
  t.deepEqual([...args.slice(0, 6)].map(Number), [a.at, b.at, 1000, 9, 3, 0])
  t.not(args[6], 0n, 'the stream pointer arrives')
  await comm.allGather(a, b)
  probe.lastArgs(args)
  t.deepEqual([...args.slice(0, 4)].map(Number), [a.at, b.at, 1000, 9])
  await comm.abort()
})

abiTest('a rank that never joins: the timeout aborts on a worker thread while the event loop keeps running', async (t, { nccl, probe }) => {
  const before = probe.aborts()
  let ticks = 0
  const timer = setInterval(() => ticks++, 5)
  const started = performance.now()
  try {
    await t.throwsAsync(nccl.initComm({ backend: new FakeDevice(), id: nccl.createUniqueId(), nranks: 2, rank: 0, timeoutMs: 200 }), {
      name: 'NcclTimeoutError'
    })
  } finally {
    clearInterval(timer)
  }
  const ms = performance.now() - started
  t.is(probe.aborts(), before + 1)
  t.true(ms >= 200 && ms < 5000, `took ${ms} ms`)
  t.true(ticks >= 10, `the event loop ran ${ticks} timer ticks while waiting`)
})
