import { checksum64 } from '../../codec/index.ts'
import { InvalidArgumentError, ProtocolError, type Clock, type Logger, type Rng } from '../../core/index.ts'
import { Listeners } from '../listeners.ts'
import { silenceFor } from '../phi.ts'
import type { GossipVerdict, PeerId, PeerLabels, PeerNet } from '../peernet.ts'
import { countLive, isFresh, liveAt, observeHeartbeat, prime, type DetectorOptions } from './detector.ts'
import type { Heartbeat } from './heartbeat-codec.ts'
import { chooseLeader, type LeaderContext } from './leader.ts'
import {
  acceptorAccept,
  acceptorPrepare,
  isAcceptor,
  proposalExpired,
  proposerAccepted,
  proposerNack,
  proposerPromise,
  startProposal,
  type AcceptMsg,
  type AcceptedMsg,
  type AcceptorReply,
  type NackMsg,
  type PrepareMsg,
  type PromiseMsg,
  type Proposal,
  type ProposerStep
} from './paxos.ts'
import { PeerTable, type PeerState } from './peers.ts'
import { createMembershipShared, type MembershipShared } from './shared.ts'
import type {
  AcceptorRecord,
  AcceptorState,
  Member,
  Membership,
  MembershipDurableState,
  MembershipEvents,
  MembershipInit,
  MembershipStatus,
  MemberStatus,
  View
} from './types.ts'
import { memberOf } from './types.ts'
import { HB_TOPIC, VIEW_TOPIC, type ViewCodec, type ViewEnvelope, type ViewMessageType } from './view-codec.ts'

/**
 * Membership without a coordinator: this file wires the parts to a PeerNet and a clock.
 *
 * - Heartbeats, O(N) per period rather than all-to-all: every member sends its heartbeat each
 *   `heartbeatMs` straight to its leader, and a node that is its own leader gossips its
 *   heartbeat to everyone (leader.ts); a phi-accrual detector per watched peer turns silence
 *   into suspicion (detector.ts). Nodes outside a view (joiners) gossip their heartbeats so the
 *   leader sees them; before the first view, nodes rank each other by id.
 * - A view is (epoch, ordered members); the view of epoch e+1 is chosen by single-decree Paxos
 *   among the members of view e (paxos.ts), so a minority can never install one: it pauses.
 *   The proposer is the leader; if two nodes both believe they lead, ballots settle it.
 *   Members learn whether the view has lost its majority from the leader's heartbeat.
 * - Genesis (epoch 1, no previous view): the node with the lowest id among the view-less live
 *   nodes proposes all of them once at least `expect` are present; every proposed member must
 *   accept. With `expect` above half the nodes started, two disjoint genesis views cannot form.
 * - Joiners are live peers outside the view; graceful leavers announce it and are removed
 *   without waiting for the detector.
 */
export interface MembershipComponents {
  net: PeerNet
  clock: Clock
  rng: Rng
  log: Logger
  /** Caches shared with the other memberships of this process (a simulated world); a private one if absent. */
  shared?: MembershipShared
}

/** Creates the membership service of one node. */
export function createMembership(init: MembershipInit, components: MembershipComponents): Membership {
  return new MembershipNode(init, components)
}

/** The settings of one membership, defaults applied. */
interface Settings extends DetectorOptions {
  expect: number
  formationMs: number
  phaseTimeoutMs: number
  maxMembers: number
}

function settingsOf(init: MembershipInit): Settings {
  const heartbeatMs = init.heartbeatMs ?? 500
  const s: Settings = {
    heartbeatMs,
    threshold: init.phiThreshold ?? 8,
    minStdMs: init.minStdMs ?? heartbeatMs / 2,
    expect: init.expect ?? 1,
    formationMs: init.formationMs ?? 3 * heartbeatMs,
    phaseTimeoutMs: init.phaseTimeoutMs ?? 4 * heartbeatMs,
    maxMembers: init.maxMembers ?? 1024
  }
  if (!(heartbeatMs > 0) || !Number.isInteger(s.expect) || s.expect < 1 || s.expect > s.maxMembers) {
    throw new InvalidArgumentError('membership needs heartbeatMs > 0 and 1 <= expect <= maxMembers')
  }
  return s
}

function sameMembers(a: Member[], b: Member[]): boolean {
  return a.length === b.length && a.every((m, i) => m.id === b[i]!.id)
}

