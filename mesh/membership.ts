import { z } from 'zod'
import { InvalidArgumentError, ProtocolError, type Clock, type Logger, type Rng } from '../core/index.ts'
import { createEnvelopeCodec } from '../codec/index.ts'
import { Listeners } from './listeners.ts'
import { PhiDetector, silenceFor } from './phi.ts'
import type { GossipVerdict, PeerId, PeerNet } from './peernet.ts'

/**
 * Membership without a coordinator (DESIGN §5).
 *
 * - Every node gossips a heartbeat each `heartbeatMs`; a phi-accrual detector per peer turns
 *   silence into suspicion, with timeouts that follow the observed intervals.
 * - A **view** is (epoch, ordered members); a member's rank is its index. Choosing the view of
 *   epoch e+1 is one instance of single-decree Paxos whose acceptors are the members of view e:
 *   a value is chosen once a majority of them accept it, and any later proposer for the same
 *   epoch learns it from the promises and must re-propose it. So no two different views ever
 *   carry the same epoch, and a minority (fewer than a majority of the previous view) can never
 *   install one: it pauses.
 * - The proposer is the lowest-ranked member that the node itself considers live; if two nodes
 *   disagree about that, Paxos ballots (round, proposer id) settle it.
 * - Genesis (epoch 1, no previous view): the node with the lowest id among the view-less live
 *   nodes proposes all of them once at least `expect` are present; every proposed member must
 *   accept. With `expect` above half the nodes started, two disjoint genesis views cannot form.
 * - Joiners are live peers outside the view; graceful leavers announce it and are removed
 *   without waiting for the detector.
 */
export interface Member { id: PeerId, zone: string, host: string }
export interface View { epoch: number, members: Member[] }

export interface MembershipInit {
  /** Heartbeat period (ms). Default 500. */
  heartbeatMs?: number
  /** phi threshold. Default 8. */
  phiThreshold?: number
  /**
   * Floor of the interval std dev used by the detector (ms). Default heartbeatMs / 2, so one
   * or two lost heartbeats on a lossy WAN do not evict a member but three in a row do.
   */
  minStdMs?: number
  /** Members needed before a genesis view forms. Default 1. */
  expect?: number
  /** How long a view-less node waits after start before it may propose genesis (ms). Default 3 heartbeats. */
  formationMs?: number
  /** How long a proposal phase may take before it is retried with a higher round (ms). Default 4 heartbeats. */
  phaseTimeoutMs?: number
  /** Most members a view may have. Default 1024. */
  maxMembers?: number
  /**
   * Deliberately broken variants, only for tests that prove the safety checker can fail:
   * `quorumOfOne` accepts a view with one acceptance, `ignoreMinority` proposes while paused.
   * Never set outside such a test.
   */
  unsafe?: { quorumOfOne?: boolean, ignoreMinority?: boolean }
}

export interface MemberStatus extends Member {
  rank: number
  live: boolean
  phi: number
  /** Milliseconds since the last heartbeat from this member (0 for self; -1 if none yet). */
  lastHeartbeatAgeMs: number
}

export interface MembershipStatus {
  self: PeerId
  epoch: number
  members: MemberStatus[]
  /** True when fewer than a majority of the view's members are live: training must pause. */
  paused: boolean
  /** True when this node is a member of the current view. */
  member: boolean
  /** Live peers that are not members yet. */
  joining: PeerId[]
  /** How long (ms) a crashed member stays undetected at most, from the current statistics. */
  detectionBoundMs: number
}

export interface MembershipEvents {
  view: View
  paused: boolean
}

export interface Membership {
  start(): Promise<void>
  /** Announces a graceful leave, then stops. */
  stop(): Promise<void>
  view(): View | undefined
  status(): MembershipStatus
  on<E extends keyof MembershipEvents>(event: E, listener: (d: MembershipEvents[E]) => void): () => void
  /** The step this node reports in its heartbeat (set by the trainer). */
  setStep(step: number): void
}

const HB_TOPIC = 'membership/hb'
const VIEW_TOPIC = 'membership/view'
const peerIdSchema = z.string().min(1).max(128)
const memberSchema = z.strictObject({ id: peerIdSchema, zone: z.string().min(1).max(64), host: z.string().min(1).max(253) })
const u53 = z.int().nonnegative()

