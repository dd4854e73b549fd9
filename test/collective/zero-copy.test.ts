import test from 'ava'
import { InvalidArgumentError, RealClock, shardRange } from '../../core/index.ts'
import { createMemoryNetwork, type ByteStream, type PeerNet } from '../../mesh/index.ts'
import { BF16_WIRE, createCollective, createZeroComm, roundTrip, type Collective, type Wire } from '../../mesh/collective/index.ts'
import { seededRng } from '../helpers/seed.ts'
import { firstDiff, randomVec, serialRingReduce } from './helpers.ts'

// Collectives send views of their inputs, outputs and pooled partial sums without copying
// them, on streams that offer ByteStream.writev (the bulk channel). These tests run them over
// a stream that reads a write's parts only when it lets go of them, a macrotask later, as a
// socket reads them when it flushes: a buffer reused or a result handed back before its
// release shows up as wrong bytes at the receiver.

interface Released {
  count: number
}

function concat(parts: readonly Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((a, p) => a + p.length, 0))
  let at = 0
  for (const p of parts) {
    out.set(p, at)
    at += p.length
  }
  return out
}

/** A stream whose gathered writes are read (joined) and released a macrotask later, in order. */
function lateReader(s: ByteStream, released: Released): ByteStream {
  let tail: Promise<void> = Promise.resolve()
  const later = (f: () => Promise<void>): Promise<void> => {
    const p = tail.then(() => new Promise<void>(resolve => setImmediate(resolve))).then(f)
    tail = p.catch(() => {})
    return p
  }
  return {
    remote: s.remote,
    protocol: s.protocol,
    [Symbol.asyncIterator]: () => s[Symbol.asyncIterator](),
    write: (chunk, options) => later(() => s.write(chunk, options)),
    async writev(parts, options = {}) {
      const held = [...parts]
      void later(() => {
        const joined = concat(held)
        released.count++
        options.onReleased?.()
        return s.write(joined)
      }).catch(() => {})
    },
    end: async options => {
      await tail
      await s.end(options)
    },
    abort: reason => {
      s.abort(reason)
    }
  }
}

/** `inner` with its outbound streams wrapped by {@link lateReader}. */
function lateNet(inner: PeerNet, released: Released): PeerNet {
  return new Proxy(inner, {
    get(target, prop) {
      if (prop === 'open')
        return async (peer: string, protocol: string, o?: { signal?: AbortSignal }) => lateReader(await target.open(peer, protocol, o), released)
      const v = Reflect.get(target, prop, target) as unknown
      return typeof v === 'function' ? v.bind(target) : v
    }
  })
}

async function lateGroup(P: number, chunkBytes: number): Promise<{ colls: Collective[]; released: Released; stop: () => Promise<void> }> {
  const hub = createMemoryNetwork()
  const inner = Array.from({ length: P }, (_, i) => hub.createPeer({ id: `p${i}`, labels: { zone: `z${i % 2}`, host: `h${i}` } }))
  await Promise.all(inner.map(n => n.start()))
  const released = { count: 0 }
  const view = { epoch: 1, members: inner.map(n => ({ id: n.self.id, zone: n.self.labels.zone, host: n.self.labels.host })) }
  const clock = new RealClock()
  const colls = inner.map(n => createCollective({ net: lateNet(n, released), view, clock, chunkBytes }))
  await Promise.all(colls.map(c => c.start()))
  return {
    colls,
    released,
    async stop() {
      await Promise.all(colls.map(c => c.stop()))
      await Promise.all(inner.map(n => n.stop()))
    }
  }
}

/**
 * Runs `call` on every rank; as each rank's call resolves, keeps a copy of its result and
 * overwrites its input and result with NaN (a caller reusing its buffers at once).
 */
async function callAndClobber(P: number, call: (r: number) => { input: Float32Array; run: Promise<{ data: Float32Array }> }): Promise<Float32Array[]> {
  return Promise.all(
    Array.from({ length: P }, async (_, r) => {
      const { input, run } = call(r)
      const { data } = await run
      const kept = data.slice()
      input.fill(Number.NaN)
      data.fill(Number.NaN)
      return kept
    })
  )
}