/**
 * One node's membership. (Time is read as clock.monotonic() in place: per-tick code runs for
 * 1000 nodes in a simulation.)
 */
class MembershipNode implements Membership, LeaderContext {
  private readonly init: MembershipInit
  private readonly net: PeerNet
  private readonly clock: Clock
  private readonly rng: Rng
  private readonly log: Logger
  private readonly shared: MembershipShared
  private readonly cfg: Settings
  private readonly codec: ViewCodec
  private readonly decoded: WeakMap<Uint8Array, ViewEnvelope>
  private readonly events: Listeners<MembershipEvents>
  private readonly peers = new PeerTable()

  private current: View | undefined = undefined
  private seq = 0
  private step = 0
  private startedAt = 0
  private timer: number | undefined = undefined
  // Local pause detection (Cassandra's habit): when this node's own tick comes late, its event
  // loop or VM was stalled, and the silence it sees from peers is its own. It judges nobody
  // until `graceUntil`, so a stalled node does not evict the healthy ones.
  private lastTickAt: number | undefined = undefined
  graceUntil = -Infinity
  private running = false
  private paused = false
  private lastCommitResend = -Infinity
  private incarnation = 0
  private maxPeerEpoch = 0
  private leader: PeerId | undefined = undefined
  // Derived from the view when it is installed (per-tick code must not rescan N members or
  // look each one up): the member ids in rank order and their records (undefined for self;
  // made on first use: only a leader needs them).
  private inView = false
  private viewOrder: PeerId[] | undefined = undefined
  private viewPeers: Array<PeerState | undefined> | undefined = undefined
  // Acceptor state for epoch (view?.epoch ?? 0) + 1.
  private acc: AcceptorState = { epoch: 1 }
  // The acceptor record of a previous process on this identity, while this node's views are
  // behind its epoch in its lineage: it answers nothing for an epoch below it (see AcceptorRecord).
  private prior: AcceptorRecord | undefined = undefined
  private proposal: Proposal | undefined = undefined
  private maxRound = 0
  private retryAt = 0
  private unsubs: Array<() => void> = []

  constructor(init: MembershipInit, c: MembershipComponents) {
    this.init = init
    this.cfg = settingsOf(init)
    this.net = c.net
    this.clock = c.clock
    this.rng = c.rng
    this.log = c.log
    this.shared = c.shared ?? createMembershipShared()
    this.codec = this.shared.codec(this.cfg.maxMembers)
    this.decoded = this.shared.decoded(this.cfg.maxMembers)
    this.events = new Listeners<MembershipEvents>(err => this.log.error({ err }, 'membership listener failed'))
  }

  // --- peers and liveness ---------------------------------------------------------------

  private self(): PeerId {
    return this.net.self.id
  }
  private selfMember(): Member {
    return memberOf(this.self(), this.net.self.labels)
  }
  now(): number {
    return this.clock.monotonic()
  }

  private connect(id: PeerId, labels: PeerLabels): void {
    if (id !== this.self()) this.peers.connect(id, labels)
  }

  /** Heard from (or primed) recently, connected, not leaving. Self is always live. */
  private isLive(id: PeerId): boolean {
    return id === this.self() || liveAt(this.peers.get(id), this.clock.monotonic(), this.graceUntil)
  }

  /** Live on the evidence of a real heartbeat (not only a primed detector). */
  private heardLive(id: PeerId): boolean {
    return this.isLive(id) && this.peers.get(id)?.primed !== true
  }

  knownDead(id: PeerId): boolean {
    if (id === this.self()) return false
    const r = this.peers.get(id)
    return r?.detector !== undefined && !liveAt(r, this.clock.monotonic(), this.graceUntil)
  }

  private labelsOf(id: PeerId): Member | undefined {
    return id === this.self() ? this.selfMember() : this.peers.get(id)?.conn
  }

  prime(id: PeerId): void {
    prime(this.peers.ensure(id), this.clock.monotonic(), this.cfg)
  }

  // --- leader ---------------------------------------------------------------------------

  /**
   * The ranking a node's leader comes from: the view's members when this node is one; every
   * connected node by id before any view exists; none for a node outside an existing view
   * (it gossips its heartbeats so the leader finds it).
   */
  private order(): readonly PeerId[] | undefined {
    if (this.current !== undefined) return this.viewOrder
    if (this.maxPeerEpoch > 0) return undefined
    return this.peers.sortedWith(this.self())
  }

