import test from 'ava'
import { createErasureCoder, createWasmErasureCoder, createSimdErasureCoder, checksum64, type ErasureCoderName } from '../../codec/index.ts'
import { gfMul, gfInvert, gfMatMul, rsGeneratorMatrix } from '../../codec/gf256.ts'
import { erasureCoderSuite } from './erasure-compliance.ts'
import { hex } from '../helpers/seed.ts'

erasureCoderSuite('wasm', (k, m) => createWasmErasureCoder({ k, m }))
erasureCoderSuite('simd', (k, m) => createSimdErasureCoder({ k, m }))
const IMPLS: ErasureCoderName[] = ['wasm', 'simd']

/** Deterministic data: byte j of fragment i is (i * 7 + j * 13 + 1) mod 256. */
const fixed = (k: number, size: number): Uint8Array[] =>
  Array.from({ length: k }, (_, i) => Uint8Array.from({ length: size }, (_, j) => (i * 7 + j * 13 + 1) & 0xff))

for (const impl of IMPLS) {
  test(`${impl}: golden parity vectors: an upgrade must not silently change the encoding`, t => {
    const c42 = createErasureCoder({ k: 4, m: 2, impl })
    t.deepEqual(c42.encode(fixed(4, 16)).map(hex), GOLDEN_4_2)
    for (const [k, m, sum] of GOLDEN_SUMS) {
      const parity = createErasureCoder({ k, m, impl }).encode(fixed(k, 1024))
      t.is(checksum64(Buffer.concat(parity)).toString(16), sum, `RS(${k},${m}) parity over 1 KiB fragments`)
    }
  })
}

test('the coders are interchangeable: fragments from one rebuild with the other', t => {
  for (const [k, m, size] of [
    [4, 2, 1],
    [10, 4, 1000],
    [7, 5, 4097]
  ] as const) {
    const data = fixed(k, size)
    const wasm = createWasmErasureCoder({ k, m })
    const simd = createSimdErasureCoder({ k, m })
    const pw = wasm.encode(data)
    const ps = simd.encode(data)
    t.deepEqual(ps.map(hex), pw.map(hex), `RS(${k},${m}) parity equal`)
    const lost = [...data, ...pw].map((f, i) => (i < m ? undefined : f))
    t.deepEqual(simd.reconstruct(lost).map(hex), data.map(hex))
    t.deepEqual(wasm.reconstruct([...data, ...ps].map((f, i) => (i < m ? undefined : f))).map(hex), data.map(hex))
  }
})

test('GF(2^8) arithmetic: field laws and the generator matrix are systematic', t => {
  for (let a = 1; a < 256; a++) {
    let inv = 0
    for (let b = 1; b < 256; b++) if (gfMul(a, b) === 1) inv = b
    t.not(inv, 0, `${a} has an inverse`)
  }
  t.is(gfMul(0x80, 2), 0x1d, 'reduction by 0x11d')
  const g = rsGeneratorMatrix(5, 3)
  for (let r = 0; r < 5; r++) for (let c = 0; c < 5; c++) t.is(g[r]![c], r === c ? 1 : 0)
  const sub = [g[0]!, g[2]!, g[5]!, g[6]!, g[7]!]
  const id = gfMatMul(gfInvert(sub), sub)
  id.forEach((row, r) => row.forEach((x, c) => t.is(x, r === c ? 1 : 0)))
  t.throws(() => gfInvert([Uint8Array.of(1, 1), Uint8Array.of(1, 1)]), { name: 'InvalidArgumentError' })
})

test('unknown coder names are refused', t => {
  t.throws(() => createErasureCoder({ k: 2, m: 1, impl: 'isal' as 'wasm' }), { name: 'InvalidArgumentError' })
})

// Recorded from @subspace/reed-solomon-erasure.wasm 0.2.5 (the Rust reed-solomon-erasure crate's
// systematic Vandermonde code over GF(2^8), polynomial 0x11d).
const GOLDEN_4_2 = ['3050d8a4548651e7b868a79b46b3ce98', '5993218b5da58800c17bae14bfe0c78f']
const GOLDEN_SUMS: Array<[number, number, string]> = [
  [4, 2, 'eefe5295fcc45b22'],
  [8, 4, '75d184be5235c512'],
  [10, 4, 'b1a2f39f374255a'],
  [16, 4, 'a69063fd05242c8a']
]

test('regression: hundreds of reconstructs in a row stay correct (the upstream wrapper double-frees)', t => {
  const coder = createWasmErasureCoder({ k: 4, m: 2 })
  t.is(createErasureCoder({ k: 2, m: 1 }).name, 'simd', 'simd is the default where available')
  const data = fixed(4, 64)
  const all = [...data, ...coder.encode(data)]
  for (let i = 0; i < 600; i++) {
    const lost = [i % 6, (i * 5 + 1) % 6].slice(0, 1 + (i % 2))
    const out = coder.reconstruct(all.map((f, j) => (lost.includes(j) ? undefined : f)))
    if (!out.every((o, j) => Buffer.from(o).equals(Buffer.from(data[j]!)))) {
      t.fail(`reconstruct ${i} (lost ${lost}) returned wrong data`)
      return
    }
  }
  t.pass()
})
