import { z } from 'zod'
import { InvalidArgumentError, ProtocolError, type Clock, type Logger, type Rng } from '../core/index.ts'
import { createEnvelopeCodec } from '../codec/index.ts'
import { Listeners } from './listeners.ts'
import { PhiDetector, silenceFor } from './phi.ts'
import type { GossipVerdict, PeerId, PeerNet } from './peernet.ts'

/**
 * Membership without a coordinator (DESIGN §5).
 *
 * - Heartbeats, O(N) per period rather than all-to-all: every member sends its heartbeat each
 *   `heartbeatMs` straight to its **leader** (the lowest-ranked member it does not know to be
 *   dead), and a node that is its own leader gossips its heartbeat to everyone. So the leader
 *   hears every member, every member hears the leader, and a phi-accrual detector per watched
 *   peer turns silence into suspicion with timeouts that follow the observed intervals.
 *   Nodes outside a view (joiners) gossip their heartbeats so the leader sees them; before the
 *   first view, nodes rank each other by id.
 * - A node starts watching a peer it has not heard from with a *primed* detector (as if a
 *   heartbeat had just arrived), so a peer gets one detection period to show up. When a node's
 *   leader dies it re-primes the quiet members ranked below it, so the next leader is whoever
 *   is alive and gossiping, not the first node that noticed; a node that becomes leader primes
 *   every member ranked after it, so members have a detection period to redirect their
 *   heartbeats before it judges them.
 * - A **view** is (epoch, ordered members); a member's rank is its index. Choosing the view of
 *   epoch e+1 is one instance of single-decree Paxos whose acceptors are the members of view e:
 *   a value is chosen once a majority of them accept it, and any later proposer for the same
 *   epoch learns it from the promises and must re-propose it. So no two different views ever
 *   carry the same epoch, and a minority (fewer than a majority of the previous view) can never
 *   install one: it pauses.
 * - The proposer is the leader; if two nodes both believe they lead, Paxos ballots
 *   (round, proposer id) settle it. Members learn whether the view has lost its majority from
 *   the leader's heartbeat.
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
  /** State from a previous incarnation (restart with state); see {@link MembershipDurableState}. */
  restore?: MembershipDurableState
}

export interface MemberStatus extends Member {
  rank: number
  live: boolean
  phi: number
  /** Milliseconds since the last heartbeat from this member (0 for self; -1 if none yet). */
  lastHeartbeatAgeMs: number
  /**
   * Whether this node watches the member itself. Only the leader watches every member; other
   * nodes watch their leader and report the rest as live unless they know otherwise.
   */
  monitored: boolean
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
  /** The member this node sends its heartbeats to (itself when it leads); undefined outside a view. */
  leader: PeerId | undefined
  /** How long (ms) a crashed member stays undetected at most, from the current statistics. */
  detectionBoundMs: number
}

export interface MembershipEvents {
  view: View
  paused: boolean
  /** This node, as an acceptor, accepted `view` for its epoch (for safety checkers and logs). */
  accepted: View
}

/**
 * What a node must keep across a restart to stay a safe acceptor: its view and its Paxos
 * acceptor state (promised and accepted ballots). A node restarted with its view but without
 * the acceptor state could accept two different values for one epoch. Write it to stable
 * storage before answering a prepare or accept (the simulator models that write-through).
 */
export interface MembershipDurableState {
  view: View
  acceptor: { epoch: number, promised?: { round: number, proposer: PeerId }, accepted?: { ballot: { round: number, proposer: PeerId }, view: View } }
  maxRound: number
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
  /** What to persist for a restart with state (undefined before the first view). */
  durableState(): MembershipDurableState | undefined
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
    prepare: z.strictObject({ epoch: u53.min(1), round: u53, genesis: z.array(memberSchema).max(maxMembers).optional() }),
    promise: z.strictObject({ epoch: u53, round: u53, proposer: peerIdSchema, acceptedRound: u53.optional(), acceptedBy: peerIdSchema.optional(), accepted: view.optional() }),
    nack: z.strictObject({ epoch: u53, round: u53, proposer: peerIdSchema, promisedRound: u53 }),
    accept: z.strictObject({ epoch: u53.min(1), round: u53, view }),
    accepted: z.strictObject({ epoch: u53, round: u53, proposer: peerIdSchema }),
    commit: z.strictObject({ view })
  })
}