  /** The records of the view's members in rank order (undefined for self), made on first use. */
  private rankRecords(v: View): Array<PeerState | undefined> {
    const me = this.self()
    return (this.viewPeers ??= v.members.map(m => (m.id === me ? undefined : this.peers.ensure(m.id))))
  }

  /**
   * The record of `ord[i]` (or undefined if there is none yet): past the first ranks of the
   * view's order it comes from rankRecords, since a node whose leader died scans every rank
   * above its own each tick, and a lookup per rank per node per tick adds up at 1000 nodes.
   */
  recordAt(ord: readonly PeerId[], i: number): PeerState | undefined {
    return i >= 2 && ord === this.viewOrder && this.current !== undefined ? this.rankRecords(this.current)[i] : this.peers.get(ord[i]!)
  }

  private updateLeader(): void {
    const ord = this.order()
    this.leader = ord === undefined ? undefined : chooseLeader(this, ord, this.self(), this.leader)
  }

  // --- sending --------------------------------------------------------------------------

  private transmitBytes(topic: string, bytes: Uint8Array, to: PeerId | undefined): Promise<void> {
    return to === undefined ? this.net.publish(topic, bytes) : this.net.send(to, topic, bytes)
  }

  private failed(type: string): (err: unknown) => void {
    return (err: unknown): void => {
      this.log.debug({ err: String(err), type }, 'membership send failed')
    }
  }

  private readonly hbSendFailed = this.failed('hb')

  /**
   * Sends a view message without waiting. A promise the network handed back before and that
   * has fulfilled cannot fail: it needs no handler, so a network that answers every send with
   * one settled promise (SimNet) costs no promise per heartbeat.
   */
  private post(type: ViewMessageType, payload: unknown, to?: PeerId): void {
    this.forget(this.transmitBytes(VIEW_TOPIC, this.codec.encode(type, payload as never), to), type)
  }

  private forget(p: Promise<void>, type: string): void {
    const shared = this.shared
    if (p !== shared.fulfilledSend)
      p.then(
        () => {
          shared.fulfilledSend = p
        },
        type === 'hb' ? this.hbSendFailed : this.failed(type)
      )
  }

  private install(v: View, why: string): void {
    if (this.current !== undefined && v.epoch <= this.current.epoch) return
    // The member list is frozen and shared, not copied (see MembershipShared.members).
    const shared = this.shared.members(v.members)
    const view: View = (this.current =
      v.lineage === undefined ? { epoch: v.epoch, members: shared.members } : { epoch: v.epoch, members: shared.members, lineage: v.lineage })
    this.inView = shared.rank.has(this.self())
    this.viewOrder = this.inView ? shared.ids : undefined
    this.viewPeers = undefined
    const p = this.prior
    const ours = p !== undefined && p.lineage === view.lineage
    this.acc = ours && p.acceptor.epoch === view.epoch + 1 ? p.acceptor : { epoch: view.epoch + 1 }
    if (ours && p.acceptor.epoch <= view.epoch + 1) this.prior = undefined
    if (this.proposal !== undefined && this.proposal.epoch <= view.epoch) this.proposal = undefined
    if (this.log.isLevelEnabled('info')) this.log.info({ epoch: view.epoch, members: view.members.map(m => m.id), why }, 'view installed')
    this.events.emit('view', view)
  }

  // --- acceptor -------------------------------------------------------------------------

  private isAcceptor(epoch: number, genesis?: readonly Member[]): boolean {
    const v = this.current
    if (this.abstains(epoch)) return false
    return isAcceptor({ nextEpoch: (v?.epoch ?? 0) + 1, hasView: v !== undefined, inView: this.inView, self: this.self() }, epoch, genesis)
  }

  /**
   * Whether a previous process on this identity may have answered for `epoch` in this view's
   * lineage with a state this one no longer has: it then answers nothing (a forgotten promise
   * or acceptance could let a second view be chosen for the epoch).
   */
  private abstains(epoch: number): boolean {
    const p = this.prior
    return p !== undefined && this.current !== undefined && this.current.lineage === p.lineage && epoch < p.acceptor.epoch
  }

