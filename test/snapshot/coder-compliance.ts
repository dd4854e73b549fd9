import test from 'ava'
import { createErasureCoder, TooFewFragmentsError, type ErasureCoder } from '../../codec/index.ts'
import { AbortError, ProtocolError, Rng } from '../../core/index.ts'
import { encodeState, stripeState, writeState, type SnapshotCoder, type SnapshotFragment, type StripeSpec } from '../../snapshot/index.ts'
import { bytesEqual, randomState } from './helpers.ts'

/** One erasure coder per (k, m), for the inline coder and the reference. */
export function coders(): (k: number, m: number) => ErasureCoder {
  const made = new Map<string, ErasureCoder>()
  return (k, m) => made.get(`${k}/${m}`) ?? made.set(`${k}/${m}`, createErasureCoder({ k, m })).get(`${k}/${m}`)!
}

const spec = (k: number, m: number, segmentBytes: number): StripeSpec => ({ owner: 'p0', rank: 0, epoch: 3, k, m, segmentBytes })

const sameFragments = (a: readonly SnapshotFragment[], b: readonly SnapshotFragment[]): boolean =>
  a.length === b.length &&
  a.every(
    (f, i) =>
      JSON.stringify(f.label, (_, v) => (typeof v === 'bigint' ? v.toString() : v)) ===
        JSON.stringify(b[i]!.label, (_, v) => (typeof v === 'bigint' ? v.toString() : v)) &&
      f.segments.length === b[i]!.segments.length &&
      f.segments.every((s, j) => bytesEqual(s, b[i]!.segments[j]!))
  )

/**
 * The suite every SnapshotCoder must pass: the bytes of state.ts and fragment.ts's one-thread
 * functions (sealState, stripeState, assembleState), segments handed on in order, typed errors,
 * cancellation. `make` builds a fresh coder; the suite stops it.
 */
export function snapshotCoderSuite(impl: string, make: () => SnapshotCoder): void {
  test(`${impl}: seal writes the checksum encodeState writes, into the buffer alloc gave`, async t => {
    const c = make()
    try {
      const s = randomState(Rng.fromSeed(1), 3000, { step: 4 })
      const buf = writeState(s, c.alloc(200_000))
      const sum = await c.seal(buf)
      t.true(bytesEqual(buf, encodeState(s)))
      t.is(typeof sum, 'bigint')
    } finally {
      c.stop()
    }
  })

  test(`${impl}: stripe gives stripeState's fragments byte for byte, segment by segment in order`, async t => {
    const c = make()
    try {
      const sealed = encodeState(randomState(Rng.fromSeed(2), 9000, { step: 5 }))
      for (const [k, m, seg] of [
        [2, 1, 8192],
        [3, 2, 10_000],
        [4, 2, 1 << 20]
      ] as const) {
        const seen: number[] = []
        const frames: Uint8Array[][] = []
        const got = await c.stripe(sealed, spec(k, m, seg), {
          onSegment: (s, f) => {
            seen.push(s)
            frames.push(f)
          }
        })
        const want = stripeState(sealed, { owner: 'p0', rank: 0, epoch: 3, coder: createErasureCoder({ k, m }), segmentBytes: seg })
        t.true(sameFragments(got, want), `k=${k} m=${m} segment ${seg}`)
        t.deepEqual(
          seen,
          want[0]!.segments.map((_, s) => s)
        )
        t.true(frames.every((f, s) => f.every((x, i) => bytesEqual(x, want[i]!.segments[s]!))))
      }
    } finally {
      c.stop()
    }
  })

  test(`${impl}: assemble rebuilds from any k fragments, parity included; too few is TooFewFragmentsError`, async t => {
    const c = make()
    try {
      const sealed = encodeState(randomState(Rng.fromSeed(3), 6000, { step: 6 }))
      const frags = await c.stripe(sealed, spec(3, 2, 16_384))
      for (const pick of [
        [0, 1, 2],
        [1, 3, 4],
        [4, 0, 2]
      ]) {
        const { state, report } = await c.assemble(
          pick.map(i => frags[i]!),
          3,
          2
        )
        t.true(bytesEqual(state, sealed), `from ${pick.join(',')}`)
        t.deepEqual(
          report.used,
          [...pick].sort((a, b) => a - b)
        )
      }
      const err = await t.throwsAsync(c.assemble([frags[0]!, frags[4]!], 3, 2))
      t.true(err instanceof TooFewFragmentsError, err?.name)
    } finally {
      c.stop()
    }
  })

  test(`${impl}: a corrupt segment is an erasure; a state whose checksum does not match is a typed STATE_CHECKSUM`, async t => {
    const c = make()
    try {
      const sealed = encodeState(randomState(Rng.fromSeed(4), 4000, { step: 7 }))
      const frags = await c.stripe(sealed, spec(2, 1, 8192))
      const bad = frags.map(f => ({ label: f.label, segments: f.segments.map(s => s.slice()) }))
      const seg = bad[0]!.segments[1]!
      seg[100] = seg[100]! ^ 1
      const { state, report } = await c.assemble(bad, 2, 1)
      t.true(bytesEqual(state, sealed))
      t.deepEqual(report.corrupt, [0])
      // Fragments of another state under these labels: every frame is sound, the whole is not.
      const other = await c.stripe(encodeState(randomState(Rng.fromSeed(5), 4000, { step: 7 })), spec(2, 1, 8192))
      const mixed = other.map((f, i) => ({ label: frags[i]!.label, segments: f.segments }))
      const err = await t.throwsAsync(c.assemble(mixed, 2, 1))
      t.true(err instanceof ProtocolError, err?.name)
      t.is((err as ProtocolError).code, 'STATE_CHECKSUM')
    } finally {
      c.stop()
    }
  })

  test(`${impl}: an aborted signal rejects with AbortError; after stop every call rejects`, async t => {
    const c = make()
    const sealed = encodeState(randomState(Rng.fromSeed(6), 1000, { step: 8 }))
    const ctl = new AbortController()
    ctl.abort()
    await t.throwsAsync(c.stripe(sealed, spec(2, 1, 4096), { signal: ctl.signal }), { instanceOf: AbortError })
    await t.throwsAsync(c.seal(sealed.slice(), { signal: ctl.signal }), { instanceOf: AbortError })
    c.stop()
    c.stop()
    if (c.name === 'threads') await t.throwsAsync(c.stripe(sealed, spec(2, 1, 4096)), { instanceOf: AbortError })
    else t.pass('the inline coder holds nothing to stop')
  })
}
