import type { PeerId } from '../peernet.ts'

/** A node as a view lists it: its id and the labels placement uses. */
export interface Member {
  id: PeerId
  zone: string
  host: string
  /** false: the node never takes a rank (it only holds snapshot fragments); absent: it may train. */
  trains?: false
}

/** A member from its id and labels (`trains` kept only when false, so views of nodes that all may train encode as before). */
export function memberOf(id: PeerId, labels: { zone: string; host: string; trains?: boolean }): Member {
  return labels.trains === false ? { id, zone: labels.zone, host: labels.host, trains: false } : { id, zone: labels.zone, host: labels.host }
}

/** Whether a member may take a rank (the roster and the spares are drawn from these). */
export function mayTrain(m: Member): boolean {
  return m.trains !== false
}

/** A view: its epoch and its members; a member's rank is its index. */
export interface View {
  epoch: number
  members: Member[]
  /**
   * The lineage of views this one belongs to: drawn by the proposer of the genesis view and
   * copied into every later view by the membership. Two launches of one run count epochs from
   * 1 each; the lineage tells their views apart (an acceptor record binds only in its own
   * lineage). Absent in views made outside the membership (rosters, tests).
   */
  lineage?: string
}

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
  unsafe?: { quorumOfOne?: boolean; ignoreMinority?: boolean }
  /** State from a previous incarnation (restart with state); see {@link MembershipDurableState}. */
  restore?: MembershipDurableState
  /**
   * Where the acceptor record is kept across restarts, written before every promise and
   * accept of an epoch after genesis (see {@link AcceptorRecord}). Without one, a node
   * restarted on the same identity could help choose a second view for an epoch.
   */
  acceptorStore?: AcceptorStore
}

/** One member of the current view as {@link Membership.status} reports it. */
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

/** What {@link Membership.status} returns: this node's view of the mesh right now. */
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

/** The events a {@link Membership} emits, by name. */
export interface MembershipEvents {
  view: View
  paused: boolean
  /** This node, as an acceptor, accepted `view` for its epoch (for safety checkers and logs). */
  accepted: View
}

/** A Paxos ballot: rounds are compared first, then proposer ids. */
export interface Ballot {
  round: number
  proposer: PeerId
}

/** A Paxos acceptor's state for one epoch: the highest ballot promised and the value accepted, if any. */
export interface AcceptorState {
  epoch: number
  promised?: Ballot
  accepted?: { ballot: Ballot; view: View }
}

/**
 * What a node must keep across a restart to stay a safe acceptor: its view and its Paxos
 * acceptor state (promised and accepted ballots). A node restarted with its view but without
 * the acceptor state could accept two different values for one epoch. Write it to stable
 * storage before answering a prepare or accept (the simulator models that write-through).
 */
export interface MembershipDurableState {
  view: View
  acceptor: AcceptorState
  maxRound: number
}

/**
 * What an acceptor must not forget while it keeps its identity: its Paxos state for the
 * epoch it last answered in (promised and accepted ballots) and the lineage of that epoch's
 * views. A node restarted on the same identity loads it and, until its views pass that epoch
 * in that lineage, answers nothing for an epoch below it and answers that epoch with the
 * restored state; it keeps its view only if `restore` gives one.
 */
export interface AcceptorRecord {
  /** Absent for views without a lineage (made outside the membership). */
  lineage?: string
  acceptor: AcceptorState
  maxRound: number
}

/** Keeps an {@link AcceptorRecord}; `save` returns once the record is durable (the membership answers only after). */
export interface AcceptorStore {
  load(): AcceptorRecord | undefined
  save(record: AcceptorRecord): void
}

/** The membership service of one node (see createMembership). */
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