  /**
   * Makes an acceptor step's state durable before its reply goes out (write-through): false if
   * the store failed, and then the step is dropped unanswered. Genesis answers are not kept
   * (no lineage exists yet; see docs/LIMITS.md). `binding`: a previous process's record still
   * in force, written again with the current highest round instead of `state`.
   */
  private persist(state: AcceptorState, binding?: AcceptorRecord): boolean {
    const store = this.init.acceptorStore
    const v = this.current
    if (store === undefined || v === undefined) return true
    try {
      store.save(
        binding !== undefined
          ? { ...binding, maxRound: this.maxRound }
          : { ...(v.lineage === undefined ? {} : { lineage: v.lineage }), acceptor: state, maxRound: this.maxRound }
      )
      return true
    } catch (err) {
      this.log.error({ err: String(err), epoch: state.epoch }, 'cannot keep the acceptor record: not answering')
      return false
    }
  }

  private onPrepare(from: PeerId, p: PrepareMsg): void {
    if (!this.isAcceptor(p.epoch, p.genesis)) return
    const step = acceptorPrepare(this.acc, from, p)
    this.maxRound = Math.max(this.maxRound, p.round)
    if (step.state !== this.acc && !this.persist(step.state)) return
    this.acc = step.state
    this.reply(from, step.reply)
  }

  private onAccept(from: PeerId, p: AcceptMsg): void {
    // A genesis accept: a view-less node accepts it as a member of the view, or as an acceptor
    // of that ballot (it promised it, so the ballot's list named it). A later genesis ballot
    // re-proposes what an earlier one's acceptors accepted, and that list can leave out some
    // of the later ballot's acceptors: refusing them would leave every such ballot short.
    const genesis = this.current === undefined ? p.view.members : undefined
    const promised = this.acc.epoch === p.epoch && this.acc.promised?.round === p.round && this.acc.promised.proposer === from
    if (!this.isAcceptor(p.epoch, genesis) && !(genesis !== undefined && p.epoch === 1 && promised)) return
    const step = acceptorAccept(this.acc, from, p)
    if (step === undefined) return
    this.maxRound = Math.max(this.maxRound, p.round)
    if (step.state !== this.acc && !this.persist(step.state)) return
    this.acc = step.state
    if (step.accepted !== undefined) this.events.emit('accepted', step.accepted)
    this.reply(from, step.reply)
  }

  /** Replies go straight to the proposer (gossiping them would cost N² deliveries per phase); to myself they are handled inline. */
  private reply(to: PeerId, r: AcceptorReply): void {
    if (to === this.self()) this.handleView(to, r as ViewEnvelope)
    else this.post(r.type, r.payload, to)
  }

  // --- proposer -------------------------------------------------------------------------

  private propose(epoch: number, acceptors: Member[], genesis?: Member[]): void {
    this.maxRound += 1
    // The round is recorded before its prepare goes out (its own answer may not be: a leader
    // that abstains, say): a restarted proposer must never reuse a ballot with another value.
    // While a previous process's record binds, it is that record that is rewritten.
    if (!this.persist(this.acc, this.prior)) return
    const { proposal, prepare } = startProposal({
      epoch,
      round: this.maxRound,
      self: this.self(),
      acceptors,
      quorumOfOne: this.init.unsafe?.quorumOfOne === true,
      now: this.clock.monotonic(),
      ...(genesis === undefined ? {} : { genesis, lineage: this.newLineage() })
    })
    this.proposal = proposal
    this.log.debug({ epoch, round: this.maxRound, acceptors: [...proposal.acceptors] }, 'proposing a view')
    this.post('prepare', prepare)
    if (proposal.acceptors.has(this.self())) this.onPrepare(this.self(), prepare)
  }

  /**
   * A lineage for a genesis this node proposes: the wall clock tells launches apart, a hash of
   * the proposer's id proposers (no rng draw: seeded runs keep their sequences).
   */
  private newLineage(): string {
    const id = checksum64(new TextEncoder().encode(this.self())) & 0xffffffffn
    return `${Math.floor(this.clock.now()).toString(36)}.${id.toString(36)}`
  }

  private onPromise(from: PeerId, p: PromiseMsg): void {
    this.apply(proposerPromise(this.proposal, this.self(), from, p, epoch => this.desiredView(epoch)))
  }

  private onAccepted(from: PeerId, p: AcceptedMsg): void {
    this.apply(proposerAccepted(this.proposal, this.self(), from, p))
  }

