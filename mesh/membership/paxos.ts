import type { PeerId } from '../peernet.ts'
import type { AcceptorState, Ballot, Member, View } from './types.ts'

/**
 * Choosing the view of epoch e+1 is one instance of single-decree Paxos whose acceptors are
 * the members of view e: a value is chosen once a majority of them accept it, and any later
 * proposer for the same epoch learns it from the promises and must re-propose it. So no two
 * different views ever carry the same epoch, and a minority (fewer than a majority of the
 * previous view) can never install one. Genesis (epoch 1) has no previous view: every proposed
 * member is an acceptor and every one must accept.
 *
 * The acceptor and the proposer here are pure step functions: a state and a message in, the
 * next state and what to send out. They never change their inputs, touch a network or a clock.
 */

/** Phase 1a: a proposer asks the acceptors of `epoch` to promise ballot (round, sender). */
export interface PrepareMsg {
  epoch: number
  round: number
  genesis?: Member[]
}
/** Phase 1b: an acceptor promises `proposer`'s ballot, with the value it accepted before, if any. */
export interface PromiseMsg {
  epoch: number
  round: number
  proposer: PeerId
  acceptedRound?: number
  acceptedBy?: PeerId
  accepted?: View
}
/** An acceptor refuses a ballot below the one it promised (`promisedRound`). */
export interface NackMsg {
  epoch: number
  round: number
  proposer: PeerId
  promisedRound: number
}
/** Phase 2a: a proposer asks the acceptors to accept `view` under ballot (round, sender). */
export interface AcceptMsg {
  epoch: number
  round: number
  view: View
}
/** Phase 2b: an acceptor accepted `proposer`'s ballot. */
export interface AcceptedMsg {
  epoch: number
  round: number
  proposer: PeerId
}

/** Orders ballots: by round, then by proposer id. */
export const compareBallots = (a: Ballot, b: Ballot): number => a.round - b.round || (a.proposer < b.proposer ? -1 : a.proposer > b.proposer ? 1 : 0)

// --- acceptor ---------------------------------------------------------------------------

/** What decides whether a node is an acceptor for an epoch. */
export interface AcceptorRole {
  /** The epoch after this node's view (1 without a view). */
  nextEpoch: number
  hasView: boolean
  /** This node is a member of its view. */
  inView: boolean
  self: PeerId
}

/** Whether a node in `role` is an acceptor for `epoch` (for genesis, given the proposed member list). */
export function isAcceptor(role: AcceptorRole, epoch: number, genesis?: readonly Member[]): boolean {
  if (epoch !== role.nextEpoch) return false
  if (!role.hasView) return epoch === 1 && genesis !== undefined && genesis.some(m => m.id === role.self)
  return role.inView
}

/** An acceptor's reply, to the proposer that sent the prepare or accept. */
export type AcceptorReply = { type: 'promise'; payload: PromiseMsg } | { type: 'nack'; payload: NackMsg } | { type: 'accepted'; payload: AcceptedMsg }

/** The outcome of one acceptor step: its next state, its reply, and the view it accepted (if it did). */
export interface AcceptorStep {
  state: AcceptorState
  reply: AcceptorReply
  accepted?: View
}

/** The state for `epoch`: `s` if it is that epoch's, else a fresh one. */
const forEpoch = (s: AcceptorState, epoch: number): AcceptorState => (s.epoch === epoch ? s : { epoch })

const nack = (s: AcceptorState, epoch: number, round: number, proposer: PeerId, promised: Ballot): AcceptorStep => ({
  state: s,
  reply: { type: 'nack', payload: { epoch, round, proposer, promisedRound: promised.round } }
})

/** Phase 1b: promise a ballot above every ballot promised so far, or refuse it. */
export function acceptorPrepare(state: AcceptorState, from: PeerId, p: PrepareMsg): AcceptorStep {
  const s = forEpoch(state, p.epoch)
  const b = { round: p.round, proposer: from }
  if (s.promised !== undefined && compareBallots(b, s.promised) <= 0) return nack(s, p.epoch, p.round, from, s.promised)
  const a = s.accepted
  const payload: PromiseMsg = {
    epoch: p.epoch,
    round: p.round,
    proposer: from,
    ...(a === undefined ? {} : { acceptedRound: a.ballot.round, acceptedBy: a.ballot.proposer, accepted: a.view })
  }
  return { state: { ...s, promised: b }, reply: { type: 'promise', payload } }
}

