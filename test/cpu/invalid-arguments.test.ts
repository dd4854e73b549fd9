import test from 'ava'
import { LimitExceededError } from '../../core/index.ts'
import { CpuBackend, CPU_LIMITS, type Backend, type Tensor } from '../../gpu/index.ts'
import { upload, uploadI32, readF32 } from './fd.ts'

/** Expects an InvalidArgumentError whose message names the op and the argument. */
function refuses(t: import('ava').ExecutionContext, fn: () => void, op: string, arg: string): void {
  const err = t.throws(fn, { name: 'InvalidArgumentError' })
  t.true(err.message.startsWith(`${op}:`) && err.message.includes(arg), `message '${err.message}' should name ${op} and ${arg}`)
}

test('wrong dtype for an op argument is refused, naming the op and argument, before anything is written', t => {
  const be = new CpuBackend()
  const N = 2
  const C = 4
  const out = upload(be, new Float32Array(N * C).fill(7))
  const inp = be.alloc('f32', [N * C])
  const w = be.alloc('f32', [C])
  const b = be.alloc('f32', [C])
  const mean = be.alloc('f32', [N])
  const rstd = be.alloc('f32', [N])
  refuses(t, () => be.layernormForward(out, mean, rstd, inp, be.alloc('i32', [C]), b, N, C), 'layernormForward', 'weight')
  refuses(t, () => be.layernormForward(out, be.alloc('u8', [N]), rstd, inp, w, b, N, C), 'layernormForward', 'mean')
  refuses(t, () => be.encoderForward(out, be.alloc('f32', [N]), w, inp, 1, N, C), 'encoderForward', 'tokens')
  refuses(t, () => be.crossEntropy(be.alloc('f32', [N]), null, out, be.alloc('f32', [N]), N, C, C, 1), 'crossEntropy', 'targets')
  refuses(t, () => be.quantize(be.alloc('i32', [8]), be.alloc('f32', [1]), inp, 8, 8), 'quantize', 'codes')
  refuses(
    t,
    () => be.adamw(inp, be.alloc('bf16', [N * C]), inp, inp, { lr: 1, beta1: 0.9, beta2: 0.9, eps: 1e-8, weightDecay: 0, step: 1, gradScale: 1 }),
    'adamw',
    'grads'
  )
  refuses(
    t,
    () => be.adamw(inp, inp, inp, inp, { lr: 1, beta1: 0.9, beta2: 0.9, eps: 1e-8, weightDecay: 0, step: 1, gradScale: 1 }, be.alloc('f32', [N * C])),
    'adamw',
    'paramsLowp'
  )
  refuses(t, () => be.write(inp, new Int32Array(2)), 'write', 'Float32Array')
  refuses(t, () => be.copy(inp, be.alloc('bf16', [N * C])), 'copy', 'dst')
  refuses(t, () => be.cast(be.alloc('i32', [N * C]), inp), 'cast', 'dst')
  t.deepEqual(readF32(be, out), new Float32Array(N * C).fill(7))
})

test('bf16 activations are refused by every compute op on the cpu backend (only memory ops and cast take bf16)', t => {
  const be = new CpuBackend()
  const N = 2
  const C = 4
  const h = be.alloc('bf16', [N * C])
  const f = be.alloc('f32', [N * C])
  const hC = be.alloc('bf16', [C])
  const fC = be.alloc('f32', [C])
  const fN = be.alloc('f32', [N])
  refuses(t, () => be.geluForward(h, f), 'geluForward', 'out')
  refuses(t, () => be.geluBackward(f, h, f), 'geluBackward', 'inp')
  refuses(t, () => be.matmulForward(f, h, be.alloc('f32', [C * C]), null, N, C, C), 'matmulForward', 'inp')
  refuses(t, () => be.layernormForward(f, fN, fN, f, hC, fC, N, C), 'layernormForward', 'weight')
  refuses(t, () => be.residualForward(h, f, f), 'residualForward', 'out')
  refuses(t, () => be.add(f, h), 'add', 'src')
  refuses(t, () => be.attentionForward(h, be.alloc('f32', [2]), be.alloc('bf16', [3 * N * C]), 1, N, C, 1), 'attentionForward', 'out')
  refuses(t, () => be.gemm({ a: h, b: f, c: f, m: 2, n: 2, k: 2 }), 'gemm', 'a')
  refuses(t, () => be.sumSquares(h), 'sumSquares', 't')
  // The memory ops and cast do accept bf16.
  be.fill(h, 2)
  be.cast(f, h)
  t.deepEqual(readF32(be, f), new Float32Array(N * C).fill(2))
  be.write(h, Uint16Array.of(0x3f80), 1)
  t.is((be.read(be.view(h, 1, [1])) as Uint16Array)[0], 0x3f80)
})

