import test from 'ava'
import { AbortError, InvalidArgumentError } from '../../core/index.ts'
import { ADAM8_BLOCK, adam8Blocks, CpuBackend, createHostOptimizer, gptLayout, type AdamWParams, type Tensor } from '../../gpu/index.ts'
import { TrainingError, type TrainConfig } from '../../node/index.ts'
import { formatParamMemory } from '../../node/train/config.ts'
import { base, ok, trainMesh } from '../helpers/train-mesh.ts'
import { seededRng } from '../helpers/seed.ts'

// `--offload cpu` (node/train/offload.ts): the shard in host memory, the optimizer on worker
// threads. Its update rules are the CPU backend's own, so an offloaded CPU run must give the
// same bits as one that is not; and `--device-memory` makes "does not fit" testable anywhere.

const same = (a: ArrayBufferView, b: ArrayBufferView): boolean =>
  Buffer.compare(Buffer.from(a.buffer, a.byteOffset, a.byteLength), Buffer.from(b.buffer, b.byteOffset, b.byteLength)) === 0

test('the optimizer threads give the CPU backend op’s bits for AdamW, Lion, 8-bit AdamW and 8-bit Lion, however the arrays are sliced', async t => {
  const { rng } = seededRng(t, 11)
  const rnd = (): number => rng.float()
  const optim = createHostOptimizer({ threads: 3 })
  const be = new CpuBackend()
  const host = new CpuBackend({ shared: true })
  try {
    // Sizes that slice unevenly: past several slices, and 8-bit blocks with a short last one.
    for (const n of [5, 3 * 65_536 + 123, 100 * ADAM8_BLOCK + 77]) {
      const fill = (x: Float32Array, scale: number): Float32Array => x.map(() => (rnd() - 0.5) * scale)
      const w0 = fill(new Float32Array(n), 2)
      const g0 = fill(new Float32Array(n), 0.1)
      const m0 = fill(new Float32Array(n), 0.01)
      const v0 = new Float32Array(n).map(() => rnd() * 1e-4)
      const adam: AdamWParams = { lr: 3e-3, beta1: 0.9, beta2: 0.95, eps: 1e-8, weightDecay: 0.1, step: 3, gradScale: 0.5 }
      const on = (b: CpuBackend, a: Float32Array | Uint8Array, dtype: 'f32' | 'u8' = 'f32'): Tensor => {
        const x = b.alloc(dtype, [a.length])
        b.write(x, a)
        return x
      }
      const f = (b: CpuBackend, x: Tensor): Float32Array => b.storage(x) as Float32Array
      // AdamW
      const ref = [on(be, w0), on(be, g0), on(be, m0), on(be, v0)] as const
      be.adamw(ref[0], ref[1], ref[2], ref[3], adam)
      const th = [on(host, w0), on(host, g0), on(host, m0), on(host, v0)] as const
      await optim.adamw(f(host, th[0]), f(host, th[1]), f(host, th[2]), f(host, th[3]), adam)
      for (let i = 0; i < 4; i++) t.true(same(f(be, ref[i]!), f(host, th[i]!)), `adamw n=${n} array ${i}`)
      // Lion
      const lion = { lr: 1e-3, beta1: 0.9, beta2: 0.99, weightDecay: 0.1, gradScale: 0.5 }
      const lr = [on(be, w0), on(be, g0), on(be, m0)] as const
      be.lion(lr[0], lr[1], lr[2], lion)
      const lt = [on(host, w0), on(host, g0), on(host, m0)] as const
      await optim.lion(f(host, lt[0]), f(host, lt[1]), f(host, lt[2]), lion)
      for (let i = 0; i < 3; i++) t.true(same(f(be, lr[i]!), f(host, lt[i]!)), `lion n=${n} array ${i}`)
      // 8-bit AdamW: codes and absmax pairs from one step of the op, then a second step both ways.
      const codes = new Uint8Array(n).map(() => Math.floor(rnd() * 256))
      const scales = new Float32Array(2 * adam8Blocks(n)).map(() => rnd() * 0.1)
      const er = [on(be, w0), on(be, g0), on(be, codes, 'u8'), on(be, codes.slice(), 'u8'), on(be, scales)] as const
      be.adamw8bit(er[0], er[1], er[2], er[3], er[4], adam)
      const et = [on(host, w0), on(host, g0), on(host, codes, 'u8'), on(host, codes.slice(), 'u8'), on(host, scales)] as const
      const u8 = (x: Tensor): Uint8Array => host.storage(x) as Uint8Array
      await optim.adamw8bit(f(host, et[0]), f(host, et[1]), u8(et[2]), u8(et[3]), f(host, et[4]), adam)
      for (let i = 0; i < 5; i++) t.true(same(be.storage(er[i]!), host.storage(et[i]!)), `adamw8bit n=${n} array ${i}`)
      // 8-bit Lion: m codes and one absmax a block.
      const ls = new Float32Array(adam8Blocks(n)).map(() => rnd() * 0.1)
      const lr8 = [on(be, w0), on(be, g0), on(be, codes, 'u8'), on(be, ls)] as const
      be.lion8bit(lr8[0], lr8[1], lr8[2], lr8[3], lion)
      const lt8 = [on(host, w0), on(host, g0), on(host, codes, 'u8'), on(host, ls)] as const
      await optim.lion8bit(f(host, lt8[0]), f(host, lt8[1]), u8(lt8[2]), f(host, lt8[3]), lion)
      for (let i = 0; i < 4; i++) t.true(same(be.storage(lr8[i]!), host.storage(lt8[i]!)), `lion8bit n=${n} array ${i}`)
    }
  } finally {
    optim.stop()
  }
})