test('over a stream that reads sent bytes only when it releases them, ring collectives stay exact and callers may reuse inputs and results once a call resolves', async t => {
  const { rng } = seededRng(t, 41)
  for (const P of [2, 3, 5]) {
    const g = await lateGroup(P, 256)
    try {
      for (const n of [0, 1, 1037, 5003]) {
        const ring = g.colls[0]!.ring
        const xs = g.colls.map(() => randomVec(rng, n))
        const full = randomVec(rng, n)
        for (const wire of [undefined, BF16_WIRE, { kind: 'quant', bits: 8, blockSize: 32 } as Wire]) {
          const want = new Float32Array(n)
          for (let r = 0; r < P; r++) {
            const s = shardRange(n, P, r)
            want.set(roundTrip(wire ?? { kind: 'f32' }, full.subarray(s.start, s.start + s.length)), s.start)
          }
          const ag = await callAndClobber(P, r => {
            const s = shardRange(n, P, r)
            const input = full.slice(s.start, s.start + s.length)
            return { input, run: g.colls[r]!.allGather(input, n, { step: 1, ...(wire === undefined ? {} : { wire }) }) }
          })
          for (const [r, got] of ag.entries()) t.is(firstDiff(got, want), -1, `all-gather P=${P} n=${n} wire=${wire?.kind ?? 'f32'} rank ${r}`)
        }
        for (const bf16 of [false, true]) {
          const ref = serialRingReduce(xs, ring, n, bf16)
          const rs = await callAndClobber(P, r => {
            const input = xs[r]!.slice()
            return { input, run: g.colls[r]!.reduceScatter(input, { step: 2, ...(bf16 ? { wire: BF16_WIRE } : {}) }) }
          })
          for (const [r, got] of rs.entries()) {
            const s = shardRange(n, P, r)
            t.is(firstDiff(got, ref.subarray(s.start, s.start + s.length)), -1, `reduce-scatter P=${P} n=${n} bf16=${bf16} rank ${r}`)
          }
        }
        const ref = serialRingReduce(xs, ring, n)
        const ar = await callAndClobber(P, r => {
          const input = xs[r]!.slice()
          return { input, run: g.colls[r]!.allReduce(input, { step: 3 }) }
        })
        for (const [r, got] of ar.entries()) t.is(firstDiff(got, ref), -1, `all-reduce P=${P} n=${n} rank ${r}`)
      }
      t.true(g.released.count > 0, 'the gathered writes were used')
    } finally {
      await g.stop()
    }
  }
})

test("results written into the caller's arrays (into) equal fresh results, call after call, and are the arrays returned", async t => {
  const { rng } = seededRng(t, 42)
  const P = 3
  const n = 4099
  const g = await lateGroup(P, 512)
  try {
    const ring = g.colls[0]!.ring
    const agInto = g.colls.map(() => new Float32Array(n))
    const rsInto = g.colls.map((_, r) => new Float32Array(shardRange(n, P, r).length))
    for (let call = 0; call < 3; call++) {
      const xs = g.colls.map(() => randomVec(rng, n))
      const full = randomVec(rng, n)
      const ag = await Promise.all(
        g.colls.map((c, r) => {
          const s = shardRange(n, P, r)
          return c.allGather(full.slice(s.start, s.start + s.length), n, { step: call, into: agInto[r] })
        })
      )
      ag.forEach((res, r) => {
        t.is(res.data, agInto[r]!, "the caller's array is the result")
        t.is(firstDiff(res.data, full), -1, `all-gather call ${call} rank ${r}`)
      })
      const ref = serialRingReduce(xs, ring, n)
      const rs = await Promise.all(g.colls.map((c, r) => c.reduceScatter(xs[r]!, { step: call, into: rsInto[r] })))
      rs.forEach((res, r) => {
        const s = shardRange(n, P, r)
        t.is(res.data, rsInto[r]!)
        t.is(firstDiff(res.data, ref.subarray(s.start, s.start + s.length)), -1, `reduce-scatter call ${call} rank ${r}`)
      })
    }
  } finally {
    await g.stop()
  }
})