  private onNack(p: NackMsg): void {
    this.maxRound = Math.max(this.maxRound, p.promisedRound)
    this.apply(proposerNack(this.proposal, this.self(), p))
  }

  /** Carries out a proposer step: the new proposal first, then what it sends (to itself inline). */
  private apply(step: ProposerStep): void {
    switch (step.kind) {
      case 'ignore':
        return
      case 'wait':
        this.proposal = step.proposal
        return
      case 'abandon':
        this.proposal = undefined
        return
      case 'accept':
        this.proposal = step.proposal
        this.post('accept', step.accept)
        if (step.proposal.acceptors.has(this.self())) this.onAccept(this.self(), step.accept)
        return
      case 'commit':
        this.proposal = undefined
        this.post('commit', { view: step.view })
        this.install(step.view, 'chosen by a quorum')
        return
      case 'backoff':
        this.proposal = undefined
        // Back off a random fraction of a phase so duelling proposers stop colliding.
        this.retryAt = this.clock.monotonic() + this.rng.float() * this.cfg.phaseTimeoutMs
    }
  }

  /** The view this node would like next: live members in rank order, then live joiners by id. */
  private desiredView(epoch: number): View | undefined {
    const view = this.current
    if (view === undefined) return undefined
    const members = view.members.filter(m => this.isLive(m.id))
    const known = new Set(view.members.map(m => m.id))
    const joiners = this.peers
      .connected()
      .filter(id => !known.has(id) && this.heardLive(id))
      .sort()
    for (const id of joiners) {
      const m = this.labelsOf(id)
      if (m !== undefined && members.length < this.cfg.maxMembers) members.push(m)
    }
    if (members.length === 0) return undefined
    return view.lineage === undefined ? { epoch, members } : { epoch, members, lineage: view.lineage }
  }

  // --- tick -----------------------------------------------------------------------------

  private readonly tick = (): void => {
    if (!this.running) return
    try {
      this.evaluate()
    } catch (err) {
      this.log.error({ err: String(err) }, 'membership evaluation failed')
    }
    this.lastTickAt = this.clock.monotonic()
    this.seq += 1
    const bytes = this.shared.heartbeats.encode(this.incarnation, this.seq, this.current?.epoch ?? 0, this.step, this.clock.now(), false, this.paused)
    const leader = this.leader
    this.forget(this.transmitBytes(HB_TOPIC, bytes, leader === undefined || leader === this.self() ? undefined : leader), 'hb')
    this.timer = this.clock.setTimeout(this.tick, this.cfg.heartbeatMs)
  }

  private evaluate(): void {
    const t = this.clock.monotonic()
    this.noticeStall(t)
    this.updateLeader()
    const pr = this.proposal
    if (pr !== undefined && proposalExpired(pr, t, this.cfg.phaseTimeoutMs)) {
      this.log.debug({ epoch: pr.epoch, round: pr.ballot.round, phase: pr.phase }, 'proposal timed out')
      this.proposal = undefined
      this.retryAt = t + this.rng.float() * this.cfg.heartbeatMs
    }
    if (this.current === undefined) {
      this.tryGenesis(t)
      return
    }
    const liveCount = this.updatePaused(this.current, t)
    this.tryChange(t, liveCount)
  }

  /** A tick overdue by more than a period means this node's loop was stalled (evaluate also runs from a disconnect event, which can be the first thing to run after the stall). */
  private noticeStall(t: number): void {
    const hb = this.cfg.heartbeatMs
    if (this.lastTickAt !== undefined && t - this.lastTickAt > 2 * hb && this.graceUntil < t) {
      this.graceUntil = t + 2 * hb
      this.log.warn({ lateMs: Math.round(t - this.lastTickAt - hb) }, 'this node was stalled: suspecting nobody for two heartbeats')
    }
  }

  /** View-less: the lowest id among the view-less live nodes proposes them all as genesis once `expect` are here. */
  private tryGenesis(t: number): void {
    if (this.leader !== this.self() || this.maxPeerEpoch > 0 || t - this.startedAt < this.cfg.formationMs || this.proposal !== undefined || t < this.retryAt)
      return
    const group = [this.self(), ...this.peers.connected().filter(id => this.heardLive(id) && (this.peers.get(id)?.epoch ?? 0) === 0)].sort()
    if (group.length >= this.cfg.expect) {
      const genesis = group.flatMap(id => this.labelsOf(id) ?? [])
      this.propose(1, genesis, genesis)
    }
  }

