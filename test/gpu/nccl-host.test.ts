// The NCCL binding's logic without a GPU: argument checks, loadNccl's reason, and the
// communicator's waits, timeouts and aborts against a scripted NCCL (./_nccl-fake.ts) on a
// ManualClock. test/gpu/nccl.test.ts runs the real library on the GPU host.
import test from 'ava'
import { flushMicrotasks, ManualClock } from '../../core/index.ts'
import { createNccl, loadNccl, NCCL_LIMITS, type NcclComm, type NcclInitOptions } from '../../gpu/cuda/nccl.ts'
import { encodeNcclConfig, ncclVersionCode, ncclVersionString } from '../../gpu/cuda/nccl-ffi.ts'
import { FakeDevice, FakeNccl, type FakeScript } from './_nccl-fake.ts'

/** Runs the clock in small steps (letting event-loop turns pass) until `p` settles; returns how much clock time that took. */
async function drive<T>(clock: ManualClock, p: Promise<T>, stepMs = 5): Promise<{ ok: boolean; value?: T; error?: Error; ms: number }> {
  const start = clock.monotonic()
  let out: { ok: boolean; value?: T; error?: Error } | null = null
  p.then(
    value => {
      out = { ok: true, value }
    },
    (error: Error) => {
      out = { ok: false, error }
    }
  )
  for (let i = 0; i < 200_000 && out === null; i++) {
    await flushMicrotasks()
    if (out === null) await clock.advanceAsync(stepMs)
  }
  if (out === null) throw new Error('the promise never settled')
  return { ...(out as { ok: boolean }), ms: clock.monotonic() - start }
}

function setup(script: FakeScript = {}) {
  const fake = new FakeNccl(script)
  const clock = new ManualClock()
  const device = new FakeDevice()
  const nccl = createNccl(fake.api, { clock })
  const init = (o: Partial<NcclInitOptions> = {}) => nccl.initComm({ backend: device, id: nccl.createUniqueId(), nranks: 1, rank: 0, ...o })
  return { fake, clock, device, nccl, init }
}

async function ready(script: FakeScript = {}) {
  const s = setup(script)
  const r = await drive(s.clock, s.init())
  if (!r.ok) throw r.error
  return { ...s, comm: r.value as NcclComm }
}

// ---- loading and arguments ---------------------------------------------------------------------

test('loadNccl reports why where the library is missing, and never throws', t => {
  const r = loadNccl({ libraryPaths: ['/nonexistent/libnccl.so.2'] })
  t.is(r.nccl, undefined)
  t.regex(r.reason ?? '', /cannot load NCCL.*\/nonexistent\/libnccl\.so\.2/)
  // The default search: here (no NCCL) a reason, on the GPU host the library.
  const d = loadNccl()
  t.true(d.nccl !== undefined || (typeof d.reason === 'string' && d.reason.length > 0))
})

test('an NCCL older than 2.14 is refused with the version in the reason', t => {
  const fake = new FakeNccl({ version: ncclVersionCode(2, 12, 12) })
  t.throws(() => createNccl(fake.api, { clock: new ManualClock() }), { name: 'BackendUnavailableError', message: /2\.12\.12.*2\.14/ })
})

test('version codes decode in both of NCCL_VERSION encodings', t => {
  t.is(ncclVersionString(ncclVersionCode(2, 8, 4)), '2.8.4')
  t.is(ncclVersionCode(2, 8, 4), 2804)
  t.is(ncclVersionString(ncclVersionCode(2, 27, 3)), '2.27.3')
  t.is(ncclVersionCode(2, 27, 3), 22703)
})

test('the config is the 2.14 layout: size 24, NCCL_API_MAGIC, version 2.14.0, blocking', t => {
  const v = new DataView(encodeNcclConfig(false).buffer)
  t.is(v.getBigUint64(0, true), 24n)
  t.is(v.getUint32(8, true), 0xcafebeef)
  t.is(v.getUint32(12, true), 21400)
  t.is(v.getInt32(16, true), 0)
  t.is(new DataView(encodeNcclConfig(true).buffer).getInt32(16, true), 1)
})

test('unique ids are 128 bytes; an id of another size is refused before NCCL is called', async t => {
  const { nccl, fake, init } = setup()
  t.is(nccl.createUniqueId().byteLength, 128)
  for (const id of [new Uint8Array(127), new Uint8Array(129), new Uint8Array(0)]) {
    await t.throwsAsync(init({ id }), { name: 'InvalidArgumentError', message: /128 bytes/ })
  }
  await t.throwsAsync(init({ id: Array.from(new Uint8Array(128)) as unknown as Uint8Array }), { name: 'InvalidArgumentError' })
  t.false(fake.calls.includes('init'))
})

