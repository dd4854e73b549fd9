import test from 'ava'
import {
  acceptorAccept,
  acceptorPrepare,
  compareBallots,
  isAcceptor,
  proposalExpired,
  proposerAccepted,
  proposerNack,
  proposerPromise,
  startProposal,
  type Proposal,
  type PromiseMsg,
  type ProposerStep
} from '../../mesh/membership/paxos.ts'
import type { AcceptorState, Member, View } from '../../mesh/membership/types.ts'

// The Paxos acceptor and proposer of membership as pure step functions: no network, no clock.
// Every test also checks that a step leaves its input state as it was.

const m = (id: string): Member => ({ id, zone: 'z', host: id })
const view = (epoch: number, ...ids: string[]): View => ({ epoch, members: ids.map(m) })
const frozen = <T>(x: T): T => structuredClone(x)

test('ballots order by round, then by proposer id', t => {
  t.true(compareBallots({ round: 1, proposer: 'b' }, { round: 2, proposer: 'a' }) < 0)
  t.true(compareBallots({ round: 2, proposer: 'b' }, { round: 2, proposer: 'a' }) > 0)
  t.is(compareBallots({ round: 2, proposer: 'a' }, { round: 2, proposer: 'a' }), 0)
})

test("an acceptor is the next epoch's acceptor only as a member of its view, or as a proposed genesis member", t => {
  const role = { nextEpoch: 5, hasView: true, inView: true, self: 'a' }
  t.true(isAcceptor(role, 5))
  t.false(isAcceptor(role, 6), 'not a later epoch')
  t.false(isAcceptor({ ...role, inView: false }, 5), 'not outside the view')
  const none = { nextEpoch: 1, hasView: false, inView: false, self: 'a' }
  t.true(isAcceptor(none, 1, [m('a'), m('b')]))
  t.false(isAcceptor(none, 1, [m('b')]), 'not a genesis that leaves it out')
  t.false(isAcceptor(none, 1), 'not without a genesis list')
})

test('an acceptor promises a higher ballot, refuses an equal or lower one, and reports what it accepted', t => {
  const s0: AcceptorState = { epoch: 2 }
  const copy = frozen(s0)
  const p1 = acceptorPrepare(s0, 'a', { epoch: 2, round: 3 })
  t.deepEqual(s0, copy, 'input unchanged')
  t.deepEqual(p1.reply, { type: 'promise', payload: { epoch: 2, round: 3, proposer: 'a' } })
  t.deepEqual(p1.state.promised, { round: 3, proposer: 'a' })
  t.deepEqual(
    acceptorPrepare(p1.state, 'a', { epoch: 2, round: 3 }).reply,
    { type: 'nack', payload: { epoch: 2, round: 3, proposer: 'a', promisedRound: 3 } },
    'equal ballot: nack'
  )
  t.is(acceptorPrepare(p1.state, 'b', { epoch: 2, round: 2 }).reply.type, 'nack', 'lower round: nack')
  t.is(acceptorPrepare(p1.state, 'b', { epoch: 2, round: 3 }).reply.type, 'promise', 'same round, higher proposer id: promise')
  // Accept under the promised ballot, then a later prepare learns the accepted value.
  const v = view(2, 'a', 'b')
  const a1 = acceptorAccept(p1.state, 'a', { epoch: 2, round: 3, view: v })!
  t.deepEqual(a1.reply, { type: 'accepted', payload: { epoch: 2, round: 3, proposer: 'a' } })
  t.is(a1.accepted, v)
  const p2 = acceptorPrepare(a1.state, 'c', { epoch: 2, round: 9 })
  t.deepEqual(p2.reply, { type: 'promise', payload: { epoch: 2, round: 9, proposer: 'c', acceptedRound: 3, acceptedBy: 'a', accepted: v } })
  t.deepEqual(p2.state.accepted, { ballot: { round: 3, proposer: 'a' }, view: v }, 'a promise keeps the accepted value')
})

test('an acceptor refuses an accept below its promise and ignores one whose view has another epoch', t => {
  const s: AcceptorState = { epoch: 2, promised: { round: 5, proposer: 'b' } }
  const copy = frozen(s)
  const low = acceptorAccept(s, 'a', { epoch: 2, round: 4, view: view(2, 'a') })!
  t.deepEqual(low.reply, { type: 'nack', payload: { epoch: 2, round: 4, proposer: 'a', promisedRound: 5 } })
  t.is(low.accepted, undefined)
  t.is(acceptorAccept(s, 'b', { epoch: 2, round: 5, view: view(3, 'a') }), undefined)
  t.is(acceptorAccept(s, 'c', { epoch: 2, round: 5, view: view(2, 'a') })!.reply.type, 'accepted', 'a higher ballot (same round, higher id) is accepted')
  t.deepEqual(s, copy, 'input unchanged')
})

