import test from 'ava'
import { shardRange } from '../../core/index.ts'
import { createErrorFeedback, createZeroComm, type ErrorFeedback, type Wire } from '../../mesh/collective/index.ts'
import { seededRng } from '../helpers/seed.ts'
import { exactSum, firstDiff, hierQuantBound, interleavedZone, randomVec, serialHierReduce, simGroup, zoneOf, type SerialFeedback } from './helpers.ts'

// qgZ error feedback: what quantization dropped from each value a rank sends is kept locally
// (per tier level) and added to the same element the next time it is sent. Over repeated
// reductions of the same gradients the dropped parts telescope, so the mean of the results
// converges to the exact sum (error ~ residual / N), where without feedback every call makes
// the same error. Both properties fail if the residual is dropped between calls.

const CALLS = 24

/** Largest |mean(results) - exact| and |first result - exact| over the vector. */
function errors(means: Float64Array, first: Float32Array, exact: Float64Array): { mean: number; single: number } {
  let mean = 0
  let single = 0
  for (let i = 0; i < exact.length; i++) {
    mean = Math.max(mean, Math.abs(means[i]! - exact[i]!))
    single = Math.max(single, Math.abs(first[i]! - exact[i]!))
  }
  return { mean, single }
}

for (const [P, Z, bits] of [
  [4, 2, 4],
  [7, 3, 4],
  [6, 2, 8]
] as const) {
  test(`simnet P=${P} Z=${Z} int${bits}: hierarchical reduce-scatter with error feedback carries the residual into the next call (serial feedback model bit for bit; mean of ${CALLS} calls converges)`, async t => {
    const { rng, seed } = seededRng(t, 800 + P * 10 + bits)
    const zone = (r: number): string => (P % 2 === 0 ? interleavedZone(r, P, Z) : zoneOf(r, P, Z))
    const g = await simGroup(seed, P, zone, { chunkBytes: 256 })
    try {
      const wire: Wire = { kind: 'quant', bits, blockSize: 32 }
      const n = 1531
      const xs = g.colls.map(() => randomVec(rng, n))
      const exact = exactSum(xs, n)
      const h = g.colls[0]!.hierarchy
      const efs: ErrorFeedback[] = g.colls.map(() => createErrorFeedback())
      const model: SerialFeedback = new Map()
      const sumEf = new Float64Array(n)
      let firstEf: Float32Array | undefined
      for (let call = 0; call < CALLS; call++) {
        const res = await g.settle(Promise.all(g.colls.map((c, r) => c.hierReduceScatter(xs[r]!, { wire, errorFeedback: efs[r], step: call }))))
        const ref = serialHierReduce(xs, h, n, wire, undefined, model)
        const got = new Float32Array(n)
        res.forEach((x, r) => {
          got.set(x.data, shardRange(n, P, r).start)
        })
        t.is(firstDiff(got, ref), -1, `call ${call}: the serial error-feedback model, bit for bit`)
        // The first call has no residual yet: it is the plain quantized reduction.
        if (call === 0) t.is(firstDiff(got, serialHierReduce(xs, h, n, wire)), -1, 'first call = no feedback')
        // Every call stays within the single-call bound (the residual is at most half a step per hop).
        let worst = 0
        for (let i = 0; i < n; i++) worst = Math.max(worst, Math.abs(got[i]! - exact[i]!))
        t.true(worst <= 2 * hierQuantBound(P, Z, bits), `call ${call}: error ${worst}`)
        for (let i = 0; i < n; i++) sumEf[i]! += got[i]!
        firstEf ??= got
      }
      // Some residual is held at every rank that sent a quantized hop.
      t.true(
        efs.some(ef => [...ef.residual.values()].some(res => res.some(v => v !== 0))),
        'residuals are kept'
      )
      // Without feedback every call returns the same vector: its mean is the single-call error.
      const plain = await g.settle(Promise.all(g.colls.map((c, r) => c.hierReduceScatter(xs[r]!, { wire, step: CALLS }))))
      const noEf = new Float32Array(n)
      plain.forEach((x, r) => {
        noEf.set(x.data, shardRange(n, P, r).start)
      })
      t.is(firstDiff(noEf, firstEf!), -1)
      const means = sumEf.map(v => v / CALLS)
      const e = errors(means, noEf, exact)
      t.log(
        `P=${P} Z=${Z} int${bits}: max error of one call ${e.single.toExponential(2)}, of the mean of ${CALLS} calls with feedback ${e.mean.toExponential(2)}`
      )
      // Telescoping: mean error <= (largest residual sum) / CALLS; demand a fifth of one call's error.
      t.true(e.mean < e.single / 5, `mean error with feedback ${e.mean} vs ${e.single} without`)
    } finally {
      await g.stop()
    }
  })
}

