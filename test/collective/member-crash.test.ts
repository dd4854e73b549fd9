import test from 'ava'
import { Rng, seedFromEnv } from '../../core/index.ts'
import { CollectiveError, type Collective, type CollectiveResult } from '../../mesh/collective/index.ts'
import { firstDiff, randomVec, serialHierReduce, serialRingReduce, simGroup, zoneOf } from './helpers.ts'

type Op = 'all-gather' | 'reduce-scatter' | 'all-to-all' | 'tiered all-gather'
const LABEL: Record<Op, string> = {
  'all-gather': 'all_gather',
  'reduce-scatter': 'reduce_scatter',
  'all-to-all': 'hier_reduce_scatter',
  'tiered all-gather': 'hier_all_gather'
}

const Q4 = { kind: 'quant', bits: 4, blockSize: 256 } as const

function call(c: Collective, op: Op, xs: Float32Array[], n: number, step: number): Promise<CollectiveResult<Float32Array>> {
  const x = xs[c.rank]!
  if (op === 'all-gather' || op === 'tiered all-gather') {
    const s = c.shardOf(n)
    const mine = xs[0]!.slice(s.start, s.start + s.length)
    return op === 'all-gather' ? c.allGather(mine, n, { step }) : c.hierAllGather(mine, n, { step })
  }
  if (op === 'reduce-scatter') return c.reduceScatter(x, { step })
  return c.hierReduceScatter(x, { step, wire: Q4 })
}

/** What a call that completes must return (a complete, correct result, never a partial one). */
function expected(c: Collective, op: Op, xs: Float32Array[], n: number): Float32Array {
  if (op === 'all-gather' || op === 'tiered all-gather') return xs[0]!
  const s = c.shardOf(n)
  const full = op === 'reduce-scatter' ? serialRingReduce(xs, c.ring, n) : serialHierReduce(xs, c.hierarchy, n, Q4)
  return full.slice(s.start, s.start + s.length)
}

const TIMEOUT_MS = 2000

/**
 * One seeded run: P members in 2 zones start `op`; a random member crashes (or pauses) at a
 * random moment while calls are still running. Every survivor must settle within the bound:
 * rejected with a CollectiveError naming the op and step, or (only if it already held every
 * byte it needed when the fault hit) resolved with the complete, correct result. At least
 * one survivor must reject, and with a crash every survivor still running must.
 */
async function faultRun(seed: number, op: Op, fault: 'crash' | 'pause', stats = { rejected: 0 }): Promise<string | undefined> {
  const rng = Rng.fromSeed(seed).split(`${op}-${fault}`)
  const P = rng.int(3, 8)
  const g = await simGroup(seed, P, r => zoneOf(r, P, 2), { chunkBytes: 16 * 1024, timeoutMs: TIMEOUT_MS })
  try {
    const n = rng.int(150_000, 300_000)
    const step = rng.int(1, 1000)
    const xs = g.colls.map(() => randomVec(rng, n))
    const victim = rng.int(0, P)
    const outcomes: Array<{ settled: boolean; at: number; value?: unknown; error?: unknown }> = g.colls.map(() => ({ settled: false, at: -1 }))
    const calls = g.colls.map((c, r) =>
      call(c, op, xs, n, step).then(
        value => {
          outcomes[r] = { settled: true, at: g.sim.now(), value }
        },
        error => {
          outcomes[r] = { settled: true, at: g.sim.now(), error }
        }
      )
    )
    void calls
    await g.sim.run(rng.int(1, 40))
    if (outcomes.some(o => o.settled)) return `a call settled before the fault (seed ${seed})`
    const t0 = g.sim.now()
    if (fault === 'crash') g.simnet.crash(g.nets[victim]!.self.id)
    else g.simnet.pause(g.nets[victim]!.self.id)
    const survivors = outcomes.map((_, r) => r).filter(r => r !== victim)
    await g.sim.until(() => survivors.every(r => outcomes[r]!.settled), 5 * TIMEOUT_MS, 5)
    let rejected = 0
    for (const r of survivors) {
      const o = outcomes[r]!
      if (!o.settled) return `rank ${r} still pending ${5 * TIMEOUT_MS} ms after the ${fault} (hang)`
      if (o.error === undefined) {
        const got = (o.value as CollectiveResult<Float32Array>).data
        if (firstDiff(got, expected(g.colls[r]!, op, xs, n)) !== -1) return `rank ${r} resolved with a wrong (partial) result`
        if (o.at - t0 > 500) return `rank ${r} resolved ${o.at - t0} ms after the ${fault}: it was waiting on the victim`
        continue
      }
      rejected++
      if (!(o.error instanceof CollectiveError)) return `rank ${r} rejected with ${String(o.error)}`
      const e = o.error
      if (e.name !== 'CollectiveError' || e.op !== LABEL[op] || e.step !== step) return `rank ${r}: wrong error context ${e.op}/${e.step}`
      if (!['peer-gone', 'timeout'].includes(e.reason)) return `rank ${r}: reason ${e.reason}`
      if (e.peer === undefined) return `rank ${r}: no peer named`
      // Every survivor names the member that failed, not one that passed the failure on.
      if (e.peer !== g.nets[victim]!.self.id)
        return `rank ${r} blamed ${e.peer}, not the ${fault === 'crash' ? 'crashed' : 'paused'} member ${g.nets[victim]!.self.id} (${e.reason}: ${e.message})`
      // Bound: the no-progress timeout plus a few link latencies (the cascade of resets).
      if (o.at - t0 > TIMEOUT_MS + 500) return `rank ${r} rejected ${o.at - t0} ms after the ${fault}, over the bound`
      if (fault === 'crash' && o.at - t0 > 500) return `rank ${r} took ${o.at - t0} ms to notice a crash`
    }
    // A paused member may already have sent everything the others needed (all-to-all).
    if (rejected === 0 && fault === 'crash') return 'no survivor rejected: the fault was not mid-operation'
    stats.rejected += rejected
    // Poisoned: a later call on a member that failed rejects at once with a typed error.
    const r0 = survivors.find(r => outcomes[r]!.error !== undefined)
    if (r0 === undefined) return undefined
    const later = g.colls[r0]!.allReduce(new Float32Array(4), { step: step + 1 })
    const err = await later.then(
      () => undefined,
      (e: unknown) => e
    )
    if (!(err instanceof CollectiveError) || err.step !== step + 1) return `a later call did not reject with a CollectiveError: ${String(err)}`
    return undefined
  } finally {
    for (const n of g.nets) g.simnet.resume(n.self.id)
    await g.stop()
  }
}