test('the optimizer threads refuse arrays outside shared memory and of unequal lengths; a stopped pool refuses work', async t => {
  const optim = createHostOptimizer({ threads: 1 })
  const sh = (n: number): Float32Array => new Float32Array(new SharedArrayBuffer(4 * n))
  const adam: AdamWParams = { lr: 1e-3, beta1: 0.9, beta2: 0.95, eps: 1e-8, weightDecay: 0, step: 1, gradScale: 1 }
  t.throws(() => optim.adamw(new Float32Array(4), sh(4), sh(4), sh(4), adam), { instanceOf: InvalidArgumentError, message: /shared memory/ })
  t.throws(() => optim.adamw(sh(4), sh(3), sh(4), sh(4), adam), { instanceOf: InvalidArgumentError, message: /4 elements/ })
  t.throws(() => optim.adamw(sh(4), sh(4), sh(4), sh(4), { ...adam, lr: Number.NaN }), { instanceOf: InvalidArgumentError })
  const lion = { lr: 1e-3, beta1: 0.9, beta2: 0.99, weightDecay: 0, gradScale: 1 }
  const codes = new Uint8Array(new SharedArrayBuffer(4))
  t.throws(() => optim.lion8bit(sh(4), sh(4), codes, sh(2), lion), { instanceOf: InvalidArgumentError, message: /lion8bit: scales must have 1 elements/ })
  t.throws(() => optim.lion8bit(sh(4), sh(4), new Uint8Array(4), sh(1), lion), { instanceOf: InvalidArgumentError, message: /shared memory/ })
  t.throws(() => createHostOptimizer({ threads: 0 }), { instanceOf: InvalidArgumentError })
  optim.stop()
  await t.throwsAsync(optim.adamw(sh(4), sh(4), sh(4), sh(4), adam), { instanceOf: AbortError })
})

test.serial(
  '--offload cpu trains the same bits as the device optimizer: one rank (buckets uploaded from the host), and four ZeRO-3 ranks of which one is killed and replaced',
  async t => {
    const off = (c: TrainConfig): TrainConfig => ({ ...c, offload: { threads: 2 } })
    // One rank: its shard is the whole model, each bucket uploaded from the host master.
    const one: TrainConfig = { ...base, worldSize: 1, steps: 8 }
    const a = ok(await trainMesh(1, one))
    const b = ok(await trainMesh(1, off(one)))
    t.true(same(a.params, b.params), 'one rank: offloaded = on the device')
    // What `up` prints says where the shard is.
    t.regex(formatParamMemory(b.statuses[0]!.memory!), /owned shard [\d.]+ in host memory/)
    t.notRegex(formatParamMemory(a.statuses[0]!.memory!), /host memory/)
    // Four ranks and a spare, snapshots 2+1: rank 2 dies at step 5 and the spare takes its place.
    const four: TrainConfig = { ...base, worldSize: 4, steps: 10, snapshot: { k: 2, m: 1 } }
    const c = ok(await trainMesh(5, four))
    const d = ok(await trainMesh(5, off(four), { kill: { rank: 2, atStep: 5 } }))
    t.true(
      d.statuses.flatMap(s => s.recoveries).some(r => r.mode === 'replace'),
      'a spare took the rank from the snapshots'
    )
    t.true(same(c.params, d.params), 'four ranks, one replaced: offloaded = on the device')
    // Lion and the 8-bit optimizers go through the threads too.
    for (const optimizer of ['lion', 'adamw8bit', 'lion8bit'] as const) {
      const cfg: TrainConfig = { ...base, worldSize: 2, steps: 6, lr: 1e-3, optimizer }
      t.true(same(ok(await trainMesh(2, cfg)).params, ok(await trainMesh(2, off(cfg))).params), optimizer)
    }
  }
)

test.serial('--device-memory: a model whose training state does not fit fails with a clear error that names --offload cpu; offloaded, it trains', async t => {
  const N = gptLayout(base.model).length
  // 16 bytes per parameter (master, gradient, two moments) alone exceed this cap; the
  // streamed model and the activations fit it (about 1.4 MB for this model).
  const cap = 16 * N - 1
  const capped = (): CpuBackend => new CpuBackend({ deviceMemoryBytes: cap })
  const cfg: TrainConfig = { ...base, worldSize: 1, steps: 4 }
  const failed = await trainMesh(1, cfg, { backendOf: capped })
  t.is(failed.errors.length, 1)
  const err = failed.errors[0]!
  t.true(err instanceof TrainingError, err.message)
  t.regex(err.message, /does not fit this device: .*--device-memory \d+ bytes.*--offload cpu/)
  const bes: CpuBackend[] = []
  const fits = ok(
    await trainMesh(
      1,
      { ...cfg, offload: { threads: 1 } },
      {
        backendOf: () => {
          const be = capped()
          bes.push(be)
          return be
        }
      }
    )
  )
  // The shard's 16 bytes per parameter are what left the device, to the byte.
  const uncapped = new CpuBackend()
  const onDevice = ok(await trainMesh(1, cfg, { backendOf: () => uncapped }))
  t.log(`device bytes at peak: offloaded ${bes[0]!.peakAllocatedBytes}, on the device ${uncapped.peakAllocatedBytes} (${N} parameters)`)
  t.is(uncapped.peakAllocatedBytes - bes[0]!.peakAllocatedBytes, 16 * N)
  t.true(same(fits.params, onDevice.params), 'the offloaded run under the cap = the uncapped run on the device')
})
