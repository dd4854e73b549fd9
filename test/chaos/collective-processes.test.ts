import test from 'ava'
import { Rng, shardRange } from '../../core/index.ts'
import { checksum64 } from '../../codec/index.ts'
import { serialRingReduce } from '../collective/helpers.ts'
import { runWorkers, startWorkers, type FaultOp } from '../helpers/collective-procs.ts'

const vec = (seed: number, r: number, n: number): Float32Array => {
  const rng = Rng.fromSeed(seed).split(`x${r}`)
  const out = new Float32Array(n)
  for (let i = 0; i < n; i++) out[i] = rng.float() * 2 - 1
  return out
}
const hex = (a: Float32Array): string => checksum64(new Uint8Array(a.buffer, a.byteOffset, a.byteLength)).toString(16)

test.serial('collectives across 3 real processes (libp2p on loopback, bulk channel, 2 zones) equal the serial references bit for bit', async t => {
  const P = 3
  const n = 100_003
  const seed = 9
  const res = await runWorkers(P, n, seed, { ms: 60_000 })
  const xs = Array.from({ length: P }, (_, r) => vec(seed, r, n))
  const ref = serialRingReduce(xs, res[0]!.ring, n)
  for (const r of res) {
    t.deepEqual(r.transports, ['bulk'], `rank ${r.rank}: collective streams ride the bulk channel`)
    t.is(r.allGather, hex(xs[0]!), `rank ${r.rank}: all-gather`)
    t.is(r.allGatherInto, hex(xs[0]!), `rank ${r.rank}: all-gather into its own array`)
    const s = shardRange(n, P, r.rank)
    t.is(r.reduceScatter, hex(ref.subarray(s.start, s.start + s.length)), `rank ${r.rank}: reduce-scatter`)
    t.is(r.reduceScatterInto, hex(ref.subarray(s.start, s.start + s.length)), `rank ${r.rank}: reduce-scatter into its own array`)
    t.is(r.allReduce, hex(ref), `rank ${r.rank}: all-reduce`)
  }
})

// A member SIGKILLed mid-operation, on real processes (the SimNet version with many
// seeds is test/collective/member-crash.test.ts). 4 workers in 2 zones (z0: workers 0 and 2,
// z1: 1 and 3), each a libp2p node on loopback with the bulk channel on, as node/start.ts runs
// it. The vector is large and the chunks small, so the call runs for seconds; the
// victim is killed once every worker has written REPORT_BYTES to its collective streams
// (mid-transfer everywhere, while every survivor still needs bytes the victim has not sent).
const P = 4
/**
 * The collective's no-progress timeout (the default). A crash is seen at once (the kernel closes
 * the victim's sockets), so rejections come long before it. With 3 s, one run on a heavily
 * loaded box (load average 17 on 2 cores) had a survivor reject before the kill: a worker
 * starved for seconds after `go` looks like a stall.
 */
const TIMEOUT_MS = 10_000
/** Rejection bound after the kill: the collective's no-progress timeout plus slack for 4 processes on 2 cores. */
const BOUND_MS = TIMEOUT_MS + 3000
/**
 * f32 elements per rank: an uninterrupted call takes ~1.3 s (all-gather), ~2.5 s (reduce-scatter)
 * and ~3 s (all-to-all, whose int4 wire moves 8x fewer bytes) on a 2-core box, against ~0.1-0.4 s
 * to reach REPORT_BYTES: the kill lands well inside the transfer.
 */
const ELEMENTS: Record<FaultOp, number> = { 'all-gather': 8_000_000, 'reduce-scatter': 8_000_000, 'all-to-all': 16_000_000 }
const CHUNK_BYTES = 64 * 1024
const REPORT_BYTES = 256 * 1024
const LABEL: Record<FaultOp, string> = { 'all-gather': 'all_gather', 'reduce-scatter': 'reduce_scatter', 'all-to-all': 'hier_reduce_scatter' }
// Worker 0 is the one the others bootstrap from: never the victim. Each op kills another one.
const VICTIM: Record<FaultOp, number> = { 'all-gather': 2, 'reduce-scatter': 1, 'all-to-all': 3 }
const CALL: Record<FaultOp, string> = {
  'all-gather': 'ring all-gather',
  'reduce-scatter': 'ring reduce-scatter',
  'all-to-all': 'hierarchical all-to-all reduce-scatter (qgZ int4, 2 zones)'
}

