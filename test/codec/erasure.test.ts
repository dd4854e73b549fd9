import test from 'ava'
import { createErasureCoder, createWasmErasureCoder, checksum64 } from '../../codec/index.ts'
import { erasureCoderSuite } from './erasure-compliance.ts'
import { hex } from '../helpers/seed.ts'

erasureCoderSuite('wasm', (k, m) => createWasmErasureCoder({ k, m }))

/** Deterministic data: byte j of fragment i is (i * 7 + j * 13 + 1) mod 256. */
const fixed = (k: number, size: number): Uint8Array[] =>
  Array.from({ length: k }, (_, i) => Uint8Array.from({ length: size }, (_, j) => (i * 7 + j * 13 + 1) & 0xff))

test('golden parity vectors: an upgrade must not silently change the encoding', t => {
  const c42 = createErasureCoder({ k: 4, m: 2 })
  const p = c42.encode(fixed(4, 16))
  t.deepEqual(p.map(hex), GOLDEN_4_2)
  for (const [k, m, sum] of GOLDEN_SUMS) {
    const parity = createErasureCoder({ k, m }).encode(fixed(k, 1024))
    t.is(checksum64(Buffer.concat(parity)).toString(16), sum, `RS(${k},${m}) parity over 1 KiB fragments`)
  }
})

test('unknown coder names are refused', t => {
  t.throws(() => createErasureCoder({ k: 2, m: 1, impl: 'isal' as 'wasm' }), { name: 'InvalidArgumentError' })
})

// Recorded from @subspace/reed-solomon-erasure.wasm 0.2.5 (the Rust reed-solomon-erasure crate's
// systematic Vandermonde code over GF(2^8), polynomial 0x11d).
const GOLDEN_4_2 = ['3050d8a4548651e7b868a79b46b3ce98', '5993218b5da58800c17bae14bfe0c78f']
const GOLDEN_SUMS: Array<[number, number, string]> = [
  [4, 2, 'eefe5295fcc45b22'], [8, 4, '75d184be5235c512'], [10, 4, 'b1a2f39f374255a'], [16, 4, 'a69063fd05242c8a']
]

test('regression: hundreds of reconstructs in a row stay correct (the upstream wrapper double-frees)', t => {
  const coder = createWasmErasureCoder({ k: 4, m: 2 })
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