test('into of the wrong type or length, or overlapping the input, is an InvalidArgumentError and does not poison the collective', async t => {
  const P = 2
  const n = 10
  const g = await lateGroup(P, 256)
  try {
    const c = g.colls[0]!
    const mine = new Float32Array(5)
    const x = new Float32Array(n)
    t.throws(() => c.allGather(mine, n, { into: new Float32Array(n - 1) }), { instanceOf: InvalidArgumentError })
    t.throws(() => c.allGather(mine, n, { into: new Uint32Array(n) as unknown as Float32Array }), { instanceOf: InvalidArgumentError })
    t.throws(() => c.reduceScatter(x, { into: new Float32Array(4) }), { instanceOf: InvalidArgumentError })
    t.throws(() => c.reduceScatter(x, { into: x.subarray(3, 8) }), { instanceOf: InvalidArgumentError })
    const shared = new Float32Array(n + 5)
    t.throws(() => c.allGather(shared.subarray(n, n + 5), n, { into: shared.subarray(1, n + 1) }), { instanceOf: InvalidArgumentError })
    t.throws(() => c.allReduce(x, { into: x }), { instanceOf: InvalidArgumentError })
    // Adjacent, not overlapping: allowed.
    const res = await Promise.all(g.colls.map((cc, r) => cc.allGather(shared.subarray(n, n + 5), n, { into: r === 0 ? shared.subarray(0, n) : undefined })))
    t.is(res[0]!.data.buffer, shared.buffer)
    t.is(c.stats().failure, undefined)
  } finally {
    await g.stop()
  }
})

test('body and partial-sum buffers come from the pool: repeated reduce-scatters allocate no more buffers than one call lends', async t => {
  const { rng } = seededRng(t, 43)
  const P = 3
  const perChunk = 1024
  const n = P * 16 * perChunk
  const g = await lateGroup(P, 4 * perChunk)
  try {
    const calls = 4
    for (let call = 0; call < calls; call++) {
      const xs = g.colls.map(() => randomVec(rng, n))
      await Promise.all(g.colls.map((c, r) => c.reduceScatter(xs[r]!, { step: call })))
    }
    for (const c of g.colls) {
      const { made, reused } = c.stats().pool
      // Each call a rank takes 16 bodies of the first hop into pooled buffers (the last hop's
      // land in its result).
      t.true(made + reused >= calls * 16, `loans ${made + reused}`)
      t.true(made <= 16, `buffers made ${made} (one per chunk would be ${calls * 16})`)
    }
  } finally {
    await g.stop()
  }
})

test("ZeroComm passes into through: weight gathers (flat, qwZ, hpZ backward) and gradient reductions (ring, qgZ) fill the caller's arrays", async t => {
  const { rng } = seededRng(t, 44)
  const P = 4
  const n = 3001
  const g = await lateGroup(P, 1024)
  try {
    for (const options of [{}, { qwZ: true, hpZ: true, qgZ: true }]) {
      const zs = g.colls.map(c => createZeroComm(c, options))
      const full = randomVec(rng, n)
      const grads = g.colls.map(() => randomVec(rng, n))
      const check = async (
        label: string,
        calls: (z: (typeof zs)[number], r: number, into: Float32Array) => Promise<{ data: Float32Array }>,
        len: (r: number) => number,
        fresh: (z: (typeof zs)[number], r: number) => Promise<{ data: Float32Array }>
      ): Promise<void> => {
        const want = await Promise.all(zs.map((z, r) => fresh(z, r)))
        const into = zs.map((_, r) => new Float32Array(len(r)))
        const got = await Promise.all(zs.map((z, r) => calls(z, r, into[r]!)))
        got.forEach((res, r) => {
          t.is(res.data, into[r]!, `${label} rank ${r}: the caller's array`)
          t.is(firstDiff(res.data, want[r]!.data), -1, `${label} rank ${r}: equal to a fresh result`)
        })
      }
      const shard = (r: number): Float32Array => {
        const s = shardRange(n, P, r)
        return full.slice(s.start, s.start + s.length)
      }
      await check(
        'forward',
        (z, r, into) => z.gatherWeights('b', shard(r), n, 'forward', { step: 1, into }),
        () => n,
        (z, r) => z.gatherWeights('b', shard(r), n, 'forward', { step: 1 })
      )
      await check(
        'backward',
        (z, r, into) => z.gatherWeights('b', shard(r), n, 'backward', { step: 1, into }),
        () => n,
        (z, r) => z.gatherWeights('b', shard(r), n, 'backward', { step: 1 })
      )
      await check(
        'grads',
        (z, r, into) => z.reduceGradients('b', grads[r]!, { step: 1, into }),
        r => shardRange(n, P, r).length,
        (z, r) => z.reduceGradients('b', grads[r]!, { step: 1 })
      )
    }
  } finally {
    await g.stop()
  }
})