  /**
   * Whether the view lost its majority: the leader counts the live members, the others take
   * the leader's word. Returns the live count (0 when this node does not lead).
   */
  private updatePaused(view: View, t: number): number {
    let nowPaused = false
    let liveCount = 0
    if (this.inView && this.leader === this.self()) {
      liveCount = countLive(this.rankRecords(view), t, this.graceUntil)
      nowPaused = liveCount < Math.floor(view.members.length / 2) + 1
    } else if (this.inView && this.leader !== undefined) {
      nowPaused = this.peers.get(this.leader)?.reportsPaused === true
    }
    if (nowPaused !== this.paused) {
      this.paused = nowPaused
      this.log.info(
        { epoch: view.epoch, leader: this.leader, of: view.members.length },
        nowPaused ? 'lost the majority of the view: pausing' : 'majority restored'
      )
      this.events.emit('paused', nowPaused)
    }
    return liveCount
  }

  /** The leader of a view with a majority proposes the next view when members died or joiners wait. */
  private tryChange(t: number, liveCount: number): void {
    const view = this.current!
    if (!this.inView || (this.paused && this.init.unsafe?.ignoreMinority !== true)) return
    if (this.leader !== this.self() || this.proposal !== undefined || t < this.retryAt) return
    // Every member live and every connected peer a member: nothing to change (skips an O(N) pass).
    if (liveCount === view.members.length && this.peers.connected().length + 1 === view.members.length) return
    const want = this.desiredView(view.epoch + 1)
    if (want === undefined || sameMembers(want.members, view.members)) return
    this.propose(view.epoch + 1, view.members)
  }

  // --- receiving ------------------------------------------------------------------------

  // Validation and delivery see the same bytes, and in-process networks hand one buffer to
  // every receiver: decode each buffer once (decoded messages are never mutated).
  private decode(data: Uint8Array): ViewEnvelope {
    let env = this.decoded.get(data)
    if (env === undefined) this.decoded.set(data, (env = this.codec.decode(data)))
    return env
  }

  private readonly validateHb = (m: { from: PeerId; data: Uint8Array }): GossipVerdict => {
    let hb: Heartbeat
    try {
      hb = this.shared.heartbeats.decodeCached(m.data)
    } catch {
      return 'reject'
    }
    return isFresh(this.peers.get(m.from), hb) ? 'accept' : 'ignore'
  }

  private readonly onHeartbeat = (m: { from: PeerId; data: Uint8Array }): void => {
    const p = this.shared.heartbeats.decodeCached(m.data)
    const r = this.peers.ensure(m.from)
    if (!isFresh(r, p)) return
    observeHeartbeat(r, p, this.clock.monotonic(), this.cfg)
    if (p.epoch > this.maxPeerEpoch) this.maxPeerEpoch = p.epoch
    // Help a node that is behind: the leader re-sends the newest commit, at most once per
    // heartbeat (if every member did, N members would each gossip an N-member view to N nodes
    // per heartbeat while anyone lags).
    const view = this.current
    if (view !== undefined && p.epoch < view.epoch && this.leader === this.self() && this.clock.monotonic() - this.lastCommitResend >= this.cfg.heartbeatMs) {
      this.lastCommitResend = this.clock.monotonic()
      this.post('commit', { view })
    }
  }

  /** Decodes a view message, or says what to do with bytes that do not decode; stale messages (an epoch already passed) are ignored. */
  private readonly validateView = (m: { data: Uint8Array }): GossipVerdict => {
    let env: ViewEnvelope
    try {
      env = this.decode(m.data)
    } catch (err) {
      return err instanceof ProtocolError ? err.action : 'reject'
    }
    const epoch = env.type === 'commit' ? env.payload.view.epoch : env.payload.epoch
    return this.current !== undefined && epoch <= this.current.epoch ? 'ignore' : 'accept'
  }

  private handleView(from: PeerId, env: ViewEnvelope): void {
    switch (env.type) {
      case 'prepare':
        this.onPrepare(from, env.payload)
        break
      case 'promise':
        this.onPromise(from, env.payload)
        break
      case 'nack':
        this.onNack(env.payload)
        break
      case 'accept':
        this.onAccept(from, env.payload)
        break
      case 'accepted':
        this.onAccepted(from, env.payload)
        break
      case 'commit':
        this.install(env.payload.view, `commit from ${from}`)
        break
      default:
        break
    }
  }