test('an acceptor state of another epoch starts afresh', t => {
  const old: AcceptorState = { epoch: 2, promised: { round: 50, proposer: 'z' }, accepted: { ballot: { round: 50, proposer: 'z' }, view: view(2, 'z') } }
  const step = acceptorPrepare(old, 'a', { epoch: 3, round: 1 })
  t.deepEqual(step.reply, { type: 'promise', payload: { epoch: 3, round: 1, proposer: 'a' } })
  t.deepEqual(step.state, { epoch: 3, promised: { round: 1, proposer: 'a' } })
})

test('a proposal needs a majority of its acceptors, every member for genesis, one under quorumOfOne', t => {
  const acceptors = ['a', 'b', 'c', 'd'].map(m)
  const { proposal, prepare } = startProposal({ epoch: 4, round: 7, self: 'a', acceptors, now: 100 })
  t.is(proposal.quorum, 3)
  t.deepEqual(prepare, { epoch: 4, round: 7 })
  t.deepEqual(proposal.ballot, { round: 7, proposer: 'a' })
  const g = startProposal({ epoch: 1, round: 1, self: 'a', acceptors, genesis: acceptors, now: 0 })
  t.is(g.proposal.quorum, 4)
  t.deepEqual(g.prepare, { epoch: 1, round: 1, genesis: acceptors })
  t.is(startProposal({ epoch: 4, round: 7, self: 'a', acceptors, quorumOfOne: true, now: 0 }).proposal.quorum, 1)
  t.false(proposalExpired(proposal, 300, 200))
  t.true(proposalExpired(proposal, 301, 200))
})

/** Feeds promises to a proposal; returns the last step. */
function promiseAll(pr: Proposal, from: string[], extra: Partial<PromiseMsg> = {}, desired = (e: number): View | undefined => view(e, 'a', 'b')): ProposerStep {
  let cur: Proposal | undefined = pr
  let step: ProposerStep = { kind: 'ignore' }
  for (const f of from) {
    step = proposerPromise(cur, 'a', f, { epoch: pr.epoch, round: pr.ballot.round, proposer: 'a', ...(f === from[0] ? extra : {}) }, desired)
    if (step.kind === 'wait' || step.kind === 'accept') cur = step.proposal
  }
  return step
}

test('a proposer ignores promises that do not answer its ballot', t => {
  const { proposal } = startProposal({ epoch: 4, round: 7, self: 'a', acceptors: ['a', 'b', 'c'].map(m), now: 0 })
  const desired = (): View => view(4, 'a')
  t.is(proposerPromise(undefined, 'a', 'b', { epoch: 4, round: 7, proposer: 'a' }, desired).kind, 'ignore', 'no proposal')
  t.is(proposerPromise(proposal, 'a', 'x', { epoch: 4, round: 7, proposer: 'a' }, desired).kind, 'ignore', 'not an acceptor')
  t.is(proposerPromise(proposal, 'a', 'b', { epoch: 4, round: 6, proposer: 'a' }, desired).kind, 'ignore', 'another round')
  t.is(proposerPromise(proposal, 'a', 'b', { epoch: 5, round: 7, proposer: 'a' }, desired).kind, 'ignore', 'another epoch')
  t.is(proposerPromise(proposal, 'a', 'b', { epoch: 4, round: 7, proposer: 'b' }, desired).kind, 'ignore', 'another proposer')
  t.is(proposerPromise(proposal, 'a', 'b', { epoch: 4, round: 7, proposer: 'a' }, desired).kind, 'wait', 'positive control: a matching promise counts')
})

test('a proposer with a quorum of promises proposes the desired view, then commits on a quorum of accepts', t => {
  const { proposal } = startProposal({ epoch: 4, round: 7, self: 'a', acceptors: ['a', 'b', 'c'].map(m), now: 0 })
  const copy = frozen(proposal)
  const first = proposerPromise(proposal, 'a', 'b', { epoch: 4, round: 7, proposer: 'a' }, () => view(4, 'a', 'b'))
  t.is(first.kind, 'wait')
  t.deepEqual(proposal, copy, 'input unchanged')
  if (first.kind !== 'wait') return
  t.is(
    proposerPromise(first.proposal, 'a', 'b', { epoch: 4, round: 7, proposer: 'a' }, () => view(4, 'a', 'b')).kind,
    'wait',
    'a repeated promise is not a second vote'
  )
  const second = proposerPromise(first.proposal, 'a', 'c', { epoch: 4, round: 7, proposer: 'a' }, () => view(4, 'a', 'b'))
  if (second.kind !== 'accept') return t.fail(`want accept, got ${second.kind}`)
  t.deepEqual(second.accept, { epoch: 4, round: 7, view: view(4, 'a', 'b') })
  t.is(second.proposal.phase, 'accept')
  t.is(proposerPromise(second.proposal, 'a', 'a', { epoch: 4, round: 7, proposer: 'a' }, () => undefined).kind, 'ignore', 'promises after phase 1 are ignored')
  const acc1 = proposerAccepted(second.proposal, 'a', 'c', { epoch: 4, round: 7, proposer: 'a' })
  if (acc1.kind !== 'wait') return t.fail(`want wait, got ${acc1.kind}`)
  t.is(proposerAccepted(acc1.proposal, 'a', 'x', { epoch: 4, round: 7, proposer: 'a' }).kind, 'ignore', 'not an acceptor')
  const acc2 = proposerAccepted(acc1.proposal, 'a', 'b', { epoch: 4, round: 7, proposer: 'a' })
  t.deepEqual(acc2, { kind: 'commit', view: view(4, 'a', 'b') })
})

