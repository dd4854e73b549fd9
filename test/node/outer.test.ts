import test from 'ava'
import { dequantize, quantize } from '../../codec/index.ts'
import type { Member, View } from '../../mesh/index.ts'
import {
  appliedBy,
  applyFragment,
  exchange,
  fragmentRange,
  freshOuter,
  inFlightAt,
  outerQuant,
  outerSchedule,
  sendFragment,
  sendsAt,
  zoneRecoveryPoints
} from '../../node/train/outer.ts'
import { replanZones, rosterFromView, zoneGroups } from '../../node/train/roster.ts'
import { TrainMessageError } from '../../node/index.ts'
import { decodeState, encodeState, placeStripe, type RankState } from '../../snapshot/index.ts'
import { memoryGroup } from '../collective/helpers.ts'
import { randomF32, seededRng } from '../helpers/seed.ts'

const sends = (every: number, streaming: boolean, upTo: number): Array<[number, number[]]> => {
  const sc = outerSchedule({ every, streaming })
  const out: Array<[number, number[]]> = []
  for (let c = 1; c <= upTo; c++) if (sendsAt(sc, c).length > 0) out.push([c, sendsAt(sc, c)])
  return out
}

test('schedule: without streaming one fragment is sent and applied every H steps', t => {
  const sc = outerSchedule({ every: 4, streaming: false })
  t.deepEqual(sc, { every: 4, fragments: 1, delay: 0, stagger: 4 })
  t.deepEqual(sends(4, false, 12), [
    [4, [0]],
    [8, [0]],
    [12, [0]]
  ])
  t.is(inFlightAt(sc, 5, 0), undefined)
  t.deepEqual(
    [0, 3, 4, 7, 8].map(c => appliedBy(sc, c)),
    [0, 0, 1, 1, 2]
  )
})

test('schedule: streaming staggers four fragments, each exchanged every H steps and applied H/4 steps after it was sent', t => {
  const sc = outerSchedule({ every: 8, streaming: true })
  t.deepEqual(sc, { every: 8, fragments: 4, delay: 2, stagger: 2 })
  // Fragment 3 goes first (after 2 steps), fragment 0 last (after 8); then each again 8 steps later.
  t.deepEqual(sends(8, true, 16), [
    [2, [3]],
    [4, [2]],
    [6, [1]],
    [8, [0]],
    [10, [3]],
    [12, [2]],
    [14, [1]],
    [16, [0]]
  ])
  // Sent after 6 steps, in flight after 6 and 7, applied at 8.
  t.is(inFlightAt(sc, 6, 1), 6)
  t.is(inFlightAt(sc, 7, 1), 6)
  t.is(inFlightAt(sc, 8, 1), undefined)
  t.deepEqual(
    [3, 4, 5, 8, 9].map(c => appliedBy(sc, c)),
    [0, 1, 1, 3, 3]
  )
  // Fewer steps than fragments: as many fragments as steps.
  t.is(outerSchedule({ every: 2, streaming: true }).fragments, 2)
})

test('recovery points: each zone group takes its newest step at the newest outer stage every group has a step in', t => {
  const sc = outerSchedule({ every: 4, streaming: false })
  // Group 0 has steps past the outer step at 8; group 1 only before it: both go back to stage 1 (steps 4-7).
  t.deepEqual(zoneRecoveryPoints(sc, [new Set([0, 5, 6, 9]), new Set([0, 4, 7])]), [6, 7])
  t.deepEqual(zoneRecoveryPoints(sc, [new Set([0, 9]), new Set([0, 10, 11])]), [9, 11])
  t.deepEqual(zoneRecoveryPoints(sc, [new Set([0, 9]), new Set([0, 5])]), [0, 0])
  t.is(zoneRecoveryPoints(sc, [new Set([9]), new Set([5])]), undefined)
})

const mem = (id: string, zone: string): Member => ({ id, zone, host: `h-${id}` })
const viewOf = (epoch: number, ms: Member[]): View => ({ epoch, members: ms })

