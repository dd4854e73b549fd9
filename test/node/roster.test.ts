import test from 'ava'
import type { Member, View } from '../../mesh/index.ts'
import { TRAIN_LIMITS } from '../../node/train/limits.ts'
import { ViewQueue, encodeRoster, grownRoster, readmitted, replan, rosterFromView, rosterOf } from '../../node/train/roster.ts'

// The roster and view queue are pure: these tests build views by hand (no network, no clock).
const m = (id: string, zone = 'z0'): Member => ({ id, zone, host: `h-${id}` })
const view = (epoch: number, ids: string[]): View => ({ epoch, members: ids.map(id => m(id)) })
const ids = (ms: readonly Member[]): string[] => ms.map(x => x.id)

test('replace: a lost rank is taken over by the first spare, in its place and with its labels', t => {
  const roster = [m('a'), m('b', 'z1'), m('c')]
  const r = replan(roster, view(5, ['a', 'c', 'd', 'e']), undefined)
  t.is(r.mode, 'replace')
  t.deepEqual(r.lost, [1])
  t.deepEqual(ids(r.roster), ['a', 'd', 'c'])
  t.deepEqual(r.roster[1], { id: 'd', zone: 'z1', host: 'h-b' })
  t.deepEqual(r.plan, { mode: 'replace', lost: [1], oldRoster: roster })
})

test('shrink: with too few spares the survivors close up, and a later loss stays relative to the old roster', t => {
  const roster = [m('a'), m('b'), m('c'), m('d')]
  const first = replan(roster, view(5, ['a', 'c', 'd']), undefined)
  t.is(first.mode, 'shrink')
  t.deepEqual(ids(first.roster), ['a', 'c', 'd'])
  t.deepEqual(first.plan.lost, [1])
  // Before the recovery finished, another rank goes: the plan still names the old roster's ranks.
  const second = replan(first.roster, view(6, ['a', 'd']), first.plan)
  t.is(second.plan.mode, 'shrink')
  t.deepEqual(second.plan.lost, [1, 2])
  t.deepEqual(ids(second.plan.oldRoster), ['a', 'b', 'c', 'd'])
  // A replace after a replace that keeps every place stays a replace; a shrink never turns back.
  const rep = replan([m('a'), m('b')], view(7, ['a', 'x']), { mode: 'replace', lost: [], oldRoster: [m('a'), m('b')] })
  t.is(rep.plan.mode, 'replace')
  t.is(replan(first.roster, view(8, ['a', 'c', 'd', 'x']), first.plan).plan.mode, 'shrink')
})

test('grow: the run takes the first joiners of the agreed view, up to the cap, and only without a queued loss', t => {
  t.deepEqual(ids(grownRoster([m('a'), m('b')], view(3, ['a', 'b', 'c', 'd']), 1)), ['a', 'b', 'c'])
  const q = new ViewQueue(2, undefined)
  const roster = [m('a'), m('b')]
  q.admit(roster)
  q.begin(view(1, ['a', 'b']))
  const v = view(2, ['a', 'b', 'c', 'd'])
  q.push(v)
  t.deepEqual(q.growCandidate(roster, 3, v), { epoch: 2, count: 1 })
  t.deepEqual(q.growCandidate(roster, 8, v), { epoch: 2, count: 2 })
  t.is(q.growCandidate(roster, 2, v), undefined, 'at the cap')
  t.is(q.pendingGrowth(roster, { epoch: 2, count: 1, step: 4 }, 3), v)
  t.is(q.pendingGrowth(roster, { epoch: 2, count: 2, step: 4 }, 3), undefined, 'past the cap')
  t.is(q.pendingGrowth(roster, { epoch: 9, count: 1, step: 4 }, 3), undefined, 'a view this node does not have')
  // A queued view that dropped a rank blocks growth; consuming it through the growth's view clears it.
  const lossy = view(3, ['a', 'c'])
  q.push(lossy)
  t.is(q.growCandidate(roster, 3, lossy), undefined)
  t.is(q.scanLoss(roster, false), lossy)
  q.consumeThrough(lossy)
  t.is(q.nextLoss(roster), undefined)
})

