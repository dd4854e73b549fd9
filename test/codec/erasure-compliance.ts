import test from 'ava'
import { type ErasureCoder, TooFewFragmentsError, encodeStripe, encodeFragment, decodeStripe } from '../../codec/index.ts'
import type { Rng } from '../../core/index.ts'
import { seededRng } from '../helpers/seed.ts'

/**
 * The suite every ErasureCoder must pass. `factory` builds a coder for (k, m). Run it from a
 * .test.ts file once per implementation.
 */
export function erasureCoderSuite(impl: string, factory: (k: number, m: number) => ErasureCoder): void {
  const data = (rng: Rng, k: number, size: number): Uint8Array[] => Array.from({ length: k }, () => rng.fill(new Uint8Array(size)))

  const every = (n: number, r: number): number[][] => {
    const out: number[][] = []
    const rec = (start: number, acc: number[]): void => {
      if (acc.length === r) {
        out.push([...acc])
        return
      }
      for (let i = start; i < n; i++) rec(i + 1, [...acc, i])
    }
    rec(0, [])
    return out
  }

  test(`${impl}: every erasure pattern of up to m losses rebuilds, m + 1 losses is a typed error`, t => {
    const { rng } = seededRng(t, 41)
    for (const [k, m] of [
      [1, 1],
      [2, 1],
      [2, 2],
      [3, 2],
      [4, 2],
      [3, 3],
      [5, 3]
    ] as const) {
      const coder = factory(k, m)
      t.is(coder.k, k)
      t.is(coder.m, m)
      const d = data(rng, k, 37)
      const parity = coder.encode(d)
      t.is(parity.length, m)
      const all = [...d, ...parity]
      for (let lost = 0; lost <= m; lost++) {
        for (const pattern of every(k + m, lost)) {
          const frags = all.map((f, i) => (pattern.includes(i) ? undefined : f.slice()))
          const out = coder.reconstruct(frags)
          out.forEach((o, i) => t.deepEqual(o, d[i], `k=${k} m=${m} lost [${pattern}] fragment ${i}`))
        }
      }
      for (const pattern of every(k + m, m + 1)) {
        const frags = all.map((f, i) => (pattern.includes(i) ? undefined : f))
        const err = t.throws(() => coder.reconstruct(frags), { instanceOf: TooFewFragmentsError })
        t.deepEqual(err.missing, pattern, 'the error names exactly the missing fragments')
      }
    }
  })

  test(`${impl}: random erasure patterns on larger codes`, t => {
    const { rng } = seededRng(t, 42)
    for (const [k, m] of [
      [8, 4],
      [10, 4],
      [16, 4],
      [20, 10],
      [200, 55]
    ] as const) {
      const coder = factory(k, m)
      const d = data(rng, k, 1 + rng.int(0, 300))
      const all = [...d, ...coder.encode(d)]
      for (let trial = 0; trial < 20; trial++) {
        const lost = rng.shuffle(Array.from({ length: k + m }, (_, i) => i)).slice(0, rng.int(0, m + 1))
        const out = coder.reconstruct(all.map((f, i) => (lost.includes(i) ? undefined : f)))
        t.true(
          out.every((o, i) => Buffer.from(o).equals(Buffer.from(d[i]!))),
          `k=${k} m=${m} lost [${lost}]`
        )
      }
    }
  })

  test(`${impl}: parameters and fragment shapes are validated (limit: maxErasureTotal)`, t => {
    t.throws(() => factory(0, 1), { name: 'InvalidArgumentError' })
    t.throws(() => factory(1, 0), { name: 'InvalidArgumentError' })
    t.throws(() => factory(200, 56), { name: 'InvalidArgumentError' }, 'k + m = 256')
    t.throws(() => factory(2.5, 1), { name: 'InvalidArgumentError' })
    const c = factory(3, 2)
    t.throws(() => c.encode([new Uint8Array(4), new Uint8Array(4)]), { name: 'InvalidArgumentError' }, 'too few data fragments')
    t.throws(() => c.encode([new Uint8Array(4), new Uint8Array(5), new Uint8Array(4)]), { name: 'InvalidArgumentError' }, 'unequal sizes')
    t.throws(() => c.encode([new Uint8Array(0), new Uint8Array(0), new Uint8Array(0)]), { name: 'InvalidArgumentError' }, 'empty fragments')
    t.throws(() => c.reconstruct([new Uint8Array(4)]), { name: 'InvalidArgumentError' }, 'wrong count')
  })

  test(`${impl}: stripe sizes over the caps are refused before copying (limit: maxStripeBytes)`, t => {
    const c = factory(200, 4)
    const shared = new Uint8Array(6 * 1024 * 1024)
    t.throws(() => c.encode(new Array(200).fill(shared)), { name: 'LimitExceededError' })
  })

  test(`${impl}: stripes round-trip for awkward payload sizes from any k fragments`, t => {
    const { rng } = seededRng(t, 43)
    const coder = factory(4, 2)
    for (const n of [0, 1, 3, 4, 5, 1000, 4097]) {
      const payload = rng.fill(new Uint8Array(n))
      const encoded = encodeStripe(payload, coder).map(encodeFragment)
      const subset = rng.shuffle([...encoded]).slice(0, 4)
      const out = decodeStripe(subset, coder, { payloadBytes: n })
      t.deepEqual(out.payload, payload, `payload of ${n}`)
      t.deepEqual(out.rejected, [])
    }
  })
}
