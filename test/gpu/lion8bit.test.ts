import type { Backend, Tensor } from '../../gpu/backend.ts'
import { adam8Blocks, ADAM8_BLOCK } from '../../gpu/adam8.ts'
import { cpu, down, gpuTest, rand, up } from './_cuda.ts'

// 8-bit Lion's state is a snapshot's and a recovery's: the CUDA step (adamw.cu lion8bit_f32) must
// be the CPU reference's (gpu/host-optim.ts lion8bitHost) bit for bit (params, m codes, absmaxes,
// bf16 copy), step after step.
gpuTest('lion8bit (seed 41, 6 steps, whole and partial blocks, a segment at an odd offset, a NaN gradient): bit-identical to the CPU reference', (t, be) => {
  const n = 3 * ADAM8_BLOCK + 517
  // Two shard-like segments, each with its own blocks: [0, n − k) and [n − k, n).
  const k = 1030
  const b0 = adam8Blocks(n - k)
  const b1 = adam8Blocks(k)
  const p = rand(n, 41)
  const grads = Array.from({ length: 6 }, (_, s) => rand(n, 42 + s, s === 3 ? 1e-4 : 2))
  // A block whose gradients are 0 in every step keeps a zero absmax.
  for (const g of grads) g.fill(0, ADAM8_BLOCK, 2 * ADAM8_BLOCK)
  // A NaN gradient: its sign is 0, its m NaN, which never wins the absmax and takes code 0.
  grads[4]![5] = Number.NaN
  const hp = { lr: 3e-4, beta1: 0.9, beta2: 0.99, weightDecay: 0.1, gradScale: 0.25 }
  const run = (x: Backend): { out: Uint8Array[]; low: Uint16Array } => {
    const tp = up(x, 'f32', p)
    const m = x.alloc('u8', [n])
    const scales = x.alloc('f32', [b0 + b1])
    const low = x.alloc('bf16', [n])
    for (let s = 0; s < grads.length; s++) {
      const tg = up(x, 'f32', grads[s]!)
      const seg = (at: number, len: number, blocks: number, from: number): [Tensor, Tensor, Tensor, Tensor, Tensor] => [
        x.view(tp, at, [len]),
        x.view(tg, at, [len]),
        x.view(m, at, [len]),
        x.view(scales, from, [blocks]),
        x.view(low, at, [len])
      ]
      const [p0, g0, m0, s0, l0] = seg(0, n - k, b0, 0)
      x.lion8bit(p0, g0, m0, s0, hp, l0)
      const [p1, g1, m1, s1, l1] = seg(n - k, k, b1, b0)
      // Without decay, and on odd steps without the bf16 copy.
      x.lion8bit(p1, g1, m1, s1, { ...hp, weightDecay: 0 }, s % 2 === 0 ? l1 : null)
      x.free(tg)
    }
    const bytes = (a: ArrayBufferView): Uint8Array => new Uint8Array(a.buffer.slice(a.byteOffset, a.byteOffset + a.byteLength))
    return { out: [bytes(down(x, tp)), bytes(x.read(m)), bytes(down(x, scales))], low: x.read(low) as Uint16Array }
  }
  const want = run(cpu)
  const got = run(be)
  const names = ['params', 'm codes', 'scales']
  for (let i = 0; i < 3; i++) {
    const a = got.out[i]!
    const b = want.out[i]!
    t.is(a.length, b.length, `${names[i]} length`)
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
