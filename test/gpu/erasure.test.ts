// The CUDA Reed-Solomon coder against the CPU coders (its reference: codec's simd coder, itself
// held byte-identical to the wasm coder): parity and rebuilt fragments compared as bytes.
import { createSimdErasureCoder, TooFewFragmentsError } from '../../codec/index.ts'
import { Rng } from '../../core/index.ts'
import { createCudaErasureCoder } from '../../gpu/cuda/index.ts'
import { gpuTest } from './_cuda.ts'

const SEED = 1903

for (const [k, m, size, offset] of [
  [8, 4, 1 << 20, 0], // the 16-byte kernel
  [10, 4, 65_536, 0],
  [4, 2, 4096, 0],
  [5, 9, 8192, 0], // three rounds of rows (4 + 4 + 1)
  [3, 2, 1001, 0], // a size that is not a multiple of 16: the byte kernel
  [4, 3, 4096, 3], // an unaligned stripe: the byte kernel
  [1, 1, 16, 0],
  [200, 55, 512, 0]
] as const) {
  gpuTest(
    `cuda erasure RS(${k},${m}) × ${size} B${offset > 0 ? ', unaligned' : ''}: same fragments as the CPU coder (seed ${SEED + k * 1000 + m})`,
    (t, be) => {
      const rng = Rng.fromSeed(SEED + k * 1000 + m)
      const data = Array.from({ length: k }, () => rng.fill(new Uint8Array(size)))
      const parity = createSimdErasureCoder({ k, m }).encode(data)
      const host = new Uint8Array(offset + (k + m) * size)
      data.forEach((d, i) => host.set(d, offset + i * size))
      const whole = be.alloc('u8', [host.length])
      be.write(whole, host)
      const stripe = offset === 0 ? whole : be.view(whole, offset, [(k + m) * size])
      const coder = createCudaErasureCoder(be, { k, m })
      coder.encode(stripe, size)
      const enc = be.read(stripe) as Uint8Array
      for (let j = 0; j < m; j++) {
        const got = enc.subarray((k + j) * size, (k + j + 1) * size)
        if (!Buffer.from(got).equals(Buffer.from(parity[j]!))) {
          t.fail(`parity ${j} differs from the CPU coder`)
          return
        }
      }
      // Lose up to m fragments, data first (the worst case), overwrite them and rebuild.
      const lost = rng.shuffle(Array.from({ length: k + m }, (_, i) => i)).slice(0, m)
      const damaged = enc.slice()
      for (const i of lost) damaged.fill(0xa5, i * size, (i + 1) * size)
      be.write(stripe, damaged)
      coder.reconstruct(
        stripe,
        size,
        Array.from({ length: k + m }, (_, i) => !lost.includes(i))
      )
      const rec = be.read(stripe) as Uint8Array
      for (let i = 0; i < k; i++) {
        if (!Buffer.from(rec.subarray(i * size, (i + 1) * size)).equals(Buffer.from(data[i]!))) {
          t.fail(`lost [${lost}]: data fragment ${i} not rebuilt`)
          return
        }
      }
      be.free(whole)
      t.pass()
    }
  )
}

gpuTest('cuda erasure: bad stripes and too few fragments are typed errors', (t, be) => {
  const coder = createCudaErasureCoder(be, { k: 3, m: 2 })
  const f32 = be.alloc('f32', [64])
  const small = be.alloc('u8', [64])
  t.throws(() => coder.encode(f32, 16), { name: 'InvalidArgumentError' }, 'not u8')
  t.throws(() => coder.encode(small, 16), { name: 'InvalidArgumentError' }, '5 × 16 > 64 bytes')
  t.throws(() => coder.encode(small, 0), { name: 'InvalidArgumentError' }, 'empty fragments')
  t.throws(() => coder.reconstruct(small, 8, [true, true]), { name: 'InvalidArgumentError' }, 'flag count')
  const err = t.throws(() => coder.reconstruct(small, 8, [false, true, false, true, false]), { instanceOf: TooFewFragmentsError })
  t.deepEqual(err.missing, [0, 2, 4])
  be.free(f32)
  be.free(small)
})