type Codec = ReturnType<typeof makeCodec>

// One codec per member cap, shared by the memberships in a process: its schemas are immutable
// and encoding keeps no state, and building them (zod) was the largest cost of starting a
// node when a simulation starts 1000.
const codecs = new Map<number, Codec>()
function sharedCodec (maxMembers: number): Codec {
  let codec = codecs.get(maxMembers)
  if (codec === undefined) codecs.set(maxMembers, codec = makeCodec(maxMembers))
  return codec
}

/**
 * Heartbeats are the most frequent message (N per period), so they skip the envelope codec:
 * a fixed 44-byte record, 'H', version 1, flags (bit 0 leaving, bit 1 paused), a zero byte,
 * then inc, seq, epoch, step and sentAt as little-endian f64 (the integers must be safe
 * non-negative integers, sentAt finite).
 */
export interface Heartbeat { inc: number, seq: number, epoch: number, step: number, sentAt: number, leaving: boolean, paused: boolean }
const HB_BYTES = 44
const HB_MAGIC = 0x48

// The five f64 fields go through one scratch buffer (no DataView per heartbeat: heartbeats are
// encoded and decoded millions of times in a large simulation). Float64Array is host-endian;
// on a big-endian host the fields go through a DataView instead.
const hbFields = new Float64Array(5)
const hbFieldBytes = new Uint8Array(hbFields.buffer)
const hostLittleEndian = new Uint8Array(Uint16Array.of(1).buffer)[0] === 1
const hbView = new DataView(hbFields.buffer)

export function encodeHeartbeat (hb: Heartbeat): Uint8Array {
  return encodeHeartbeatFields(hb.inc, hb.seq, hb.epoch, hb.step, hb.sentAt, hb.leaving, hb.paused)
}

/** {@link encodeHeartbeat} from the fields (a node's tick makes no Heartbeat object). */
function encodeHeartbeatFields (inc: number, seq: number, epoch: number, step: number, sentAt: number, leaving: boolean, paused: boolean): Uint8Array {
  const out = new Uint8Array(HB_BYTES)
  out[0] = HB_MAGIC
  out[1] = 1
  out[2] = (leaving ? 1 : 0) | (paused ? 2 : 0)
  if (hostLittleEndian) {
    hbFields[0] = inc
    hbFields[1] = seq
    hbFields[2] = epoch
    hbFields[3] = step
    hbFields[4] = sentAt
  } else {
    hbView.setFloat64(0, inc, true)
    hbView.setFloat64(8, seq, true)
    hbView.setFloat64(16, epoch, true)
    hbView.setFloat64(24, step, true)
    hbView.setFloat64(32, sentAt, true)
  }
  out.set(hbFieldBytes, 4)
  return out
}

/** Decodes a heartbeat; ProtocolError (action 'reject') for anything malformed. */
export function decodeHeartbeat (data: Uint8Array): Heartbeat {
  if (data.length !== HB_BYTES) throw badHeartbeat(`${data.length} bytes, want ${HB_BYTES}`)
  if (data[0] !== HB_MAGIC || data[1] !== 1) throw badHeartbeat('wrong magic or version')
  const flags = data[2]!
  if (flags > 3 || data[3] !== 0) throw badHeartbeat('unknown flags')
  for (let i = 0; i < 40; i++) hbFieldBytes[i] = data[4 + i]!
  const le = hostLittleEndian
  const inc = le ? hbFields[0]! : hbView.getFloat64(0, true)
  const seq = le ? hbFields[1]! : hbView.getFloat64(8, true)
  const epoch = le ? hbFields[2]! : hbView.getFloat64(16, true)
  const step = le ? hbFields[3]! : hbView.getFloat64(24, true)
  const sentAt = le ? hbFields[4]! : hbView.getFloat64(32, true)
  if (!isCount(inc) || !isCount(seq) || !isCount(epoch) || !isCount(step)) throw badHeartbeat('inc, seq, epoch and step must be non-negative integers')
  if (!Number.isFinite(sentAt)) throw badHeartbeat('sentAt is not finite')
  return { inc, seq, epoch, step, sentAt, leaving: (flags & 1) !== 0, paused: (flags & 2) !== 0 }
}