test('ranks (at most maxRanks) and timeouts are checked before NCCL is called', async t => {
  const { fake, init } = setup()
  const bad: Array<[Partial<NcclInitOptions>, RegExp]> = [
    [{ nranks: 0 }, /nranks/],
    [{ nranks: 2, rank: 2 }, /rank/],
    [{ rank: -1 }, /rank/],
    [{ nranks: 1.5 }, /nranks/],
    [{ timeoutMs: 0 }, /timeoutMs/],
    [{ timeoutMs: NCCL_LIMITS.maxTimeoutMs + 1 }, /timeoutMs/]
  ]
  for (const [o, msg] of bad) await t.throwsAsync(init(o), { name: 'InvalidArgumentError', message: msg })
  await t.throwsAsync(init({ nranks: NCCL_LIMITS.maxRanks + 1 }), { name: 'LimitExceededError', message: /ranks 65 exceeds the cap of 64/ })
  t.deepEqual(fake.calls, [])
})

test('an already aborted signal stops init before NCCL is called', async t => {
  const { fake, init } = setup()
  await t.throwsAsync(init({ signal: AbortSignal.abort() }), { name: 'AbortError' })
  t.deepEqual(fake.calls, [])
})

// ---- init, timeout, abort ----------------------------------------------------------------------

test('init passes the id and a non-blocking config, and resolves once NCCL leaves ncclInProgress', async t => {
  const { fake, comm } = await ready({ initPolls: 5 })
  t.is(comm.state, 'ready')
  t.is(comm.nranks, 1)
  t.is(comm.rank, 0)
  t.deepEqual(fake.lastId, new Uint8Array(128).fill(9))
  t.is(new DataView(fake.lastConfig!.buffer).getInt32(16, true), 0)
})

test('a rank that never comes: init times out, aborts the communicator and rejects with NcclTimeoutError', async t => {
  const { fake, clock, init } = setup({ initPolls: -1 })
  const r = await drive(clock, init({ nranks: 2, timeoutMs: 1000 }))
  t.false(r.ok)
  t.is(r.error?.name, 'NcclTimeoutError')
  t.deepEqual(fake.calls, ['init', 'abort'])
  t.true(fake.comms[0]!.freed)
  t.true(r.ms >= 1000 && r.ms <= 1000 + NCCL_LIMITS.pollMaxMs + 5, `took ${r.ms} ms of clock time`)
})

test('aborting the signal during init aborts the communicator and rejects with AbortError', async t => {
  const { fake, clock, init } = setup({ initPolls: -1 })
  const ac = new AbortController()
  clock.setTimeout(() => ac.abort(), 300)
  const r = await drive(clock, init({ nranks: 2, signal: ac.signal }))
  t.is(r.error?.name, 'AbortError')
  t.deepEqual(fake.calls, ['init', 'abort'])
  t.true(r.ms <= 300 + NCCL_LIMITS.pollMaxMs + 5, `took ${r.ms} ms of clock time`)
})

// ---- collectives -------------------------------------------------------------------------------

test('collectives pass addresses, counts, dtypes and ops as NCCL expects', async t => {
  const { fake, clock, device, comm } = await ready()
  const f = device.tensor('f32', 8)
  const g = device.tensor('f32', 8)
  const b = device.tensor('bf16', 8)
  const b2 = device.tensor('bf16', 8)
  t.true((await drive(clock, comm.allReduce(f, g))).ok)
  t.true((await drive(clock, comm.allReduce(b, b2, { op: 'max' }))).ok)
  t.true((await drive(clock, comm.reduceScatter(f, g, { op: 'avg' }))).ok)
  t.true((await drive(clock, comm.allGather(b, b2))).ok)
  t.true((await drive(clock, comm.broadcast(f, f, { root: 0 }))).ok)
  t.deepEqual(fake.collectives, [
    { name: 'allReduce', args: [f.at, g.at, 8, 7, 0] },
    { name: 'allReduce', args: [b.at, b2.at, 8, 9, 2] },
    { name: 'reduceScatter', args: [f.at, g.at, 8, 7, 4] },
    { name: 'allGather', args: [b.at, b2.at, 8, 9] },
    { name: 'broadcast', args: [f.at, f.at, 8, 7, 0] }
  ])
  t.is(device.live, 0, 'every marker released')
})