test('simnet: ZeroComm qgZ int8 with error feedback: per-bucket residuals carry across steps, int8 bytes on the wire, reset() drops them', async t => {
  const { rng, seed } = seededRng(t, 850)
  const P = 6
  const Z = 2
  const g = await simGroup(seed, P, r => zoneOf(r, P, Z), { chunkBytes: 512 })
  try {
    const blockSize = 64
    const wire: Wire = { kind: 'quant', bits: 8, blockSize }
    const zs = g.colls.map(c => createZeroComm(c, { qgZ: { bits: 8, blockSize, errorFeedback: true } }))
    const plain = g.colls.map(c => createZeroComm(c, { qgZ: { bits: 8, blockSize } }))
    const h = g.colls[0]!.hierarchy
    const n = 2000
    const buckets = { a: g.colls.map(() => randomVec(rng, n)), b: g.colls.map(() => randomVec(rng, n, 0.01)) }
    const models: Record<string, SerialFeedback> = { a: new Map(), b: new Map() }
    const gather = (res: Array<{ data: Float32Array }>): Float32Array => {
      const out = new Float32Array(n)
      res.forEach((x, r) => {
        out.set(x.data, shardRange(n, P, r).start)
      })
      return out
    }
    let step = 0
    let lastBytes = 0
    const reduce = async (bucket: 'a' | 'b', comms = zs): Promise<Float32Array> => {
      step++
      const res = await g.settle(Promise.all(comms.map((z, r) => z.reduceGradients(bucket, buckets[bucket][r]!, { step }))))
      for (const x of res) t.is(x.op, 'qgz_reduce_scatter')
      lastBytes = res.reduce((a, x) => a + x.bytes.host + x.bytes.zone + x.bytes.wan, 0)
      return gather(res)
    }
    // Interleaved buckets: each keeps its own residual.
    const sumA = new Float64Array(n)
    for (let i = 0; i < 12; i++) {
      for (const bucket of ['a', 'b'] as const) {
        const got = await reduce(bucket)
        t.is(firstDiff(got, serialHierReduce(buckets[bucket], h, n, wire, undefined, models[bucket])), -1, `step ${step} bucket ${bucket}`)
        if (bucket === 'a') for (let k = 0; k < n; k++) sumA[k]! += got[k]!
      }
    }
    const once = await reduce('a', plain)
    // int8 on the wire: 1 + 4/64 bytes per element and hop where int4 carries 0.5 + 4/64 (a
    // ratio of 1.89, diluted by the 64-byte headers; f32 would be over 3.5).
    const int8Bytes = lastBytes
    await reduce(
      'a',
      g.colls.map(c => createZeroComm(c, { qgZ: { bits: 4, blockSize } }))
    )
    const ratio = int8Bytes / lastBytes
    t.true(ratio > 1.5 && ratio < 1.9, `int8 / int4 bytes ${ratio}`)
    const exact = exactSum(buckets.a, n)
    const e = errors(
      sumA.map(v => v / 12),
      once,
      exact
    )
    t.log(`int8 ZeroComm: one call errs ${e.single.toExponential(2)}, the mean of 12 with feedback ${e.mean.toExponential(2)}`)
    t.true(e.mean < e.single / 3, `${e.mean} vs ${e.single}`)
    // reset() drops the residuals: the next call is the plain quantized reduction again.
    for (const z of zs) z.reset()
    t.is(firstDiff(await reduce('a'), once), -1)
  } finally {
    await g.stop()
  }
})