test('readmission: a member that was dropped and re-added between two views counts as lost', t => {
  const prev = view(1, ['a', 'b', 'c', 'd'])
  const next = view(3, ['a', 'c', 'd', 'b'])
  t.deepEqual([...readmitted(prev, next)], ['b'])
  t.deepEqual([...readmitted(prev, view(4, ['a', 'b', 'c', 'd', 'e']))], [], 'joiners appended: nobody moved')
  const q = new ViewQueue(3, undefined)
  const roster = [m('a'), m('b'), m('c')]
  q.begin(prev)
  q.push(view(2, ['a', 'b', 'c', 'd'])) // only adds nobody: consumed on the way
  q.push(next)
  const lost = q.nextLoss(roster)
  t.is(lost?.epoch, 3)
  t.deepEqual(ids(lost!.members), ['a', 'c', 'd'], 'b is left out of the effective view')
  t.deepEqual(ids(replan(roster, lost!, undefined).roster), ['a', 'd', 'c'])
  t.is(q.queued, 0)
})

test('queue cap: the oldest installed views are dropped past MAX_QUEUED_VIEWS and RECENT_VIEWS', t => {
  const q = new ViewQueue(2, undefined)
  const n = TRAIN_LIMITS.maxQueuedViews + 10
  for (let e = 1; e <= n; e++) q.push(view(e, ['a', 'b']))
  t.is(q.queued, TRAIN_LIMITS.maxQueuedViews)
  t.is(q.view(n)?.epoch, n)
  t.is(q.view(n - TRAIN_LIMITS.recentViews + 1)?.epoch, n - TRAIN_LIMITS.recentViews + 1)
  t.is(q.view(n - TRAIN_LIMITS.recentViews), undefined)
  t.is(q.firstFull?.epoch, 1, 'the first full view is kept')
})

test('admit replaces the per-roster loops: every member of every roster used is remembered', t => {
  const q = new ViewQueue(2, view(1, ['a', 'b']))
  t.is(q.firstFull?.epoch, 1)
  t.false(q.wasRostered('a'))
  q.admit([m('a'), m('b')])
  q.admit([m('a'), m('c')])
  t.true(q.wasRostered('a') && q.wasRostered('b') && q.wasRostered('c'))
  t.false(q.wasRostered('d'))
})

test('roster announcements: round trip; malformed, oversize, duplicate or overlong ones are refused', t => {
  const roster = [m('a'), m('b', 'z1')]
  t.deepEqual(rosterOf(encodeRoster(4, roster)), { epoch: 4, members: roster })
  const enc = (v: unknown): Uint8Array => new TextEncoder().encode(JSON.stringify(v))
  t.is(rosterOf(new Uint8Array([0xff, 0xfe])), undefined)
  t.is(rosterOf(enc({ epoch: -1, members: roster })), undefined)
  t.is(rosterOf(enc({ epoch: 1, members: [] })), undefined)
  t.is(rosterOf(enc({ epoch: 1, members: [m('a'), m('a')] })), undefined)
  t.is(rosterOf(enc({ epoch: 1, members: [m('x'.repeat(TRAIN_LIMITS.maxRosterLabelChars + 1))] })), undefined)
  t.is(rosterOf(new Uint8Array(TRAIN_LIMITS.maxRosterBytes + 1)), undefined)
  const many = Array.from({ length: TRAIN_LIMITS.maxRosterMembers + 1 }, (_, i) => m(`n${i}`))
  t.is(rosterOf(enc({ epoch: 1, members: many })), undefined)
})

test('nodes that do not train (started without --train) are never on the roster, never spares, never grown into', t => {
  const holder = (id: string): Member => ({ id, zone: 'z0', host: `h-${id}`, trains: false })
  // The holder sorts first in the view: the roster is drawn from the others.
  const v: View = { epoch: 1, members: [holder('0'), m('a'), m('b'), holder('c'), m('d')] }
  t.deepEqual(ids(rosterFromView(v, 2, undefined)!), ['a', 'b'])
  t.is(rosterFromView(v, 4, undefined), undefined, 'three members may train: no roster of four')
  // A lost rank is replaced by the next member that trains, not by the holder after it.
  const lost: View = { epoch: 2, members: [holder('0'), m('a'), holder('c'), m('d')] }
  const r = replan([m('a'), m('b')], lost, undefined)
  t.is(r.mode, 'replace')
  t.deepEqual(ids(r.roster), ['a', 'd'])
  // With only holders beyond the roster the run shrinks, and does not grow into them.
  const only: View = { epoch: 3, members: [holder('0'), m('a'), holder('c')] }
  t.is(replan([m('a'), m('b')], only, undefined).mode, 'shrink')
  const q = new ViewQueue(2, undefined)
  q.begin(v)
  const more: View = { epoch: 4, members: [...v.members, holder('e')] }
  q.push(more)
  t.deepEqual(q.growCandidate([m('a'), m('b')], 8, more), { epoch: 4, count: 1 }, 'only d may join the ranks')
  t.deepEqual(ids(grownRoster([m('a'), m('b')], more, 3)), ['a', 'b', 'd'])
})
