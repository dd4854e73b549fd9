import type { Backend, Tensor } from '../../gpu/backend.ts'
import { adam8Blocks, ADAM8_BLOCK } from '../../gpu/adam8.ts'
import { cpu, down, gpuTest, rand, up } from './_cuda.ts'

// The 8-bit optimizer's state is a snapshot's and a recovery's: the CUDA step must be the CPU
// reference's bit for bit (params, codes, scales, bf16 copy), step after step.
gpuTest('adamw8bit (seed 31, 6 steps, whole and partial blocks, a view at an odd offset): bit-identical to the CPU reference', (t, be) => {
  const n = 3 * ADAM8_BLOCK + 517
  const p = rand(n, 31)
  const grads = Array.from({ length: 6 }, (_, s) => rand(n, 32 + s, s === 3 ? 1e-4 : 2))
  // A block whose gradients are 0 in every step keeps a zero absmax.
  for (const g of grads) g.fill(0, ADAM8_BLOCK, 2 * ADAM8_BLOCK)
  const hp = { lr: 3e-3, beta1: 0.9, beta2: 0.95, eps: 1e-8, weightDecay: 0.1, gradScale: 0.25 }
  const run = (x: Backend): { out: Uint8Array[]; low: Uint16Array } => {
    const tp = up(x, 'f32', p)
    const m = x.alloc('u8', [n])
    const v = x.alloc('u8', [n])
    const scales = x.alloc('f32', [2 * adam8Blocks(n)])
    const low = x.alloc('bf16', [n])
    // A second shard-like segment: views of params, codes and scales starting mid-buffer.
    const k = 1030
    const seg = (): [Tensor, Tensor, Tensor, Tensor] => [
      x.view(tp, n - k, [k]),
      x.view(m, n - k, [k]),
      x.view(v, n - k, [k]),
      x.view(scales, 2 * adam8Blocks(n) - 2, [2])
    ]
    for (let s = 0; s < grads.length; s++) {
      const tg = up(x, 'f32', grads[s]!)
      x.adamw8bit(
        x.view(tp, 0, [n - k]),
        x.view(tg, 0, [n - k]),
        x.view(m, 0, [n - k]),
        x.view(v, 0, [n - k]),
        x.view(scales, 0, [2 * adam8Blocks(n - k)]),
        { ...hp, step: s + 1 },
        x.view(low, 0, [n - k])
      )
      const [sp, sm, sv, ss] = seg()
      x.adamw8bit(sp, x.view(tg, n - k, [k]), sm, sv, ss, { ...hp, step: s + 1, weightDecay: 0 }, x.view(low, n - k, [k]))
    }
    const bytes = (a: ArrayBufferView): Uint8Array => new Uint8Array(a.buffer.slice(a.byteOffset, a.byteOffset + a.byteLength))
    return { out: [bytes(down(x, tp)), bytes(x.read(m)), bytes(x.read(v)), bytes(down(x, scales))], low: x.read(low) as Uint16Array }
  }
  const want = run(cpu)
  const got = run(be)
  const names = ['params', 'm codes', 'v codes', 'scales']
  for (let i = 0; i < 4; i++) {
    const a = got.out[i]!
    const b = want.out[i]!
    const at = a.findIndex((x, j) => x !== b[j])
    t.is(at, -1, `${names[i]} differ first at byte ${at}`)
  }
  t.is(
    got.low.findIndex((x, j) => x !== want.low[j]),
    -1,
    'bf16 copy'
  )
  t.true(new Set(want.out[1]).size > 100, 'the m codes use much of the map')
})