for (const op of ['all-gather', 'reduce-scatter', 'all-to-all', 'tiered all-gather'] as const) {
  test(`a member crashing mid ${op}: every survivor rejects with a CollectiveError within the bound (SimNet, 8 seeds)`, async t => {
    const base = seedFromEnv(100)
    for (let i = 0; i < 8; i++) {
      const seed = base + i
      const problem = await faultRun(seed, op, 'crash')
      if (problem !== undefined) t.fail(`${problem}; replay: ZEROMESH_SEED=${seed} npx ava test/collective/member-crash.test.ts`)
      else t.pass()
    }
  })
}

test('a member stalling (paused) mid all-gather / all-to-all / tiered all-gather: survivors reject within the bound (timeout or the cascade) unless they already had every byte (SimNet, 4 seeds)', async t => {
  const base = seedFromEnv(200)
  const stats = { rejected: 0 }
  for (let i = 0; i < 4; i++) {
    const seed = base + i
    for (const op of ['all-gather', 'all-to-all', 'tiered all-gather'] as const) {
      const problem = await faultRun(seed, op, 'pause', stats)
      if (problem !== undefined) t.fail(`${problem}; replay: ZEROMESH_SEED=${seed} npx ava test/collective/member-crash.test.ts`)
      else t.pass()
    }
  }
  t.true(stats.rejected > 0, 'some stall was mid-operation')
})

test('an AbortSignal stops the caller with AbortError and releases the others with a CollectiveError', async t => {
  const P = 4
  const g = await simGroup(7, P, r => zoneOf(r, P, 2), { chunkBytes: 16 * 1024, timeoutMs: TIMEOUT_MS })
  try {
    const n = 200_000
    const ac = new AbortController()
    const calls = g.colls.map((c, r) =>
      c.reduceScatter(new Float32Array(n).fill(r), { step: 5, ...(r === 1 ? { signal: ac.signal } : {}) }).then(
        () => 'ok',
        (e: unknown) => e
      )
    )
    await g.sim.run(10)
    ac.abort()
    const results = await g.settle(Promise.all(calls), 1000)
    t.is((results[1] as Error).name, 'AbortError')
    for (const r of [0, 2, 3]) {
      t.true(results[r] instanceof CollectiveError, String(results[r]))
      t.is((results[r] as CollectiveError).op, 'reduce_scatter')
    }
    // Aborting before the call: rejected at once.
    await t.throwsAsync(g.colls[0]!.allGather(new Float32Array(0), 0, { signal: AbortSignal.abort() }), { instanceOf: Error })
  } finally {
    await g.stop()
  }
})

test("abort() between calls: the others' running calls fail at once (not after the timeout) and every member's failed signal fires", async t => {
  const P = 4
  const g = await simGroup(9, P, r => zoneOf(r, P, 2), { chunkBytes: 16 * 1024, timeoutMs: TIMEOUT_MS })
  try {
    const n = 50_000
    // Rank 2 is busy elsewhere (say, loading a snapshot) and never makes the call; it gives up.
    const started = g.sim.now()
    const calls = g.colls.map((c, r) =>
      r === 2
        ? Promise.resolve('idle')
        : c.allGather(new Float32Array(c.shardOf(n).length), n, { step: 3, label: 'recovery_point' }).then(
            () => 'ok',
            (e: unknown) => e
          )
    )
    await g.sim.run(50)
    t.false(g.colls[0]!.failed.aborted)
    g.colls[2]!.abort('rank 2 gave up: the snapshot fetch failed')
    t.true(g.colls[2]!.failed.aborted)
    const results = await g.settle(Promise.all(calls), 1000)
    const took = g.sim.now() - started
    t.true(took < TIMEOUT_MS, `settled in ${took} simulated ms, before the ${TIMEOUT_MS} ms timeout`)
    for (const r of [0, 1, 3]) {
      t.true(results[r] instanceof CollectiveError, String(results[r]))
      t.is((results[r] as CollectiveError).reason, 'aborted')
      t.true(g.colls[r]!.failed.aborted, `rank ${r}'s failed signal fired`)
    }
    // A poisoned instance refuses later calls at once; a second abort() is a no-op.
    g.colls[2]!.abort('again')
    await t.throwsAsync(g.colls[2]!.allGather(new Float32Array(0), 0), { instanceOf: CollectiveError })
  } finally {
    await g.stop()
  }
})