test('wrong lengths and sizes are refused: element counts, C not divisible by NH, Vp < V, view out of range', t => {
  const be = new CpuBackend()
  const f = (n: number): Tensor => be.alloc('f32', [n])
  refuses(t, () => be.matmulForward(f(6), f(8), f(8), null, 2, 4, 2), 'matmulForward', 'out')
  refuses(t, () => be.matmulForward(f(4), f(8), f(8), f(3), 2, 4, 2), 'matmulForward', 'bias')
  refuses(t, () => be.geluBackward(f(4), f(4), f(5)), 'geluBackward', 'dout')
  refuses(t, () => be.attentionForward(f(2 * 6), f(2 * 4), f(2 * 18), 1, 2, 6, 4), 'attentionForward', 'NH')
  refuses(t, () => be.attentionForward(f(2 * 6), f(5), f(2 * 18), 1, 2, 6, 3), 'attentionForward', 'lse')
  refuses(t, () => be.crossEntropy(f(2), null, f(8), be.alloc('i32', [2]), 2, 5, 4, 1), 'crossEntropy', 'Vp')
  refuses(t, () => be.encoderForward(f(2 * 3), be.alloc('i32', [2]), f(7), f(6), 1, 2, 3), 'encoderForward', 'wte')
  refuses(t, () => be.encoderForward(f(2 * 3), be.alloc('i32', [2]), f(9), f(3), 1, 2, 3), 'encoderForward', 'wpe')
  refuses(t, () => be.encoderForward(f(2 * 3), uploadI32(be, Int32Array.of(0, 3)), f(9), f(6), 1, 2, 3), 'encoderForward', 'token 3')
  refuses(t, () => be.layernormForward(f(8), f(2), f(2), f(8), f(4), f(4), 2, 0), 'layernormForward', 'C')
  refuses(t, () => be.view(f(4), 2, [3]), 'view', 'offset')
  refuses(t, () => be.write(f(4), new Float32Array(3), 2), 'write', 'offset')
  refuses(t, () => be.alloc('f32', [2, -1]), 'alloc', 'shape[1]')
  refuses(t, () => be.alloc('f64' as 'f32', [2]), 'alloc', 'dtype')
  refuses(t, () => be.fill(be.alloc('u8', [2]), 300), 'fill', 'u8')
  refuses(t, () => be.scale(f(2), NaN), 'scale', 's')
  refuses(t, () => be.adamw(f(2), f(2), f(2), f(2), { lr: 1, beta1: 1, beta2: 0.9, eps: 1e-8, weightDecay: 0, step: 1, gradScale: 1 }), 'adamw', 'beta1')
  refuses(t, () => be.adamw(f(2), f(2), f(2), f(2), { lr: 1, beta1: 0.9, beta2: 0.9, eps: 1e-8, weightDecay: 0, step: 0, gradScale: 1 }), 'adamw', 'step')
  refuses(t, () => be.lion(f(2), f(2), f(2), { lr: 1, beta1: 0.9, beta2: 1, weightDecay: 0, gradScale: 1 }), 'lion', 'beta2')
  refuses(t, () => be.lion(f(2), f(2), f(2), { lr: Infinity, beta1: 0.9, beta2: 0.9, weightDecay: 0, gradScale: 1 }), 'lion', 'lr')
  refuses(t, () => be.lion(f(2), f(3), f(2), { lr: 1, beta1: 0.9, beta2: 0.9, weightDecay: 0, gradScale: 1 }), 'lion', 'grads')
  const hp8 = { lr: 1, beta1: 0.9, beta2: 0.9, eps: 1e-8, weightDecay: 0, step: 1, gradScale: 1 }
  const u8 = (n: number): Tensor => be.alloc('u8', [n])
  refuses(t, () => be.adamw8bit(f(2), f(2), u8(2), u8(2), f(2), { ...hp8, eps: 0 }), 'adamw8bit', 'eps')
  refuses(t, () => be.adamw8bit(f(2), f(2), f(2), u8(2), f(2), hp8), 'adamw8bit', 'm must be u8')
  refuses(t, () => be.adamw8bit(f(2), f(2), u8(2), u8(3), f(2), hp8), 'adamw8bit', 'v must have 2')
  refuses(t, () => be.adamw8bit(f(2049), f(2049), u8(2049), u8(2049), f(2), hp8), 'adamw8bit', 'scales must have 4')
  const lion8 = { lr: 1, beta1: 0.9, beta2: 0.99, weightDecay: 0, gradScale: 1 }
  refuses(t, () => be.lion8bit(f(2), f(2), u8(2), f(1), { ...lion8, beta1: 1 }), 'lion8bit', 'beta1')
  refuses(t, () => be.lion8bit(f(2), f(2), f(2), f(1), lion8), 'lion8bit', 'm must be u8')
  refuses(t, () => be.lion8bit(f(2), f(2), u8(3), f(1), lion8), 'lion8bit', 'm must have 2')
  refuses(t, () => be.lion8bit(f(2049), f(2049), u8(2049), f(4), lion8), 'lion8bit', 'scales must have 2')
})