const isCount = (v: number): boolean => Number.isSafeInteger(v) && v >= 0
const badHeartbeat = (why: string): ProtocolError => new ProtocolError('MALFORMED_HEARTBEAT', `malformed heartbeat: ${why}`)

// The last promise a send got back from a network that has since fulfilled (see post).
let fulfilledSend: Promise<void> | undefined

// The last heartbeat decoded (validation and delivery see the same buffer back to back, and an
// in-process network hands one gossip buffer to every receiver).
let lastHbBytes: Uint8Array | undefined
let lastHb: Heartbeat | undefined
function heartbeatOf (data: Uint8Array): Heartbeat {
  if (data === lastHbBytes && lastHb !== undefined) return lastHb
  const hb = decodeHeartbeat(data)
  lastHbBytes = data
  lastHb = hb
  return hb
}

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

/** A frozen member list with its ids in rank order and each id's rank (see install). */
interface SharedMembers { members: Member[], ids: PeerId[], rank: Map<PeerId, number> }
const sharedLists = new WeakMap<readonly Member[], SharedMembers>()
function sharedMembers (list: Member[]): SharedMembers {
  let s = sharedLists.get(list)
  if (s === undefined) {
    const members = Object.freeze(list.map(m => Object.freeze({ id: m.id, zone: m.zone, host: m.host }))) as Member[]
    const ids = members.map(m => m.id)
    s = { members, ids, rank: new Map(ids.map((id, i) => [id, i])) }
    sharedLists.set(list, s)
    sharedLists.set(members, s)
  }
  return s
}

/** What a node knows about one peer. */
interface PeerState {
  readonly id: PeerId
  /** Its labels while connected; undefined while not. */
  conn: Member | undefined
  /** Its failure detector once watched (primed or heard from). */
  detector: PhiDetector | undefined
  /** The detector was started without a heartbeat (see prime); a real heartbeat replaces it. */
  primed: boolean
  /** Its newest heartbeat announced a graceful leave. */
  leaving: boolean
  /**
   * From its newest heartbeat (once `heard`): (incarnation, seq) (a restart starts a new,
   * later incarnation), its epoch, and whether it reported the view paused.
   */
  heard: boolean
  inc: number
  seq: number
  epoch: number
  reportsPaused: boolean
  /** Its index in the node's list of connected ids while connected; -1 while not. */
  connAt: number
}

/**
 * Whether a peer's record (never self's) says it is live at time t: heard from (or primed)
 * recently, connected, not leaving; before `graceUntil` nobody is suspected. (A module
 * function, not a closure per node: it runs for every member on every leader tick.)
 */
function liveAt (r: PeerState | undefined, t: number, graceUntil: number): boolean {
  if (r === undefined) return false
  const d = r.detector
  if (d === undefined || d.lastAt === undefined || r.conn === undefined || r.leaving) return false
  return t < graceUntil || !d.suspect(t)
}

function newPeerState (id: PeerId): PeerState {
  return { id, conn: undefined, detector: undefined, primed: false, leaving: false, heard: false, inc: 0, seq: 0, epoch: 0, reportsPaused: false, connAt: -1 }
}