function viewSchema (maxMembers: number): z.ZodType<View> {
  return z.strictObject({ epoch: u53.min(1), members: z.array(memberSchema).min(1).max(maxMembers) })
    .refine(v => new Set(v.members.map(m => m.id)).size === v.members.length, { message: 'duplicate member ids' })
}

function makeCodec (maxMembers: number) {
  const view = viewSchema(maxMembers)
  return createEnvelopeCodec({
    hb: z.strictObject({ inc: u53, seq: u53, epoch: u53, step: u53, sentAt: z.number().finite(), leaving: z.boolean() }),
    prepare: z.strictObject({ epoch: u53.min(1), round: u53, genesis: z.array(memberSchema).max(maxMembers).optional() }),
    promise: z.strictObject({ epoch: u53, round: u53, proposer: peerIdSchema, acceptedRound: u53.optional(), acceptedBy: peerIdSchema.optional(), accepted: view.optional() }),
    nack: z.strictObject({ epoch: u53, round: u53, proposer: peerIdSchema, promisedRound: u53 }),
    accept: z.strictObject({ epoch: u53.min(1), round: u53, view }),
    accepted: z.strictObject({ epoch: u53, round: u53, proposer: peerIdSchema }),
    commit: z.strictObject({ view })
  })
}

type Codec = ReturnType<typeof makeCodec>

/** Decoded messages by buffer, shared by memberships with the same limits (one codec shape). */
const decodeCaches = new Map<number, WeakMap<Uint8Array, ReturnType<Codec['decode']>>>()
function sharedDecodeCache (maxMembers: number): WeakMap<Uint8Array, ReturnType<Codec['decode']>> {
  let cache = decodeCaches.get(maxMembers)
  if (cache === undefined) decodeCaches.set(maxMembers, cache = new WeakMap())
  return cache
}

interface Ballot { round: number, proposer: PeerId }
const cmp = (a: Ballot, b: Ballot): number => a.round - b.round || (a.proposer < b.proposer ? -1 : a.proposer > b.proposer ? 1 : 0)

interface Proposal {
  epoch: number
  ballot: Ballot
  acceptors: Set<PeerId>
  quorum: number
  phase: 'prepare' | 'accept'
  promises: Map<PeerId, { round?: number, by?: PeerId, view?: View }>
  accepts: Set<PeerId>
  value?: View
  genesis?: Member[]
  startedAt: number
}

function sameMembers (a: Member[], b: Member[]): boolean {
  return a.length === b.length && a.every((m, i) => m.id === b[i]!.id)
}