/** Phase 2b: accept a value under a ballot at or above the one promised, or refuse it. Undefined: ignored (malformed). */
export function acceptorAccept(state: AcceptorState, from: PeerId, p: AcceptMsg): AcceptorStep | undefined {
  if (p.view.epoch !== p.epoch) return undefined
  const s = forEpoch(state, p.epoch)
  const b = { round: p.round, proposer: from }
  if (s.promised !== undefined && compareBallots(b, s.promised) < 0) return nack(s, p.epoch, p.round, from, s.promised)
  return {
    state: { epoch: s.epoch, promised: b, accepted: { ballot: b, view: p.view } },
    reply: { type: 'accepted', payload: { epoch: p.epoch, round: p.round, proposer: from } },
    accepted: p.view
  }
}

// --- proposer ---------------------------------------------------------------------------

/** What one acceptor's promise reported: the value it had accepted and under which ballot. */
export interface PromiseEntry {
  round?: number
  by?: PeerId
  view?: View
}

/** A proposal in flight (this node's ballot for one epoch). */
export interface Proposal {
  readonly epoch: number
  readonly ballot: Ballot
  readonly acceptors: ReadonlySet<PeerId>
  readonly quorum: number
  readonly phase: 'prepare' | 'accept'
  readonly promises: ReadonlyMap<PeerId, PromiseEntry>
  readonly accepts: ReadonlySet<PeerId>
  readonly value?: View
  readonly genesis?: Member[]
  /** The lineage a genesis view of this proposal starts (see View.lineage). */
  readonly lineage?: string
  /** When the proposal began (monotonic ms); phases past their timeout are abandoned. */
  readonly startedAt: number
}

/** What starts a proposal. */
export interface ProposalInit {
  epoch: number
  /** The ballot's round: above every round this node has seen. */
  round: number
  self: PeerId
  acceptors: readonly Member[]
  /** The member list to propose as genesis (epoch 1): every one of them must accept. */
  genesis?: Member[]
  /** With `genesis`: the lineage the genesis view starts. */
  lineage?: string
  /** Deliberately unsafe (tests of the safety checker): a quorum of one. */
  quorumOfOne?: boolean
  now: number
}

/** Phase 1a: a new proposal and the prepare to send to its acceptors (self included, if it is one). */
export function startProposal(o: ProposalInit): { proposal: Proposal; prepare: PrepareMsg } {
  const ids = new Set(o.acceptors.map(m => m.id))
  const proposal: Proposal = {
    epoch: o.epoch,
    ballot: { round: o.round, proposer: o.self },
    acceptors: ids,
    quorum: o.genesis !== undefined ? ids.size : o.quorumOfOne === true ? 1 : Math.floor(ids.size / 2) + 1,
    phase: 'prepare',
    promises: new Map(),
    accepts: new Set(),
    ...(o.genesis === undefined ? {} : { genesis: o.genesis }),
    ...(o.lineage === undefined ? {} : { lineage: o.lineage }),
    startedAt: o.now
  }
  return { proposal, prepare: { epoch: o.epoch, round: o.round, ...(o.genesis === undefined ? {} : { genesis: o.genesis }) } }
}

/**
 * The outcome of one proposer step:
 * - `ignore`: not about the current proposal; nothing changes;
 * - `wait`: recorded, no quorum yet;
 * - `accept`: a quorum promised: send `accept` (phase 2a) to the acceptors;
 * - `abandon`: a quorum promised but there is nothing to propose: drop the proposal;
 * - `commit`: a quorum accepted `view`: drop the proposal, announce and install the view;
 * - `backoff`: an acceptor refused the ballot: drop the proposal and retry after a random pause.
 */
