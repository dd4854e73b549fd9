import test from 'ava'
import { Rng, seedFromEnv } from '../../core/index.ts'
import { COLLECTIVE_DEFAULTS, CollectiveError, createCollective, type Collective } from '../../mesh/collective/index.ts'
import type { ByteStream, PeerNet } from '../../mesh/index.ts'
import { MembershipWorld } from '../../sim/index.ts'
import { firstDiff } from './helpers.ts'

// A member stalls mid all-gather: it stops sending (and reading) but stays connected, so no
// disconnect or reset tells anyone; only the no-progress watchdog can. Its bound comes from
// the failure detector, as in the trainer (node/train/): the real membership's `detectionBoundMs` plus
// a transfer allowance. Every survivor must reject with a typed CollectiveError naming the
// operation, the step and the stalled member (not a starved survivor that passed the news
// on), within that bound (+ slack), and none may hang.

/** The trainer (node/train/) adds this to the detector's bound (outside a session's settling phase). */
const TRANSFER_ALLOWANCE_MS = 5000
/**
 * What a survivor may take beyond the watchdog: the wait for the others' timeout notices
 * (noticeGraceMs), transfers still landing after the stall (under ~150 ms here) and a notice
 * crossing the WAN (30-35 ms).
 */
const SLACK_MS = COLLECTIVE_DEFAULTS.noticeGraceMs + 250

interface Outcome {
  at: number
  value?: unknown
  error?: unknown
}

/**
 * `net` as the collective sees it, calling `stall` (once) as soon as `bytes` have been read
 * from its inbound collective streams: a freeze at an exact point of the transfer.
 */
function stallAfter(net: PeerNet, bytes: number, stall: () => void): PeerNet {
  let read = 0
  let fired = false
  const wrap = (s: ByteStream): ByteStream => ({
    remote: s.remote,
    protocol: s.protocol,
    write: (chunk, opts) => s.write(chunk, opts),
    end: opts => s.end(opts),
    abort: reason => {
      s.abort(reason)
    },
    async *[Symbol.asyncIterator]() {
      for await (const chunk of s) {
        read += chunk.length
        if (!fired && read >= bytes) {
          fired = true
          stall()
        }
        yield chunk
      }
    }
  })
  return {
    ...net,
    handle: (protocol, handler) => {
      net.handle(protocol, s => handler(wrap(s)))
    }
  }
}