test('a proposer adopts the value accepted under the highest ballot among the promises', t => {
  const { proposal } = startProposal({ epoch: 4, round: 9, self: 'a', acceptors: ['a', 'b', 'c', 'd', 'e'].map(m), now: 0 })
  const older = view(4, 'a', 'b', 'c')
  const newer = view(4, 'a', 'c', 'd')
  const mine = (): View => view(4, 'a', 'e')
  let s = proposerPromise(proposal, 'a', 'b', { epoch: 4, round: 9, proposer: 'a', acceptedRound: 3, acceptedBy: 'c', accepted: older }, mine)
  if (s.kind !== 'wait') return t.fail()
  s = proposerPromise(s.proposal, 'a', 'c', { epoch: 4, round: 9, proposer: 'a', acceptedRound: 5, acceptedBy: 'b', accepted: newer }, mine)
  if (s.kind !== 'wait') return t.fail()
  s = proposerPromise(s.proposal, 'a', 'd', { epoch: 4, round: 9, proposer: 'a' }, mine)
  if (s.kind !== 'accept') return t.fail()
  t.is(s.accept.view, newer)
  // Positive control: without accepted values the proposer's own choice goes out.
  t.deepEqual(promiseAll(proposal, ['b', 'c', 'd']).kind, 'accept')
})

test('a genesis proposal proposes its member list; nothing to propose abandons', t => {
  const members = ['a', 'b'].map(m)
  const g = startProposal({ epoch: 1, round: 1, self: 'a', acceptors: members, genesis: members, now: 0 }).proposal
  const s = promiseAll(g, ['a', 'b'], {}, () => undefined)
  t.is(s.kind, 'accept')
  if (s.kind === 'accept') t.deepEqual(s.accept.view, { epoch: 1, members })
  const p = startProposal({ epoch: 3, round: 1, self: 'a', acceptors: ['a'].map(m), now: 0 }).proposal
  t.deepEqual(
    promiseAll(p, ['a'], {}, () => undefined),
    { kind: 'abandon' }
  )
})

test('a nack of the current ballot makes the proposer back off; other nacks are ignored', t => {
  const { proposal } = startProposal({ epoch: 4, round: 7, self: 'a', acceptors: ['a', 'b', 'c'].map(m), now: 0 })
  t.deepEqual(proposerNack(proposal, 'a', { epoch: 4, round: 7, proposer: 'a', promisedRound: 8 }), { kind: 'backoff' })
  t.is(proposerNack(proposal, 'a', { epoch: 4, round: 6, proposer: 'a', promisedRound: 8 }).kind, 'ignore')
  t.is(proposerNack(proposal, 'a', { epoch: 4, round: 7, proposer: 'b', promisedRound: 8 }).kind, 'ignore')
  t.is(proposerNack(undefined, 'a', { epoch: 4, round: 7, proposer: 'a', promisedRound: 8 }).kind, 'ignore')
})

test('duelling proposers over three acceptors: the later one learns and re-proposes the chosen value', t => {
  const ids = ['a', 'b', 'c']
  let acc: Record<string, AcceptorState> = { a: { epoch: 2 }, b: { epoch: 2 }, c: { epoch: 2 } }
  const run = (self: string, round: number, want: View, reach: string[]): View | undefined => {
    let pr: Proposal | undefined = startProposal({ epoch: 2, round, self, acceptors: ids.map(m), now: 0 }).proposal
    let value: View | undefined
    for (const to of reach) {
      const step = acceptorPrepare(acc[to]!, self, { epoch: 2, round })
      acc = { ...acc, [to]: step.state }
      if (step.reply.type !== 'promise') continue
      const p = proposerPromise(pr, self, to, step.reply.payload, () => want)
      if (p.kind === 'wait') pr = p.proposal
      if (p.kind === 'accept') {
        pr = p.proposal
        value = p.accept.view
      }
    }
    if (value === undefined) return undefined
    for (const to of reach) {
      const step = acceptorAccept(acc[to]!, self, { epoch: 2, round, view: value })!
      acc = { ...acc, [to]: step.state }
      if (step.reply.type !== 'accepted') continue
      const p = proposerAccepted(pr, self, to, step.reply.payload)
      if (p.kind === 'wait') pr = p.proposal
      if (p.kind === 'commit') return p.view
    }
    return undefined
  }
  const first = run('a', 1, view(2, 'a', 'b'), ['a', 'b'])
  t.deepEqual(first, view(2, 'a', 'b'), "a and b choose a's value")
  // c proposes something else with a higher ballot and reaches b and c: b reports the chosen value.
  const second = run('c', 2, view(2, 'c'), ['b', 'c'])
  t.deepEqual(second, first, 'the same epoch never gets a second value')
})