test('foreign, freed and disposed tensors are refused; views die with their base', t => {
  const be = new CpuBackend()
  const other: Backend = new CpuBackend()
  const x = be.alloc('f32', [4])
  refuses(t, () => be.geluForward(x, other.alloc('f32', [4])), 'geluForward', 'inp')
  const v = be.view(x, 1, [2])
  be.free(v) // freeing a view is a no-op
  be.fill(v, 1)
  t.is(be.allocatedBytes, 16)
  be.free(x)
  t.is(be.allocatedBytes, 0)
  refuses(t, () => be.fill(x, 0), 'fill', 'freed')
  refuses(t, () => be.read(v), 'read', 'freed')
  be.dispose()
  refuses(t, () => be.alloc('f32', [1]), 'alloc', 'disposed')
})

test('allocations over the tensor-size cap or the total cap are LimitExceededError, before allocating (limit: CPU_LIMITS)', t => {
  const be = new CpuBackend({ maxTensorBytes: 1024, maxTotalBytes: 2048 })
  t.throws(() => be.alloc('f32', [257]), { instanceOf: LimitExceededError, message: /cpu tensor bytes/ })
  be.alloc('f32', [256])
  be.alloc('bf16', [512])
  t.throws(() => be.alloc('u8', [1]), { instanceOf: LimitExceededError, message: /cpu backend total bytes/ })
  t.is(be.allocatedBytes, 2048)
  // The default cap refuses a tensor V8 could not hold, instead of crashing.
  const big = new CpuBackend()
  t.throws(() => big.alloc('f32', [CPU_LIMITS.maxTensorBytes / 4 + 1]), { instanceOf: LimitExceededError })
  t.throws(() => big.alloc('f32', [1, 1, 1, 1, 1, 1, 1, 1, 1]), { instanceOf: LimitExceededError, message: /rank/ })
})