/** Two sorted lists of distinct ids as one, in the order `[...a, ...b].sort()` would give. */
function mergeSorted (a: readonly PeerId[], b: readonly PeerId[]): PeerId[] {
  const out: PeerId[] = []
  let i = 0
  let j = 0
  while (i < a.length && j < b.length) out.push(a[i]! < b[j]! ? a[i++]! : b[j++]!)
  while (i < a.length) out.push(a[i++]!)
  while (j < b.length) out.push(b[j++]!)
  return out
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
  const codec: Codec = sharedCodec(maxMembers)
  const events = new Listeners<MembershipEvents>(err => log.error({ err }, 'membership listener failed'))
  const self = (): PeerId => net.self.id
  const selfMember = (): Member => ({ id: self(), zone: net.self.labels.zone, host: net.self.labels.host })

  let view: View | undefined
  let seq = 0
  let step = 0
  let startedAt = 0
  let timer: number | undefined
  // Local pause detection (Cassandra's habit): when this node's own tick comes late, its event
  // loop or VM was stalled, and the silence it sees from peers is its own. It judges nobody
  // until `graceUntil`, so a stalled node does not evict the healthy ones.
  let lastTickAt: number | undefined
  let graceUntil = -Infinity
  let running = false
  let paused = false
  let lastCommitResend = -Infinity
  let incarnation = 0
  // Everything this node knows about each peer, in one record per peer (see PeerState): a
  // heartbeat or a liveness check costs one lookup, and at 1000 nodes one cache miss instead
  // of one per map. Records are kept once made (like the (incarnation, seq) they hold).
  const peers = new Map<PeerId, PeerState>()
  // The record looked up last: a member hears from, checks and heartbeats to one peer (its
  // leader) several times per tick, so most lookups repeat the previous one.
  let lastId: PeerId | undefined
  let lastRecord: PeerState | undefined
  const record = (id: PeerId): PeerState | undefined => {
    if (id === lastId) return lastRecord
    const r = peers.get(id)
    if (r !== undefined) {
      lastId = id
      lastRecord = r
    }
    return r
  }
  const peerState = (id: PeerId): PeerState => {
    let r = record(id)
    if (r === undefined) peers.set(id, r = newPeerState(id))
    return r
  }
  // Connected peers (records with `conn` set), kept from connect/disconnect events, as a list
  // (a disconnect moves the last id into the gap): formation sorts or filters the connected
  // ids on every tick, and walking 1000 records of a map for them was its top cost.
  const connIds: PeerId[] = []
  let maxPeerEpoch = 0
  // [self, ...connected] sorted, and the ids connected since (merged in on the next use: while
  // 1000 nodes connect to each other, re-sorting everything at every tick was quadratic).
  let sortedIds: PeerId[] | undefined
  const unsorted: PeerId[] = []
  let leader: PeerId | undefined
  // Derived from the view when it is installed (per-tick code must not rescan N members or
  // look each one up): the member ids in rank order and their records (undefined for self).
  let inView = false
  let viewOrder: PeerId[] | undefined
  // (Made on first use: only a leader needs them.)
  let viewPeers: Array<PeerState | undefined> | undefined
  // Acceptor state for epoch (view?.epoch ?? 0) + 1.
  let acc: { epoch: number, promised?: Ballot, accepted?: { ballot: Ballot, view: View } } = { epoch: 1 }
  let proposal: Proposal | undefined
  let maxRound = 0
  let retryAt = 0
  let unsubs: Array<() => void> = []

  // (Time is read as clock.monotonic() in place: a helper closure per node is one more cold
  // object per call when a simulation runs 1000 nodes.)
  const nextEpoch = (): number => (view?.epoch ?? 0) + 1
  const connect = (id: PeerId, labels: { zone: string, host: string }): void => {
    if (id === self()) return
    const r = peerState(id)
    const c = r.conn
    if (c === undefined) {
      r.connAt = connIds.length
      connIds.push(id)
      if (sortedIds !== undefined) unsorted.push(id)
    } else if (c.zone === labels.zone && c.host === labels.host) {
      // (The same labels again, as a peer announced both ways: the record keeps its object.)
      return
    }
    r.conn = { id, zone: labels.zone, host: labels.host }
  }
  const disconnect = (id: PeerId): void => {
    const r = record(id)
    if (r?.conn === undefined) return
    r.conn = undefined
    const last = connIds.pop()!
    if (last !== id) {
      connIds[r.connAt] = last
      record(last)!.connAt = r.connAt
    }
    r.connAt = -1
    sortedIds = undefined
    unsorted.length = 0
  }
  const isConnected = (id: PeerId): boolean => record(id)?.conn !== undefined
  /** Connected peer ids, in no particular order (every caller sorts or counts); not to be changed. */
  const connectedIds = (): readonly PeerId[] => connIds

  /** Heard from (or primed) recently, connected, not leaving. Self is always live. */
  const isLive = (id: PeerId): boolean => id === self() || liveAt(record(id), clock.monotonic(), graceUntil)
  /** Live on the evidence of a real heartbeat (not only a primed detector). */
  const heardLive = (id: PeerId): boolean => isLive(id) && record(id)?.primed !== true
  const knownDead = (id: PeerId): boolean => {
    if (id === self()) return false
    const r = record(id)
    return r?.detector !== undefined && !liveAt(r, clock.monotonic(), graceUntil)
  }

  const labelsOf = (id: PeerId): Member | undefined => (id === self() ? selfMember() : record(id)?.conn)

  /** Starts watching `id` as if it had just sent a heartbeat: it has one detection period to show up. */
  const prime = (id: PeerId): void => {
    const d = new PhiDetector({ threshold, minStdMs, firstIntervalMs: heartbeatMs })
    d.heartbeat(clock.monotonic())
    const r = peerState(id)
    r.detector = d
    r.primed = true
  }

  /**
   * The ranking a node's leader comes from: the view's members when this node is one; every
   * connected node by id before any view exists; none for a node outside an existing view
   * (it gossips its heartbeats so the leader finds it).
   */
  const order = (): readonly PeerId[] | undefined => {
    if (view !== undefined) return viewOrder
    if (maxPeerEpoch > 0) return undefined
    if (sortedIds === undefined) {
      sortedIds = [self(), ...connIds].sort()
      unsorted.length = 0
    } else if (unsorted.length > 0) {
      sortedIds = mergeSorted(sortedIds, unsorted.sort())
      unsorted.length = 0
    }
    return sortedIds
  }

  /** The records of the view's members in rank order (undefined for self), made on first use. */
  const rankRecords = (v: View): Array<PeerState | undefined> => {
    const me = self()
    return (viewPeers ??= v.members.map(m => (m.id === me ? undefined : peerState(m.id))))
  }
  /**
   * The record of `ord[i]` (or undefined if there is none yet): past the first ranks of the
   * view's order it comes from rankRecords, since a node whose leader died scans every rank
   * above its own each tick, and a lookup per rank per node per tick adds up at 1000 nodes.
   */
  const recordAt = (ord: readonly PeerId[], i: number): PeerState | undefined =>
    (i >= 2 && ord === viewOrder && view !== undefined ? rankRecords(view)[i] : record(ord[i]!))

  const updateLeader = (): void => {
    const ord = order()
    if (ord === undefined) {
      leader = undefined
      return
    }
    const me = self()
    const prev = leader
    // The leader died: members below me that were quiet only because they were not leading
    // get another detection period, so I follow whoever takes over instead of jumping ahead.
    // (Indexed loops: this runs every tick on every node.)
    if (prev !== undefined && prev !== me && knownDead(prev)) {
      for (let i = 0; i < ord.length; i++) {
        const id = ord[i]!
        if (id === me) break
        const r = recordAt(ord, i)
        if (id !== prev && r !== undefined && r.primed && r.conn !== undefined) prime(id)
      }
    }
    let next = me
    for (let i = 0; i < ord.length; i++) {
      const id = ord[i]!
      if (id === me) break
      const r = recordAt(ord, i)
      if (r?.conn === undefined || r.leaving) continue
      if (r.detector === undefined) prime(id)
      if (liveAt(r, clock.monotonic(), graceUntil)) {
        next = id
        break
      }
    }
    if (next === me && prev !== me) {
      // Taking over: everyone after me gets a detection period to redirect its heartbeats.
      let after = false
      for (let i = 0; i < ord.length; i++) {
        const id = ord[i]!
        const r = recordAt(ord, i)
        if (after && r?.conn !== undefined) {
          const d = r.detector
          if (d === undefined || r.primed || d.suspect(clock.monotonic())) prime(id)
        }
        if (id === me) after = true
      }
    }
    leader = next
  }

  const transmit = (type: Parameters<Codec['encode']>[0] | 'hb', payload: unknown, to?: PeerId): Promise<void> => {
    const bytes = type === 'hb' ? encodeHeartbeat(payload as Heartbeat) : codec.encode(type, payload as never)
    return transmitBytes(type === 'hb' ? HB_TOPIC : VIEW_TOPIC, bytes, to)
  }
  const transmitBytes = (topic: string, bytes: Uint8Array, to: PeerId | undefined): Promise<void> =>
    (to === undefined ? net.publish(topic, bytes) : net.send(to, topic, bytes))
  const failed = (type: string): ((err: unknown) => void) => (err: unknown): void => { log.debug({ err: String(err), type }, 'membership send failed') }
  const hbSendFailed = failed('hb')
  /** Sends and waits for the network to take it; a failure is logged, never thrown. */
  const send = (type: Parameters<Codec['encode']>[0] | 'hb', payload: unknown, to?: PeerId): Promise<void> =>
    transmit(type, payload, to).catch(type === 'hb' ? hbSendFailed : failed(type))
  /**
   * Sends without waiting (heartbeats, Paxos messages). A promise the network handed back
   * before and that has fulfilled cannot fail: it needs no handler, so a network that answers
   * every send with one settled promise (SimNet) costs no promise per heartbeat.
   */
  const post = (type: Parameters<Codec['encode']>[0] | 'hb', payload: unknown, to?: PeerId): void => {
    forget(transmit(type, payload, to), type)
  }
  const forget = (p: Promise<void>, type: string): void => {
    if (p !== fulfilledSend) p.then(() => { fulfilledSend = p }, type === 'hb' ? hbSendFailed : failed(type))
  }

  const install = (v: View, why: string): void => {
    if (view !== undefined && v.epoch <= view.epoch) return
    // The member list is frozen and shared, not copied: in one process (a simulation, where
    // every node decodes one commit buffer) 1000 nodes installing a 1000-member view would
    // otherwise copy a million members, and derive ids and ranks a thousand times.
    const shared = sharedMembers(v.members)
    view = { epoch: v.epoch, members: shared.members }
    inView = shared.rank.has(self())
    viewOrder = inView ? shared.ids : undefined
    viewPeers = undefined
    acc = { epoch: view.epoch + 1 }
    if (proposal !== undefined && proposal.epoch <= view.epoch) proposal = undefined
    if (log.isLevelEnabled('info')) log.info({ epoch: view.epoch, members: view.members.map(m => m.id), why }, 'view installed')
    events.emit('view', view)
  }

  // --- acceptor -------------------------------------------------------------------------

  /** Am I an acceptor for `epoch`, given the genesis member list if any? */
  const eligible = (epoch: number, genesis?: Member[]): boolean => {
    if (epoch !== nextEpoch()) return false
    if (view === undefined) return epoch === 1 && genesis !== undefined && genesis.some(m => m.id === self())
    return inView
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
    events.emit('accepted', p.view)
    reply(from, 'accepted', { epoch: p.epoch, round: p.round, proposer: from })
  }

  /** Replies go straight to the proposer (gossiping them would cost N² deliveries per phase); to myself they are handled inline. */
  const reply = (to: PeerId, type: 'promise' | 'nack' | 'accepted', payload: Record<string, unknown>): void => {
    if (to === self()) {
      handleView(self(), { type, payload } as never)
      return
    }
    post(type, payload, to)
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
      startedAt: clock.monotonic()
    }
    log.debug({ epoch, round: maxRound, acceptors: [...ids] }, 'proposing a view')
    const payload = { epoch, round: maxRound, ...(genesis === undefined ? {} : { genesis }) }
    post('prepare', payload)
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
    post('accept', payload)
    if (pr.acceptors.has(self())) onAccept(self(), payload)
  }

  const onAccepted = (from: PeerId, p: { epoch: number, round: number, proposer: PeerId }): void => {
    const pr = proposal
    if (pr === undefined || pr.phase !== 'accept' || p.proposer !== self() || p.epoch !== pr.epoch || p.round !== pr.ballot.round || !pr.acceptors.has(from)) return
    pr.accepts.add(from)
    if (pr.accepts.size < pr.quorum || pr.value === undefined) return
    const chosen = pr.value
    proposal = undefined
    post('commit', { view: chosen })
    install(chosen, 'chosen by a quorum')
  }

  const onNack = (p: { epoch: number, round: number, proposer: PeerId, promisedRound: number }): void => {
    maxRound = Math.max(maxRound, p.promisedRound)
    const pr = proposal
    if (pr === undefined || p.proposer !== self() || p.epoch !== pr.epoch || p.round !== pr.ballot.round) return
    proposal = undefined
    // Back off a random fraction of a phase so duelling proposers stop colliding.
    retryAt = clock.monotonic() + rng.float() * phaseTimeoutMs
  }

  /** The view this node would like next: live members in rank order, then live joiners by id. */
  const desiredView = (epoch: number): View | undefined => {
    if (view === undefined) return undefined
    const members = view.members.filter(m => isLive(m.id))
    const known = new Set(view.members.map(m => m.id))
    const joiners = connectedIds().filter(id => !known.has(id) && heardLive(id)).sort()
    for (const id of joiners) {
      const m = labelsOf(id)
      if (m !== undefined && members.length < maxMembers) members.push(m)
    }
    return members.length === 0 ? undefined : { epoch, members }
  }

  // --- tick -----------------------------------------------------------------------------

  const tick = (): void => {
    if (!running) return
    try {
      evaluate()
    } catch (err) {
      log.error({ err: String(err) }, 'membership evaluation failed')
    }
    lastTickAt = clock.monotonic()
    seq += 1
    const bytes = encodeHeartbeatFields(incarnation, seq, view?.epoch ?? 0, step, clock.now(), false, paused)
    forget(transmitBytes(HB_TOPIC, bytes, leader === undefined || leader === self() ? undefined : leader), 'hb')
    timer = clock.setTimeout(tick, heartbeatMs)
  }

  const evaluate = (): void => {
    const t = clock.monotonic()
    // A tick overdue by more than a period means this node's loop was stalled (evaluate also
    // runs from a disconnect event, which can be the first thing to run after the stall).
    if (lastTickAt !== undefined && t - lastTickAt > 2 * heartbeatMs && graceUntil < t) {
      graceUntil = t + 2 * heartbeatMs
      log.warn({ lateMs: Math.round(t - lastTickAt - heartbeatMs) }, 'this node was stalled: suspecting nobody for two heartbeats')
    }
    updateLeader()
    if (proposal !== undefined && t - proposal.startedAt > phaseTimeoutMs) {
      log.debug({ epoch: proposal.epoch, round: proposal.ballot.round, phase: proposal.phase }, 'proposal timed out')
      proposal = undefined
      retryAt = t + rng.float() * heartbeatMs
    }
    if (view === undefined) {
      if (leader !== self() || maxPeerEpoch > 0 || t - startedAt < formationMs || proposal !== undefined || t < retryAt) return
      const group = [self(), ...connectedIds().filter(id => heardLive(id) && (record(id)?.epoch ?? 0) === 0)].sort()
      if (group.length >= expect) {
        const genesis = group.flatMap(id => labelsOf(id) ?? [])
        propose(1, genesis, genesis)
      }
      return
    }
    let nowPaused = false
    let liveCount = 0
    if (inView && leader === self()) {
      const recs = rankRecords(view)
      for (let i = 0; i < recs.length; i++) {
        const r = recs[i]
        if (r === undefined || liveAt(r, t, graceUntil)) liveCount++
      }
      nowPaused = liveCount < Math.floor(view.members.length / 2) + 1
    } else if (inView && leader !== undefined) {
      nowPaused = record(leader)?.reportsPaused === true
    }
    if (nowPaused !== paused) {
      paused = nowPaused
      log.info({ epoch: view.epoch, leader, of: view.members.length }, paused ? 'lost the majority of the view: pausing' : 'majority restored')
      events.emit('paused', paused)
    }
    if (!inView || (paused && init.unsafe?.ignoreMinority !== true)) return
    if (leader !== self() || proposal !== undefined || t < retryAt) return
    // Every member live and every connected peer a member: nothing to change (skips an O(N) pass).
    if (liveCount === view.members.length && connIds.length + 1 === view.members.length) return
    const want = desiredView(view.epoch + 1)
    if (want === undefined || sameMembers(want.members, view.members)) return
    propose(view.epoch + 1, view.members)
  }

  // --- receiving ------------------------------------------------------------------------

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

  const validateHb = (m: { from: PeerId, data: Uint8Array }): GossipVerdict => {
    let hb: Heartbeat
    try {
      hb = heartbeatOf(m.data)
    } catch {
      return 'reject'
    }
    // (incarnation, seq) at or below the last one seen is a replay or a stale copy.
    const r = record(m.from)
    return r === undefined || !r.heard || hb.inc > r.inc || (hb.inc === r.inc && hb.seq > r.seq) ? 'accept' : 'ignore'
  }

  const onHeartbeat = (m: { from: PeerId, data: Uint8Array }): void => {
    const p = heartbeatOf(m.data)
    const r = peerState(m.from)
    if (!(!r.heard || p.inc > r.inc || (p.inc === r.inc && p.seq > r.seq))) return
    // A new incarnation, or the first real heartbeat of one after priming, starts a fresh
    // detector (a primed peer stays primed through the first heartbeat of a new incarnation).
    if (!r.heard || r.inc !== p.inc) {
      r.detector = undefined
    } else if (r.primed) {
      r.primed = false
      r.detector = undefined
    }
    r.heard = true
    r.inc = p.inc
    r.seq = p.seq
    r.epoch = p.epoch
    r.reportsPaused = p.paused
    if (p.epoch > maxPeerEpoch) maxPeerEpoch = p.epoch
    r.leaving = p.leaving
    let d = r.detector
    if (d === undefined) r.detector = d = new PhiDetector({ threshold, minStdMs, firstIntervalMs: heartbeatMs })
    d.heartbeat(clock.monotonic())
    // Help a node that is behind: the leader re-sends the newest commit, at most once per
    // heartbeat (if every member did, N members would each gossip an N-member view to N nodes
    // per heartbeat while anyone lags).
    if (view !== undefined && p.epoch < view.epoch && leader === self() && clock.monotonic() - lastCommitResend >= heartbeatMs) {
      lastCommitResend = clock.monotonic()
      post('commit', { view })
    }
  }

  const validateView = (data: Uint8Array): GossipVerdict => {
    const env = decodeOr(data)
    if (typeof env === 'string') return env
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
      startedAt = clock.monotonic()
      incarnation = Math.max(1, Math.floor(clock.now()))
      if (init.restore !== undefined && view === undefined) {
        const r = structuredClone(init.restore)
        install(r.view, 'restored from a previous incarnation')
        if (r.acceptor.epoch === r.view.epoch + 1) acc = r.acceptor
        maxRound = Math.max(maxRound, r.maxRound)
      }
      unsubs = [
        net.subscribe(HB_TOPIC, { validate: validateHb, deliver: onHeartbeat }),
        net.subscribe(VIEW_TOPIC, { validate: m => validateView(m.data), deliver: m => handleView(m.from, decode(m.data)) }),
        net.on('peer:connect', info => connect(info.id, info.labels)),
        net.on('peer:disconnect', id => {
          disconnect(id)
          if (running) evaluate()
        })
      ]
      for (const p of net.peers()) connect(p.id, p.labels)
      timer = clock.setTimeout(tick, 0)
    },
    async stop () {
      if (!running) return
      seq += 1
      running = false
      await send('hb', { inc: incarnation, seq, epoch: view?.epoch ?? 0, step, sentAt: clock.now(), leaving: true, paused })
      if (timer !== undefined) clock.clearTimeout(timer)
      for (const u of unsubs) u()
    },
    view: () => view,
    status () {
      const t = clock.monotonic()
      const leading = leader === self()
      const members = (view?.members ?? []).map((m, rank) => {
        const r = record(m.id)
        const d = r?.detector
        const primed = r?.primed === true
        const monitored = m.id === self() || leading || (d !== undefined && !primed)
        return {
          ...m,
          rank,
          live: monitored ? isLive(m.id) : r?.conn !== undefined && !r.leaving,
          phi: m.id === self() || !monitored ? 0 : Number((d?.phi(t) ?? Infinity).toFixed(2)),
          lastHeartbeatAgeMs: m.id === self() ? 0 : (d?.lastAt === undefined || primed ? -1 : Math.round(t - d.lastAt)),
          monitored
        }
      })
      const known = new Set(members.map(m => m.id))
      let worst = heartbeatMs
      for (const r of peers.values()) if (r.detector !== undefined) worst = Math.max(worst, r.detector.silenceToSuspectMs())
      return {
        self: self(),
        epoch: view?.epoch ?? 0,
        members,
        paused,
        member: known.has(self()),
        joining: connectedIds().filter(id => !known.has(id) && heardLive(id)).sort(),
        leader,
        detectionBoundMs: Math.ceil(Math.max(worst, silenceFor(threshold, heartbeatMs, minStdMs)))
      }
    },
    on: (event, listener) => events.on(event, listener),
    setStep (s: number) { step = s },
    durableState () {
      if (view === undefined) return undefined
      return structuredClone({ view, acceptor: acc, maxRound })
    }
  }
}
