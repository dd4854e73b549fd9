/**
 * Membership: heartbeats, failure detection, leaders and Paxos-chosen views (see
 * membership.ts for the protocol; each part is a file of its own).
 */
export { createMembership, type MembershipComponents } from './membership.ts'
export { createMembershipShared, type MembershipShared } from './shared.ts'
export { encodeHeartbeat, decodeHeartbeat, HeartbeatCodec, HB_BYTES, type Heartbeat } from './heartbeat-codec.ts'
export { createViewCodec, HB_TOPIC, VIEW_TOPIC, type ViewCodec, type ViewEnvelope } from './view-codec.ts'
export { memberOf, mayTrain } from './types.ts'
export { fileAcceptorStore, AcceptorRecordError, ACCEPTOR_RECORD_FILE, ACCEPTOR_RECORD_MAX_BYTES } from './acceptor-file.ts'
export type {
  Membership,
  MembershipInit,
  MembershipStatus,
  MemberStatus,
  MembershipEvents,
  Member,
  View,
  MembershipDurableState,
  AcceptorRecord,
  AcceptorStore,
  AcceptorState,
  Ballot
} from './types.ts'