  // --- lifecycle and queries ------------------------------------------------------------

  async start(): Promise<void> {
    if (this.running) return
    this.running = true
    this.startedAt = this.clock.monotonic()
    this.incarnation = Math.max(1, Math.floor(this.clock.now()))
    const record = this.init.acceptorStore?.load()
    if (record !== undefined && this.current === undefined) {
      this.prior = structuredClone(record)
      this.maxRound = Math.max(this.maxRound, record.maxRound)
    }
    if (this.init.restore !== undefined && this.current === undefined) {
      const r = structuredClone(this.init.restore)
      this.install(r.view, 'restored from a previous incarnation')
      if (record === undefined && r.acceptor.epoch === r.view.epoch + 1) this.acc = r.acceptor
      this.maxRound = Math.max(this.maxRound, r.maxRound)
    }
    const net = this.net
    this.unsubs = [
      net.subscribe(HB_TOPIC, { validate: this.validateHb, deliver: this.onHeartbeat }),
      net.subscribe(VIEW_TOPIC, { validate: this.validateView, deliver: m => this.handleView(m.from, this.decode(m.data)) }),
      net.on('peer:connect', info => this.connect(info.id, info.labels)),
      net.on('peer:disconnect', id => {
        this.peers.disconnect(id)
        if (this.running) this.evaluate()
      })
    ]
    for (const p of net.peers()) this.connect(p.id, p.labels)
    this.timer = this.clock.setTimeout(this.tick, 0)
  }

  async stop(): Promise<void> {
    if (!this.running) return
    this.seq += 1
    this.running = false
    const bytes = this.shared.heartbeats.encode(this.incarnation, this.seq, this.current?.epoch ?? 0, this.step, this.clock.now(), true, this.paused)
    await this.transmitBytes(HB_TOPIC, bytes, undefined).catch(this.hbSendFailed)
    if (this.timer !== undefined) this.clock.clearTimeout(this.timer)
    for (const u of this.unsubs) u()
  }

  view(): View | undefined {
    return this.current
  }

  status(): MembershipStatus {
    const t = this.clock.monotonic()
    const me = this.self()
    const members = (this.current?.members ?? []).map((m, rank) => this.memberStatus(m, rank, t))
    const known = new Set(members.map(m => m.id))
    let worst = this.cfg.heartbeatMs
    for (const r of this.peers.all()) if (r.detector !== undefined) worst = Math.max(worst, r.detector.silenceToSuspectMs())
    return {
      self: me,
      epoch: this.current?.epoch ?? 0,
      members,
      paused: this.paused,
      member: known.has(me),
      joining: this.peers
        .connected()
        .filter(id => !known.has(id) && this.heardLive(id))
        .sort(),
      leader: this.leader,
      detectionBoundMs: Math.ceil(Math.max(worst, silenceFor(this.cfg.threshold, this.cfg.heartbeatMs, this.cfg.minStdMs)))
    }
  }

  private memberStatus(m: Member, rank: number, t: number): MemberStatus {
    const me = this.self()
    const r = this.peers.get(m.id)
    const d = r?.detector
    const primed = r?.primed === true
    // Heartbeats go to the leader only: a node that does not lead watches its leader, and its
    // record of any other member holds at most a heartbeat from before the first view (when they
    // were gossiped), which says nothing about that member now.
    const monitored = m.id === me || this.leader === me || m.id === this.leader
    return {
      ...m,
      rank,
      live: monitored ? this.isLive(m.id) : r?.conn !== undefined && !r.leaving,
      phi: m.id === me || !monitored ? 0 : Number((d?.phi(t) ?? Infinity).toFixed(2)),
      lastHeartbeatAgeMs: m.id === me ? 0 : d?.lastAt === undefined || primed ? -1 : Math.round(t - d.lastAt),
      monitored
    }
  }

  on<E extends keyof MembershipEvents>(event: E, listener: (d: MembershipEvents[E]) => void): () => void {
    return this.events.on(event, listener)
  }

  setStep(s: number): void {
    this.step = s
  }

  durableState(): MembershipDurableState | undefined {
    if (this.current === undefined) return undefined
    return structuredClone({ view: this.current, acceptor: this.acc, maxRound: this.maxRound })
  }
}