for (const op of ['all-gather', 'reduce-scatter', 'all-to-all'] as const) {
  test.serial(`a member SIGKILLed mid ${CALL[op]} on ${P} real processes: every survivor rejects with a CollectiveError within the bound, no hang`, async t => {
    // Every wait below has its own deadline; this is the backstop.
    t.timeout(90_000)
    const step = 7
    const t0 = performance.now()
    const g = await startWorkers(P, {
      mode: 'fault',
      op,
      step,
      elements: ELEMENTS[op],
      seed: 11,
      chunkBytes: CHUNK_BYTES,
      timeoutMs: TIMEOUT_MS,
      reportAfterBytes: REPORT_BYTES
    })
    t.teardown(() => {
      g.kill()
    })
    try {
      const ready = await Promise.all(g.workers.map(w => w.next('ready', 45_000, e => e.ev === 'ready')))
      const ids = ready.map(e => e['id'] as string)
      const victim = g.workers[VICTIM[op]]!
      const victimId = ids[victim.index]!
      const survivors = g.workers.filter(w => w !== victim)
      const readyMs = performance.now() - t0
      for (const w of g.workers) w.send({ cmd: 'go' })
      const sent = await Promise.all(g.workers.map(w => w.next('sent', 30_000, e => e.ev === 'sent')))
      victim.child.kill('SIGKILL')
      const killedAt = performance.timeOrigin + performance.now()
      t.log(
        `${op}: ready after ${Math.round(readyMs)} ms; ranks ${ready.map(e => `w${e['index']}=r${e['rank']}`).join(' ')}; killed w${victim.index} (rank ${ready[victim.index]!['rank']}) once every rank had sent >= ${REPORT_BYTES} bytes (${sent.map(e => `${e['elapsedMs']} ms`).join(', ')} after go)`
      )

      const outcomes = await Promise.all(
        survivors.map(async w => {
          const e = await w.next('its outcome', BOUND_MS + 2000, x => x.ev === 'outcome')
          return { w, e, receivedMs: performance.timeOrigin + performance.now() - killedAt }
        })
      )
      const summary: string[] = []
      for (const { w, e, receivedMs } of outcomes) {
        const who = `w${w.index} (rank ${e['rank']})`
        t.is(e['outcome'], 'rejected', `${who} must reject: it needed bytes from the victim (${JSON.stringify(e)})`)
        if (e['outcome'] !== 'rejected') continue
        t.is(e['name'], 'CollectiveError', `${who}: ${String(e['message'])}`)
        t.true(e['collectiveError'], `${who}: an instance of CollectiveError`)
        t.is(e['op'], LABEL[op], `${who}: op`)
        t.is(e['step'], step, `${who}: step`)
        t.true(['peer-gone', 'timeout'].includes(e['reason'] as string), `${who}: reason ${String(e['reason'])}`)
        // Every survivor names the killed member, not a survivor that passed the failure on
        // (failure notices carry the origin; a reset waits noticeGraceMs for the notice).
        t.is(e['peer'], victimId, `${who}: blames the killed member (${String(e['peer'])}: "${String(e['message'])}")`)
        const sinceKill = Number(e['atMs']) - killedAt
        // Rejected after the kill: the kill landed mid-operation (nobody had settled yet).
        t.true(sinceKill > 0, `${who} rejected ${Math.round(sinceKill)} ms after the kill: ${JSON.stringify(e)}`)
        t.true(
          sinceKill <= BOUND_MS && receivedMs <= BOUND_MS,
          `${who} rejected ${Math.round(sinceKill)} ms after the kill (reported after ${Math.round(receivedMs)} ms), bound ${BOUND_MS} ms`
        )
        t.deepEqual(e['transports'], ['bulk'], `${who}: collective streams ride the bulk channel`)
        summary.push(
          `${who} ${String(e['reason'])} blaming ${e['peer'] === victimId ? 'the victim' : `w${ids.indexOf(e['peer'] as string)} ("${String(e['message'])}")`} after ${Math.round(sinceKill)} ms (${e['elapsedMs']} ms into the call)`
        )
      }
      t.log(`${op}: ${summary.join('; ')}`)
    } finally {
      g.kill()
      // Nothing is left running: every child has exited (killed above, or by its closed stdin).
      const codes = await Promise.race([
        Promise.all(g.workers.map(w => w.exited)),
        new Promise<undefined>(resolve =>
          setTimeout(() => {
            resolve(undefined)
          }, 5000).unref()
        )
      ])
      t.not(codes, undefined, 'every worker process exited')
      t.log(`${op}: ${Math.round(performance.now() - t0)} ms wall`)
    }
  })
}
