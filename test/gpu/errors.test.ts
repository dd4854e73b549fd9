// Typed errors from the CUDA backend: NVRTC compile errors carry the log, a failing driver call
// is a DeviceError naming the call and status, bad indices are reported, not undefined behaviour.
import { gpuTest, up } from './_cuda.ts'

gpuTest('an NVRTC compile error is a KernelCompileError with the compiler log', (t, be) => {
  const err = t.throws(() => be.compileForTest('broken', 'extern "C" __global__ void k() { this_is_not_defined(); }'), {
    name: 'KernelCompileError'
  }) as unknown as { log: string; kernel: string }
  t.is(err.kernel, 'broken')
  t.regex(err.log, /this_is_not_defined/)
})

gpuTest('a failing driver call is a DeviceError with call and status name', (t, be) => {
  const err = t.throws(() => be.badCopyForTest(), { name: 'DeviceError' }) as unknown as { call: string; statusName: string; status: number }
  t.is(err.call, 'cuMemcpyDtoH_v2')
  t.regex(err.statusName, /^CUDA_ERROR_/)
  t.not(err.status, 0)
  t.notThrows(() => be.synchronize(), 'the context survives')
})

gpuTest('crossEntropy reports a target outside [0, V) at the next synchronize', (t, be) => {
  const N = 4
  const V = 10
  const logits = up(be, 'f32', new Float32Array(N * V))
  const losses = be.alloc('f32', [N])
  const tg = be.alloc('i32', [N])
  be.write(tg, new Int32Array([1, 2, 10, 3]))
  be.crossEntropy(losses, null, logits, tg, N, V, V, 1)
  t.throws(() => be.synchronize(), { name: 'InvalidArgumentError', message: /target 10 at index 2/ })
})

gpuTest('encoderForward reports a token outside the table', (t, be) => {
  const B = 1
  const T = 2
  const C = 8
  const out = be.alloc('f32', [B * T * C])
  const wte = be.alloc('f32', [4 * C])
  const wpe = be.alloc('f32', [T * C])
  const tok = be.alloc('i32', [2])
  be.write(tok, new Int32Array([0, -1]))
  be.encoderForward(out, tok, wte, wpe, B, T, C)
  t.throws(() => be.read(out), { name: 'InvalidArgumentError', message: /token -1 at index 1/ })
})

gpuTest('ops validate dtypes and sizes before launching', (t, be) => {
  const a = be.alloc('f32', [8])
  const b = be.alloc('bf16', [8])
  const c = be.alloc('f32', [7])
  t.throws(() => be.add(a, b), { name: 'InvalidArgumentError' })
  t.throws(() => be.add(a, c), { name: 'InvalidArgumentError' })
  t.throws(() => be.matmulForward(a, a, a, null, 2, 2, 3), { name: 'InvalidArgumentError' })
})