test('roster: zone groups of equal size from the first zones that can field them, zone after zone', t => {
  const v = viewOf(1, [mem('a', 'x'), mem('b', 'y'), mem('c', 'x'), mem('d', 'z'), mem('e', 'y'), mem('f', 'x')])
  t.deepEqual(
    rosterFromView(v, 4, 2)!.map(m => m.id),
    ['a', 'c', 'b', 'e']
  )
  // Three zones of two: z has one member only.
  t.is(rosterFromView(v, 6, 3), undefined)
  t.deepEqual(
    zoneGroups(rosterFromView(v, 4, 2)!).map(g => g.map(m => m.id)),
    [
      ['a', 'c'],
      ['b', 'e']
    ]
  )
  // Without zone groups: the first worldSize members, as always.
  t.deepEqual(
    rosterFromView(v, 3, undefined)!.map(m => m.id),
    ['a', 'b', 'c']
  )
})

test('replan (zone groups): a lost rank is replaced from its own zone; a group that cannot be made whole drops out', t => {
  const roster = [mem('a', 'x'), mem('b', 'x'), mem('c', 'y'), mem('d', 'y')]
  // d lost; the only spare is in zone x: zone y cannot be made whole and leaves.
  const r = replanZones(roster, viewOf(2, [mem('a', 'x'), mem('b', 'x'), mem('c', 'y'), mem('s', 'x')]), undefined)
  t.is(r.mode, 'shrink')
  t.deepEqual(
    r.roster.map(m => m.id),
    ['a', 'b']
  )
  t.deepEqual(r.plan.from, [0, 1])
  t.deepEqual(r.plan.lost, [2, 3])
  // A spare of zone y takes d's place (and labels).
  const q = replanZones(roster, viewOf(2, [mem('a', 'x'), mem('b', 'x'), mem('c', 'y'), mem('s', 'x'), mem('u', 'y')]), undefined)
  t.is(q.mode, 'replace')
  t.deepEqual(
    q.roster.map(m => m.id),
    ['a', 'b', 'c', 'u']
  )
  t.deepEqual(q.roster[3], { id: 'u', zone: 'y', host: 'h-d' })
  t.deepEqual(q.plan.from, [0, 1, 2, 3])
  // Before that recovery finished, zone x loses both: group y goes on, loading old ranks 2 and 3.
  const z = replanZones(q.roster, viewOf(3, [mem('c', 'y'), mem('u', 'y')]), q.plan)
  t.deepEqual(
    z.roster.map(m => m.id),
    ['c', 'u']
  )
  t.deepEqual(z.plan.from, [2, 3])
  t.deepEqual(z.plan.oldRoster, roster)
})

test('placement: zone scope keeps fragments in the owner zone while it has room, then spills', t => {
  const v = viewOf(1, [mem('a', 'x'), mem('b', 'y'), mem('c', 'x'), mem('d', 'y'), mem('e', 'x'), mem('f', 'y')])
  const zoneOf = (id: string): string => v.members.find(m => m.id === id)!.zone
  t.deepEqual(placeStripe(v, 0, 1, 1, 'zone').map(zoneOf), ['x', 'x'])
  t.deepEqual(placeStripe(v, 0, 2, 1, 'zone').map(zoneOf), ['x', 'x', 'y'])
  // Spread (the default) alternates zones.
  t.true(placeStripe(v, 0, 1, 1).map(zoneOf).includes('y'))
})

test('snapshot state: the outer buffers round-trip, and a state without them keeps the old layout', t => {
  const n = 5
  const f = (x: number): Float32Array => Float32Array.from({ length: n }, (_, i) => x + i)
  const base: RankState = { rank: 1, worldSize: 4, epoch: 3, step: 9, dataCursor: 9, weights: f(1), adamM: f(2), adamV: f(3), rng: new Uint8Array(0) }
  const plain = encodeState(base)
  t.is(decodeState(plain).outer, undefined)
  const withOuter = encodeState({ ...base, outer: { weights: f(4), momentum: f(5), residual: f(6), sentInner: f(7) } })
  t.is(withOuter.length, plain.length + 16 * n)
  const back = decodeState(withOuter)
  t.deepEqual([...back.outer!.sentInner], [...f(7)])
  t.deepEqual([...back.weights], [...f(1)])
  // A flag bit nobody defined is malformed.
  const bad = withOuter.slice()
  bad[5] = 8 // a flag bit no version defines
  t.throws(() => decodeState(bad), { message: /reserved fields/ })
})