async function stallRun(seed: number): Promise<{ problem?: string; log: string }> {
  const rng = Rng.fromSeed(seed).split('stall')
  const P = rng.int(3, 9)
  // The production membership (heartbeat 500 ms, phi 8) on SimNet's default topology, 2 zones.
  const w = new MembershipWorld({ seed, nodes: P, zones: 2 })
  await w.bootAll()
  if ((await w.sim.until(() => w.converged(), 30_000, 10)) === undefined) return { problem: 'the membership did not form', log: '' }
  await w.sim.run(5000) // the detectors learn the heartbeat rhythm
  const view = w.nodes[0]!.m!.view()!
  const victim = rng.int(0, P)
  const victimId = view.members[victim]!.id
  const step = rng.int(1, 10_000)
  const n = rng.int(200_000, 400_000)
  // The victim freezes once it has read part of its first incoming shard (16 KiB chunks): it
  // has everything still to forward ahead of it. SimNet's pause holds what is delivered to the
  // node and its timers; bytes it was already writing still go out.
  const shardBytes = 4 * Math.floor(n / P)
  const at = rng.int(1, Math.floor(shardBytes / 2))
  let t0 = -1
  const freeze = (): void => {
    t0 = w.sim.now()
    w.pause(victimId)
  }
  const timeouts = w.nodes.map(node => () => node.m!.status().detectionBoundMs + TRANSFER_ALLOWANCE_MS)
  const colls: Collective[] = w.nodes.map((node, i) =>
    createCollective({
      net: i === victim ? stallAfter(node.net, at, freeze) : node.net,
      view,
      clock: node.handle.clock,
      chunkBytes: 16 * 1024,
      timeoutMs: timeouts[i]!
    })
  )
  await Promise.all(colls.map(c => c.start()))
  const full = new Float32Array(n).map((_, i) => i % 1000)
  const outcomes: Array<Outcome | undefined> = colls.map(() => undefined)
  colls.forEach((c, r) => {
    const s = c.shardOf(n)
    c.allGather(full.slice(s.start, s.start + s.length), n, { step }).then(
      value => {
        outcomes[r] = { at: w.sim.now(), value }
      },
      error => {
        outcomes[r] = { at: w.sim.now(), error }
      }
    )
  })
  try {
    await w.sim.until(() => t0 >= 0, 10_000, 1)
    if (t0 < 0) return { problem: `the victim never read ${at} bytes`, log: '' }
    if (outcomes.some(o => o !== undefined)) return { problem: 'a call settled before the stall', log: '' }
    let bound = 0
    const survivors = colls.map((_, r) => r).filter(r => r !== victim)
    const sample = (): void => {
      for (const r of survivors) bound = Math.max(bound, timeouts[r]!())
    }
    sample()
    const limit = 3 * bound
    await w.sim.until(
      () => {
        sample()
        return survivors.every(r => outcomes[r] !== undefined)
      },
      limit,
      5
    )
    const pred = colls[0]!.ring[(colls[0]!.ring.indexOf(victim) + P - 1) % P]!
    const log =
      `P=${P} victim ${victimId} (rank ${victim}, frozen after reading ${at} bytes) step ${step} n=${n}: bound ${bound} ms (detector ${bound - TRANSFER_ALLOWANCE_MS} + ${TRANSFER_ALLOWANCE_MS}); ` +
      survivors
        .map(r => {
          const o = outcomes[r]
          if (o === undefined) return `rank ${r} pending`
          const e = o.error as CollectiveError | undefined
          return `rank ${r} ${e === undefined ? 'resolved' : `${e.reason}/${e.peer ?? '-'}`} +${Math.round(o.at - t0)}`
        })
        .join(', ')
    let rejected = 0
    for (const r of survivors) {
      const o = outcomes[r]
      if (o === undefined) return { problem: `rank ${r} still pending ${limit} ms after the stall (hang)`, log }
      if (o.error === undefined) {
        // Only the victim's predecessor on the ring needs nothing the victim forwards (just its
        // own shard, which it sent first): it may complete, with the whole vector, and without
        // waiting on the watchdog. Every other survivor needs bytes the victim never got.
        if (r !== pred) return { problem: `rank ${r} resolved although it needed shards the frozen member had not received`, log }
        if (firstDiff((o.value as { data: Float32Array }).data, full) !== -1) return { problem: `rank ${r} resolved with a wrong (partial) result`, log }
        if (o.at - t0 > SLACK_MS) return { problem: `rank ${r} resolved ${o.at - t0} ms after the stall: it was waiting on the stalled member`, log }
        continue
      }
      rejected++
      const e = o.error
      if (!(e instanceof CollectiveError) || e.name !== 'CollectiveError') return { problem: `rank ${r} rejected with ${String(e)}`, log }
      if (e.op !== 'all_gather' || e.step !== step) return { problem: `rank ${r}: wrong context ${e.op}/${e.step}`, log }
      if (e.reason !== 'timeout') return { problem: `rank ${r}: reason ${e.reason}, not timeout`, log }
      if (e.peer !== victimId) return { problem: `rank ${r} blamed ${e.peer ?? 'nobody'}, not the stalled ${victimId}`, log }
      if (o.at - t0 > bound + SLACK_MS) return { problem: `rank ${r} rejected ${o.at - t0} ms after the stall, over the bound ${bound} + ${SLACK_MS}`, log }
    }
    if (rejected < P - 2) return { problem: `only ${rejected} survivors rejected`, log }
    return { log }
  } finally {
    w.resume(victimId)
    await Promise.all(colls.map(c => c.stop()))
    for (const node of w.nodes) {
      await node.m!.stop()
      await node.net.stop()
    }
    await w.sim.run(100)
  }
}

test('a member stalling mid all-gather: every survivor that needs its bytes rejects with CollectiveError(timeout, op, step, the stalled peer) within the detector-derived bound, none hangs (SimNet + membership, 8 seeds)', async t => {
  const base = seedFromEnv(900)
  for (let i = 0; i < 8; i++) {
    const seed = base + i
    const { problem, log } = await stallRun(seed)
    t.log(`seed ${seed}: ${log}`)
    if (problem !== undefined) t.fail(`${problem}; replay: ZEROMESH_SEED=${seed} npx ava test/collective/stalled-member.test.ts`)
    else t.pass()
  }
})