export type ProposerStep =
  | { kind: 'ignore' }
  | { kind: 'wait'; proposal: Proposal }
  | { kind: 'accept'; proposal: Proposal; accept: AcceptMsg }
  | { kind: 'abandon' }
  | { kind: 'commit'; view: View }
  | { kind: 'backoff' }

const IGNORE: ProposerStep = Object.freeze({ kind: 'ignore' })

/** Whether a reply (`epoch`, `round`, `proposer`) from `from` answers `pr`'s ballot in `phase`. */
function answers(pr: Proposal | undefined, self: PeerId, phase: Proposal['phase'], from: PeerId, p: AcceptedMsg): pr is Proposal {
  return pr !== undefined && pr.phase === phase && p.proposer === self && p.epoch === pr.epoch && p.round === pr.ballot.round && pr.acceptors.has(from)
}

/** The value accepted under the highest ballot among the promises, if any acceptor reported one. */
function highestAccepted(promises: ReadonlyMap<PeerId, PromiseEntry>): View | undefined {
  let best: { ballot: Ballot; view: View } | undefined
  for (const v of promises.values()) {
    if (v.view === undefined || v.round === undefined || v.by === undefined) continue
    const b = { round: v.round, proposer: v.by }
    if (best === undefined || compareBallots(b, best.ballot) > 0) best = { ballot: b, view: v.view }
  }
  return best?.view
}

/**
 * Phase 1b received. Once a quorum promised, the value is the one accepted under the highest
 * ballot (Paxos: it may have been chosen), else the genesis list, else `desired(epoch)`, the
 * view this node would like (undefined: nothing to propose).
 */
export function proposerPromise(
  pr: Proposal | undefined,
  self: PeerId,
  from: PeerId,
  p: PromiseMsg,
  desired: (epoch: number) => View | undefined
): ProposerStep {
  if (!answers(pr, self, 'prepare', from, p)) return IGNORE
  const entry: PromiseEntry = {
    ...(p.acceptedRound === undefined ? {} : { round: p.acceptedRound }),
    ...(p.acceptedBy === undefined ? {} : { by: p.acceptedBy }),
    ...(p.accepted === undefined ? {} : { view: p.accepted })
  }
  const promises = new Map(pr.promises).set(from, entry)
  if (promises.size < pr.quorum) return { kind: 'wait', proposal: { ...pr, promises } }
  const value = highestAccepted(promises) ?? (pr.genesis !== undefined ? genesisView(pr.epoch, pr.genesis, pr.lineage) : desired(pr.epoch))
  if (value === undefined) return { kind: 'abandon' }
  return {
    kind: 'accept',
    proposal: { ...pr, promises, value, phase: 'accept' },
    accept: { epoch: pr.epoch, round: pr.ballot.round, view: value }
  }
}

function genesisView(epoch: number, members: Member[], lineage: string | undefined): View {
  return lineage === undefined ? { epoch, members } : { epoch, members, lineage }
}

/** Phase 2b received: once a quorum accepted, the value is chosen. */
export function proposerAccepted(pr: Proposal | undefined, self: PeerId, from: PeerId, p: AcceptedMsg): ProposerStep {
  if (!answers(pr, self, 'accept', from, p)) return IGNORE
  const accepts = new Set(pr.accepts).add(from)
  if (accepts.size < pr.quorum || pr.value === undefined) return { kind: 'wait', proposal: { ...pr, accepts } }
  return { kind: 'commit', view: pr.value }
}

/** A refusal: if it is of this proposal's ballot (in either phase), back off. */
export function proposerNack(pr: Proposal | undefined, self: PeerId, p: NackMsg): ProposerStep {
  if (pr === undefined || p.proposer !== self || p.epoch !== pr.epoch || p.round !== pr.ballot.round) return IGNORE
  return { kind: 'backoff' }
}

/** Whether a proposal has been running longer than `timeoutMs` at `now` (it is then abandoned and retried). */
export function proposalExpired(pr: Proposal, now: number, timeoutMs: number): boolean {
  return now - pr.startedAt > timeoutMs
}