test('bad inputs are refused before NCCL is called and leave the communicator usable', async t => {
  const { fake, clock, device, comm } = await ready({ initPolls: 1 })
  const f8 = device.tensor('f32', 8)
  const f4 = device.tensor('f32', 4)
  const b8 = device.tensor('bf16', 8)
  const other = new FakeDevice().tensor('f32', 8)
  const cases: Array<[Promise<void>, RegExp]> = [
    [comm.allReduce(f8, b8), /recv must be f32/],
    [comm.allReduce(f8, f4), /8 elements/],
    [comm.reduceScatter(f8, f4), /nranks \(1\)/],
    [comm.allGather(f4, f8), /nranks \(1\)/],
    [comm.allReduce(other, f8), /not a tensor of this device/],
    [comm.allReduce(f8, f8, { op: 'xor' as 'sum' }), /unknown reduction/],
    [comm.allReduce(f8, device.view(f8, 1, 8)), /overlap/],
    [comm.broadcast(f8, f8, { root: 1 }), /root/],
    [comm.allReduce(f8, f8, { timeoutMs: -5 }), /timeoutMs/]
  ]
  for (const [p, msg] of cases) await t.throwsAsync(p, { name: 'InvalidArgumentError', message: msg })
  await t.throwsAsync(comm.allReduce(f8, f8, { signal: AbortSignal.abort() }), { name: 'AbortError' })
  t.deepEqual(fake.collectives, [])
  t.is(comm.state, 'ready')
  t.true((await drive(clock, comm.allReduce(f8, f8))).ok, 'in place is allowed')
})

test('empty tensors complete without calling NCCL', async t => {
  const { fake, device, comm } = await ready()
  await comm.allReduce(device.tensor('f32', 0), device.tensor('f32', 0))
  t.deepEqual(fake.collectives, [])
})

test('collectives issued together reach NCCL one at a time, each after the previous left ncclInProgress', async t => {
  const { fake, clock, device, comm } = await ready({ opPolls: 3 })
  const ts = Array.from({ length: 4 }, () => device.tensor('f32', 16))
  const all = Promise.all(ts.map(x => comm.allReduce(x, x)))
  t.true((await drive(clock, all)).ok)
  t.deepEqual(
    fake.collectives.map(c => c.args[0]),
    ts.map(x => x.at)
  )
  t.false(fake.calls.includes('abort'))
})

test('an async error during a collective (a peer died) rejects with NcclError and aborts', async t => {
  const { fake, clock, device, comm } = await ready()
  const x = device.tensor('f32', 16)
  device.markerPolls = -1
  const p = comm.allReduce(x, x)
  fake.script.failWith = 6
  const r = await drive(clock, p)
  t.is(r.error?.name, 'NcclError')
  t.like(r.error, { result: 6, resultName: 'ncclRemoteError', text: 'fake text 6', lastError: 'fake detail' })
  t.is(comm.state, 'aborted')
  t.true(fake.calls.includes('abort'))
})

test('a collective that never completes times out, aborts, and the communicator refuses further work', async t => {
  const { fake, clock, device, comm } = await ready()
  const x = device.tensor('f32', 16)
  device.markerPolls = -1
  const r = await drive(clock, comm.allReduce(x, x, { timeoutMs: 500 }))
  t.is(r.error?.name, 'NcclTimeoutError')
  t.true(r.ms <= 500 + NCCL_LIMITS.pollMaxMs + 5)
  t.is(fake.calls.filter(c => c === 'abort').length, 1)
  t.is(device.live, 0)
  await t.throwsAsync(comm.allReduce(x, x), { name: 'NcclCommClosedError' })
  await comm.abort()
  await comm.close()
  t.is(fake.calls.filter(c => c === 'abort').length, 1, 'abort is idempotent')
})

test('aborting the signal of a pending collective aborts the communicator', async t => {
  const { fake, clock, device, comm } = await ready()
  const x = device.tensor('f32', 16)
  device.markerPolls = -1
  const ac = new AbortController()
  clock.setTimeout(() => ac.abort(), 200)
  const r = await drive(clock, comm.allReduce(x, x, { signal: ac.signal }))
  t.is(r.error?.name, 'AbortError')
  t.is(comm.state, 'aborted')
  t.true(fake.calls.includes('abort'))
})

test('abort() rejects the collectives in flight', async t => {
  const { clock, device, comm } = await ready()
  const x = device.tensor('f32', 16)
  device.markerPolls = -1
  const p = comm.allReduce(x, x)
  clock.setTimeout(() => void comm.abort(), 50)
  const r = await drive(clock, p)
  t.is(r.error?.name, 'NcclCommClosedError')
})

test('close() waits for the collectives in flight, finalizes, then destroys', async t => {
  const { fake, clock, device, comm } = await ready()
  const x = device.tensor('f32', 16)
  device.markerPolls = 20
  const op = comm.allReduce(x, x)
  const closing = comm.close()
  await t.throwsAsync(comm.allReduce(x, x), { name: 'NcclCommClosedError' })
  t.true((await drive(clock, Promise.all([op, closing]))).ok)
  t.deepEqual(fake.calls.slice(-3), ['allReduce', 'finalize', 'destroy'])
  t.is(comm.state, 'closed')
})
