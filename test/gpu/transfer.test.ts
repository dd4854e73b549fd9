// The asynchronous transfer contract (gpu/backend.ts: fence, hostAlloc, download), one body run
// on both backends: the CPU reference here and in CI, CUDA on the GPU host (page-locked memory,
// the copy stream, events polled without blocking).
import test, { type ExecutionContext } from 'ava'
import type { Backend } from '../../gpu/backend.ts'
import { cpu, gpuTest, rand } from './_cuda.ts'

type Body = (t: ExecutionContext, be: Backend) => Promise<void> | void

/** Registers `body` for the CPU backend and for CUDA (skipped, with the reason, where there is none). */
function both(title: string, body: Body): void {
  test(`cpu: ${title}`, t => body(t, cpu))
  gpuTest(`cuda: ${title}`, body)
}

both('a download lands at its offset, bit for bit what read returns, and nothing around it', async (t, be) => {
  const n = 1_000_003
  const src = be.alloc('f32', [n])
  be.write(src, rand(n, 3))
  const dst = be.hostAlloc('f32', n + 10) as Float32Array
  t.true(
    dst.every(x => x === 0),
    'host arrays start zero-filled'
  )
  await be.download(dst, src, 5).wait()
  const want = be.read(src) as Float32Array
  t.deepEqual(dst.subarray(5, 5 + n), want)
  t.true(dst.subarray(0, 5).every(x => x === 0) && dst.subarray(5 + n).every(x => x === 0))
  be.freeHost(dst)
  be.free(src)
})

both('a download sees the source as it was when issued: work issued after it may overwrite the source at once', async (t, be) => {
  const n = 4096
  const src = be.alloc('f32', [n])
  const before = rand(n, 9)
  be.write(src, before)
  const dst = be.hostAlloc('f32', n) as Float32Array
  const fence = be.download(dst, src)
  be.fill(src, 7)
  await fence.wait()
  t.deepEqual(dst, before)
  t.true((be.read(src) as Float32Array).every(x => x === 7))
  t.true(fence.passed(), 'a passed fence stays passed')
  be.freeHost(dst)
  be.free(src)
})

both('downloads of every dtype, and a fence after a chain of work', async (t, be) => {
  const cases = [
    { dtype: 'bf16', data: Uint16Array.from({ length: 513 }, (_, i) => (i * 37) & 0xffff) },
    { dtype: 'i32', data: Int32Array.from({ length: 513 }, (_, i) => i * -3) },
    { dtype: 'u8', data: Uint8Array.from({ length: 513 }, (_, i) => i & 0xff) }
  ] as const
  for (const c of cases) {
    const src = be.alloc(c.dtype, [c.data.length])
    be.write(src, c.data)
    const dst = be.hostAlloc(c.dtype, c.data.length)
    await be.download(dst, src).wait()
    t.deepEqual(dst, c.data, c.dtype)
    be.freeHost(dst)
    be.free(src)
  }
  const x = be.alloc('f32', [1 << 20])
  for (let i = 0; i < 20; i++) be.scale(x, 1.5)
  const f = be.fence()
  await f.wait()
  t.true(f.passed(), 'a waited fence has passed')
  t.true(
    (be.read(x) as Float32Array).every(v => v === 0),
    'the chain ran (zeros scale to zeros)'
  )
  be.free(x)
})

both('bad downloads are refused before anything is issued', (t, be) => {
  const src = be.alloc('f32', [16])
  const dst = be.hostAlloc('f32', 16) as Float32Array
  t.throws(() => be.download(new Uint16Array(16), src), { name: 'InvalidArgumentError', message: /host array type/ })
  t.throws(() => be.download(dst, src, 1), { name: 'InvalidArgumentError', message: /exceeds/ })
  t.throws(() => be.download(dst, src, -1), { name: 'InvalidArgumentError' })
  if (be.kind === 'cuda') t.throws(() => be.download(new Float32Array(16), src), { name: 'InvalidArgumentError', message: /page-locked/ })
  t.throws(() => be.hostAlloc('f32', 2 ** 40), { name: 'LimitExceededError' })
  be.freeHost(dst)
  be.free(src)
})

gpuTest('cuda: page-locked memory is counted, and a freed array is detached instead of pointing at freed memory', (t, be) => {
  const before = be.hostBytes
  const a = be.hostAlloc('f32', 1 << 20) as Float32Array
  t.is(be.hostBytes, before + 4 * (1 << 20))
  a[7] = 3
  be.freeHost(a)
  t.is(be.hostBytes, before)
  t.is(a.length, 0, 'the view reads as empty')
  t.throws(() => be.freeHost(a), { name: 'InvalidArgumentError', message: /page-locked/ })
})