test('outer exchange: every zone ends with the same outer weights, the mean of the quantized pseudo-gradients stepped by Nesterov', async t => {
  const { rng } = seededRng(t, 16)
  const Z = 3
  const n = 1000
  const g = await memoryGroup(Z, r => `z${r}`)
  try {
    const cfg = { every: 4, quant: 'int8' as const, streaming: false, zones: Z, lr: 0.7, momentum: 0.9 }
    const quant = outerQuant(cfg)
    const start = randomF32(rng, n)
    const outers = Array.from({ length: Z }, () => freshOuter(start))
    const inners = outers.map(() => {
      const x = start.slice()
      for (let i = 0; i < n; i++) x[i] = x[i]! - 0.01 * (rng.float() * 2 - 1)
      return x
    })
    const before = inners.map(x => x.slice())
    const slice = fragmentRange(outerSchedule(cfg), n, 0)
    const got = await Promise.all(g.colls.map((c, z) => sendFragment(c, outers[z]!, inners[z]!, slice, quant, { step: 3 })))
    outers.forEach((o, z) => {
      applyFragment(o, inners[z]!, slice, got[z]!.all, Z, z, { ...quant, lr: cfg.lr, momentum: cfg.momentum })
    })
    for (let z = 1; z < Z; z++) {
      t.deepEqual(outers[z]!.weights, outers[0]!.weights)
      t.deepEqual(inners[z]!, outers[0]!.weights)
    }
    // The reference: the mean of each zone's dequantized delta, then one Nesterov step from zero momentum.
    const deq = before.map(x =>
      dequantize(
        quantize(
          Float32Array.from(start, (w, i) => w - x[i]!),
          quant
        )
      )
    )
    for (const i of [0, 17, 999]) {
      const d = Math.fround(Math.fround(Math.fround(deq[0]![i]! + deq[1]![i]!) + deq[2]![i]!) / Z)
      const m = Math.fround(0.9 * 0 + d)
      t.is(outers[0]!.weights[i], Math.fround(start[i]! - Math.fround(0.7 * Math.fround(d + Math.fround(0.9 * m)))))
      // Error feedback: what quantization dropped is kept for the next round.
      t.is(outers[1]!.residual[i], Math.fround(start[i]! - before[1]![i]!) - deq[1]![i]!)
    }
    // Re-sending from the saved state after a rollback gives the same bytes.
    const again = await Promise.all(
      g.colls.map((c, z) => {
        const o = freshOuter(start)
        o.sentInner.set(before[z]!)
        return exchange(c, o, slice, quant, { step: 3 })
      })
    )
    t.deepEqual(again[0]!.all, got[0]!.all)
  } finally {
    await g.stop()
  }
})

test('outer exchange: a zone whose gathered fragment is malformed is a typed error, and nothing is applied', t => {
  const quant = outerQuant({ quant: 'int4' })
  const o = freshOuter(new Float32Array(512))
  const inner = new Float32Array(512)
  // Two zones' fragments of 512 int4 codes: 2 scales (8 bytes) and 256 code bytes, 66 words each.
  const all = new Uint32Array(2 * 66)
  // A gathered buffer of the wrong length.
  t.throws(() => applyFragment(o, inner, { start: 0, length: 512 }, new Uint32Array(3), 2, 0, { ...quant, lr: 0.7, momentum: 0.9 }), {
    instanceOf: TrainMessageError
  })
  const bytes = new Uint8Array(all.buffer)
  // A code of -8, which the quantizer never produces.
  bytes[8] = 0x88
  t.throws(() => applyFragment(o, inner, { start: 0, length: 512 }, all, 2, 0, { ...quant, lr: 0.7, momentum: 0.9 }))
  t.deepEqual(o.weights, new Float32Array(512))
})