/** Creates the membership service of one node. */
export function createMembership (init: MembershipInit, components: { net: PeerNet, clock: Clock, rng: Rng, log: Logger }): Membership {
  const { net, clock, rng, log } = components
  const heartbeatMs = init.heartbeatMs ?? 500
  const threshold = init.phiThreshold ?? 8
  const minStdMs = init.minStdMs ?? heartbeatMs / 2
  const expect = init.expect ?? 1
  const formationMs = init.formationMs ?? 3 * heartbeatMs
  const phaseTimeoutMs = init.phaseTimeoutMs ?? 4 * heartbeatMs
  const maxMembers = init.maxMembers ?? 1024
  if (!(heartbeatMs > 0) || !Number.isInteger(expect) || expect < 1 || expect > maxMembers) {
    throw new InvalidArgumentError('membership needs heartbeatMs > 0 and 1 <= expect <= maxMembers')
  }
  const codec: Codec = makeCodec(maxMembers)
  const events = new Listeners<MembershipEvents>(err => log.error({ err }, 'membership listener failed'))
  const self = (): PeerId => net.self.id
  const selfMember = (): Member => ({ id: self(), zone: net.self.labels.zone, host: net.self.labels.host })

  let view: View | undefined
  let seq = 0
  let step = 0
  let startedAt = 0
  let timer: number | undefined
  let running = false
  let paused = false
  let lastCommitResend = -Infinity
  // Last (incarnation, seq) per peer: a restart starts a new, later incarnation.
  const lastSeq = new Map<PeerId, { inc: number, seq: number }>()
  let incarnation = 0
  const detectors = new Map<PeerId, PhiDetector>()
  const peerEpoch = new Map<PeerId, number>()
  const leaving = new Set<PeerId>()
  // Acceptor state for epoch (view?.epoch ?? 0) + 1.
  let acc: { epoch: number, promised?: Ballot, accepted?: { ballot: Ballot, view: View } } = { epoch: 1 }
  let proposal: Proposal | undefined
  let maxRound = 0
  let retryAt = 0
  let unsubs: Array<() => void> = []

  const now = (): number => clock.monotonic()
  const nextEpoch = (): number => (view?.epoch ?? 0) + 1
  const connected = (): Set<PeerId> => new Set(net.peers().map(p => p.id))

  const isLive = (id: PeerId, conn: Set<PeerId>): boolean => {
    if (id === self()) return true
    const d = detectors.get(id)
    return conn.has(id) && d !== undefined && d.lastAt !== undefined && !d.suspect(now()) && !leaving.has(id)
  }

  const labelsOf = (id: PeerId): Member | undefined => {
    if (id === self()) return selfMember()
    const p = net.peers().find(x => x.id === id)
    return p === undefined ? undefined : { id, zone: p.labels.zone, host: p.labels.host }
  }

  const send = (type: Parameters<Codec['encode']>[0], payload: unknown): Promise<void> => {
    const bytes = codec.encode(type, payload as never)
    return net.publish(type === 'hb' ? HB_TOPIC : VIEW_TOPIC, bytes).catch(err => log.debug({ err: String(err), type }, 'membership publish failed'))
  }

  const install = (v: View, why: string): void => {
    if (view !== undefined && v.epoch <= view.epoch) return
    view = { epoch: v.epoch, members: v.members.map(m => ({ ...m })) }
    acc = { epoch: view.epoch + 1 }
    if (proposal !== undefined && proposal.epoch <= view.epoch) proposal = undefined
    log.info({ epoch: view.epoch, members: view.members.map(m => m.id), why }, 'view installed')
    events.emit('view', view)
  }

  // --- acceptor -------------------------------------------------------------------------

  /** Am I an acceptor for `epoch`, given the genesis member list if any? */
  const eligible = (epoch: number, genesis?: Member[]): boolean => {
    if (epoch !== nextEpoch()) return false
    if (view === undefined) return epoch === 1 && genesis !== undefined && genesis.some(m => m.id === self())
    return view.members.some(m => m.id === self())
  }

  const onPrepare = (from: PeerId, p: { epoch: number, round: number, genesis?: Member[] }): void => {
    if (!eligible(p.epoch, p.genesis)) return
    if (acc.epoch !== p.epoch) acc = { epoch: p.epoch }
    const b = { round: p.round, proposer: from }
    maxRound = Math.max(maxRound, p.round)
    if (acc.promised !== undefined && cmp(b, acc.promised) <= 0) {
      reply(from, 'nack', { epoch: p.epoch, round: p.round, proposer: from, promisedRound: acc.promised.round })
      return
    }
    acc.promised = b
    reply(from, 'promise', {
      epoch: p.epoch,
      round: p.round,
      proposer: from,
      ...(acc.accepted === undefined ? {} : { acceptedRound: acc.accepted.ballot.round, acceptedBy: acc.accepted.ballot.proposer, accepted: acc.accepted.view })
    })
  }

  const onAccept = (from: PeerId, p: { epoch: number, round: number, view: View }): void => {
    if (p.view.epoch !== p.epoch) return
    const genesis = view === undefined ? p.view.members : undefined
    if (!eligible(p.epoch, genesis)) return
    if (acc.epoch !== p.epoch) acc = { epoch: p.epoch }
    const b = { round: p.round, proposer: from }
    maxRound = Math.max(maxRound, p.round)
    if (acc.promised !== undefined && cmp(b, acc.promised) < 0) {
      reply(from, 'nack', { epoch: p.epoch, round: p.round, proposer: from, promisedRound: acc.promised.round })
      return
    }
    acc.promised = b
    acc.accepted = { ballot: b, view: p.view }
    reply(from, 'accepted', { epoch: p.epoch, round: p.round, proposer: from })
  }

  /** Replies go by gossip too (small groups; flood publish); to myself they are handled inline. */
  const reply = (to: PeerId, type: 'promise' | 'nack' | 'accepted', payload: Record<string, unknown>): void => {
    if (to === self()) {
      handleView(self(), { type, payload } as never)
      return
    }
    void send(type, payload)
  }

  // --- proposer -------------------------------------------------------------------------

  const propose = (epoch: number, acceptors: Member[], genesis?: Member[]): void => {
    maxRound += 1
    const ids = new Set(acceptors.map(m => m.id))
    proposal = {
      epoch,
      ballot: { round: maxRound, proposer: self() },
      acceptors: ids,
      quorum: genesis !== undefined ? ids.size : (init.unsafe?.quorumOfOne === true ? 1 : Math.floor(ids.size / 2) + 1),
      phase: 'prepare',
      promises: new Map(),
      accepts: new Set(),
      ...(genesis === undefined ? {} : { genesis }),
      startedAt: now()
    }
    log.debug({ epoch, round: maxRound, acceptors: [...ids] }, 'proposing a view')
    const payload = { epoch, round: maxRound, ...(genesis === undefined ? {} : { genesis }) }
    void send('prepare', payload)
    if (ids.has(self())) onPrepare(self(), payload)
  }

  const onPromise = (from: PeerId, p: { epoch: number, round: number, proposer: PeerId, acceptedRound?: number, acceptedBy?: PeerId, accepted?: View }): void => {
    const pr = proposal
    if (pr === undefined || pr.phase !== 'prepare' || p.proposer !== self() || p.epoch !== pr.epoch || p.round !== pr.ballot.round || !pr.acceptors.has(from)) return
    pr.promises.set(from, { ...(p.acceptedRound === undefined ? {} : { round: p.acceptedRound }), ...(p.acceptedBy === undefined ? {} : { by: p.acceptedBy }), ...(p.accepted === undefined ? {} : { view: p.accepted }) })
    if (pr.promises.size < pr.quorum) return
    // Paxos: adopt the value accepted under the highest ballot, if any acceptor has one.
    let best: { ballot: Ballot, view: View } | undefined
    for (const v of pr.promises.values()) {
      if (v.view === undefined || v.round === undefined || v.by === undefined) continue
      const b = { round: v.round, proposer: v.by }
      if (best === undefined || cmp(b, best.ballot) > 0) best = { ballot: b, view: v.view }
    }
    const value = best?.view ?? (pr.genesis !== undefined ? { epoch: pr.epoch, members: pr.genesis } : desiredView(pr.epoch))
    if (value === undefined) {
      proposal = undefined
      return
    }
    pr.value = value
    pr.phase = 'accept'
    const payload = { epoch: pr.epoch, round: pr.ballot.round, view: value }
    void send('accept', payload)
    if (pr.acceptors.has(self())) onAccept(self(), payload)
  }

  const onAccepted = (from: PeerId, p: { epoch: number, round: number, proposer: PeerId }): void => {
    const pr = proposal
    if (pr === undefined || pr.phase !== 'accept' || p.proposer !== self() || p.epoch !== pr.epoch || p.round !== pr.ballot.round || !pr.acceptors.has(from)) return
    pr.accepts.add(from)
    if (pr.accepts.size < pr.quorum || pr.value === undefined) return
    const chosen = pr.value
    proposal = undefined
    void send('commit', { view: chosen })
    install(chosen, 'chosen by a quorum')
  }

  const onNack = (p: { epoch: number, round: number, proposer: PeerId, promisedRound: number }): void => {
    maxRound = Math.max(maxRound, p.promisedRound)
    const pr = proposal
    if (pr === undefined || p.proposer !== self() || p.epoch !== pr.epoch || p.round !== pr.ballot.round) return
    proposal = undefined
    // Back off a random fraction of a phase so duelling proposers stop colliding.
    retryAt = now() + rng.float() * phaseTimeoutMs
  }

  /** The view this node would like next: live members in rank order, then live joiners by id. */
  const desiredView = (epoch: number): View | undefined => {
    if (view === undefined) return undefined
    const conn = connected()
    const members = view.members.filter(m => isLive(m.id, conn))
    const known = new Set(view.members.map(m => m.id))
    const joiners = [...conn].filter(id => !known.has(id) && isLive(id, conn)).sort()
    for (const id of joiners) {
      const m = labelsOf(id)
      if (m !== undefined && members.length < maxMembers) members.push(m)
    }
    return members.length === 0 ? undefined : { epoch, members }
  }

  // --- tick -----------------------------------------------------------------------------

  const tick = (): void => {
    if (!running) return
    seq += 1
    void send('hb', { inc: incarnation, seq, epoch: view?.epoch ?? 0, step, sentAt: clock.now(), leaving: false })
    try {
      evaluate()
    } catch (err) {
      log.error({ err: String(err) }, 'membership evaluation failed')
    }
    timer = clock.setTimeout(tick, heartbeatMs)
  }

  const evaluate = (): void => {
    const conn = connected()
    const t = now()
    if (proposal !== undefined && t - proposal.startedAt > phaseTimeoutMs) {
      log.debug({ epoch: proposal.epoch, round: proposal.ballot.round, phase: proposal.phase }, 'proposal timed out')
      proposal = undefined
      retryAt = t + rng.float() * heartbeatMs
    }
    if (view === undefined) {
      const viewless = [...conn].filter(id => isLive(id, conn) && (peerEpoch.get(id) ?? 0) === 0)
      const someoneHasView = [...conn].some(id => (peerEpoch.get(id) ?? 0) > 0)
      const group = [self(), ...viewless].sort()
      if (!someoneHasView && group[0] === self() && group.length >= expect && t - startedAt >= formationMs && proposal === undefined && t >= retryAt) {
        const genesis = group.flatMap(id => labelsOf(id) ?? [])
        propose(1, genesis, genesis)
      }
      return
    }
    const inView = view.members.some(m => m.id === self())
    const liveMembers = view.members.filter(m => isLive(m.id, conn))
    const majority = Math.floor(view.members.length / 2) + 1
    const nowPaused = inView && liveMembers.length < majority
    if (nowPaused !== paused) {
      paused = nowPaused
      log.info({ epoch: view.epoch, live: liveMembers.length, of: view.members.length }, paused ? 'lost the majority of the view: pausing' : 'majority restored')
      events.emit('paused', paused)
    }
    if (!inView || (paused && init.unsafe?.ignoreMinority !== true)) return
    if (liveMembers[0]?.id !== self()) return
    const want = desiredView(view.epoch + 1)
    if (want === undefined || sameMembers(want.members, view.members)) return
    if (proposal === undefined && t >= retryAt) propose(view.epoch + 1, view.members)
  }

  // --- receiving ------------------------------------------------------------------------

  const isNewer = (from: PeerId, p: { inc: number, seq: number }): boolean => {
    const last = lastSeq.get(from)
    return last === undefined || p.inc > last.inc || (p.inc === last.inc && p.seq > last.seq)
  }

  // Validation and delivery see the same bytes, and in-process networks hand one buffer to
  // every receiver: decode each buffer once (decoded messages are never mutated).
  const decoded = sharedDecodeCache(maxMembers)
  const decode = (data: Uint8Array): ReturnType<Codec['decode']> => {
    let env = decoded.get(data)
    if (env === undefined) decoded.set(data, env = codec.decode(data))
    return env
  }

  /** Decodes a membership message, or says what to do with bytes that do not decode. */
  const decodeOr = (data: Uint8Array): ReturnType<Codec['decode']> | GossipVerdict => {
    try {
      return decode(data)
    } catch (err) {
      return err instanceof ProtocolError ? err.action : 'reject'
    }
  }

  const validateHb = (from: PeerId, data: Uint8Array): GossipVerdict => {
    const env = decodeOr(data)
    if (typeof env === 'string') return env
    if (env.type !== 'hb') return 'reject'
    // (incarnation, seq) at or below the last one seen is a replay or a stale copy.
    return isNewer(from, env.payload) ? 'accept' : 'ignore'
  }

  const onHeartbeat = (from: PeerId, data: Uint8Array): void => {
    const env = decode(data)
    if (env.type !== 'hb') return
    const p = env.payload
    if (!isNewer(from, p)) return
    if (lastSeq.get(from)?.inc !== p.inc) detectors.delete(from)
    lastSeq.set(from, { inc: p.inc, seq: p.seq })
    peerEpoch.set(from, p.epoch)
    if (p.leaving) leaving.add(from)
    else leaving.delete(from)
    let d = detectors.get(from)
    if (d === undefined) detectors.set(from, d = new PhiDetector({ threshold, minStdMs, firstIntervalMs: heartbeatMs }))
    d.heartbeat(now())
    // Help a node that is behind: the lowest-ranked live member re-sends the newest commit, at
    // most once per heartbeat (if every member did, N members would each gossip an N-member
    // view to N nodes per heartbeat while anyone lags).
    if (view !== undefined && p.epoch < view.epoch && now() - lastCommitResend >= heartbeatMs) {
      const conn = connected()
      if (view.members.find(m => isLive(m.id, conn))?.id === self()) {
        lastCommitResend = now()
        void send('commit', { view })
      }
    }
  }

  const validateView = (data: Uint8Array): GossipVerdict => {
    const env = decodeOr(data)
    if (typeof env === 'string') return env
    if (env.type === 'hb') return 'reject'
    // Stale: anything about an epoch this node has already passed.
    const epoch = env.type === 'commit' ? env.payload.view.epoch : env.payload.epoch
    if (view !== undefined && epoch <= view.epoch) return 'ignore'
    return 'accept'
  }

  const handleView = (from: PeerId, env: ReturnType<Codec['decode']>): void => {
    switch (env.type) {
      case 'prepare': onPrepare(from, env.payload); break
      case 'promise': onPromise(from, env.payload); break
      case 'nack': onNack(env.payload); break
      case 'accept': onAccept(from, env.payload); break
      case 'accepted': onAccepted(from, env.payload); break
      case 'commit': install(env.payload.view, `commit from ${from}`); break
      default: break
    }
  }

  return {
    async start () {
      if (running) return
      running = true
      startedAt = now()
      incarnation = Math.max(1, Math.floor(clock.now()))
      unsubs = [
        net.subscribe(HB_TOPIC, { validate: m => validateHb(m.from, m.data), deliver: m => onHeartbeat(m.from, m.data) }),
        net.subscribe(VIEW_TOPIC, { validate: m => validateView(m.data), deliver: m => handleView(m.from, decode(m.data)) }),
        net.on('peer:disconnect', () => { if (running) evaluate() })
      ]
      timer = clock.setTimeout(tick, 0)
    },
    async stop () {
      if (!running) return
      seq += 1
      running = false
      await send('hb', { inc: incarnation, seq, epoch: view?.epoch ?? 0, step, sentAt: clock.now(), leaving: true })
      if (timer !== undefined) clock.clearTimeout(timer)
      for (const u of unsubs) u()
    },
    view: () => view,
    status () {
      const conn = connected()
      const t = now()
      const members = (view?.members ?? []).map((m, rank) => {
        const d = detectors.get(m.id)
        return {
          ...m,
          rank,
          live: isLive(m.id, conn),
          phi: m.id === self() ? 0 : Number((d?.phi(t) ?? Infinity).toFixed(2)),
          lastHeartbeatAgeMs: m.id === self() ? 0 : (d?.lastAt === undefined ? -1 : Math.round(t - d.lastAt))
        }
      })
      const known = new Set(members.map(m => m.id))
      const worst = Math.max(heartbeatMs, ...[...detectors.values()].map(d => d.silenceToSuspectMs()))
      return {
        self: self(),
        epoch: view?.epoch ?? 0,
        members,
        paused,
        member: known.has(self()),
        joining: [...conn].filter(id => !known.has(id) && isLive(id, conn)).sort(),
        detectionBoundMs: Math.ceil(Math.max(worst, silenceFor(threshold, heartbeatMs, minStdMs)))
      }
    },
    on: (event, listener) => events.on(event, listener),
    setStep (s: number) { step = s }
  }
}
