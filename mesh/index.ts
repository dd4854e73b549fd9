/**
 * mesh: PeerNet (the interface protocol code talks to), its implementations (libp2p with the
 * bulk channel, in memory), membership and views, and the collectives. Depends on core/ and codec/.
 */
export type {
  PeerId,
  PeerLabels,
  PeerInfo,
  GossipVerdict,
  GossipMessage,
  GossipHandler,
  ByteStream,
  StreamHandler,
  PeerNetEvents,
  PeerNet,
  Connectivity
} from './peernet.ts'
export { PeerGoneError, StreamResetError, ProtocolNotSupportedError, NotStartedError, AuthenticationError } from './errors.ts'
export { MESH_LIMITS } from './limits.ts'
export { capPerAddress } from './listen-caps.ts'
export { ByteQueue } from './byte-queue.ts'
export { createMemoryNetwork, type MemoryNetwork } from './memory-net.ts'
export { createLibp2pPeerNet, type Libp2pPeerNet, type Libp2pPeerNetInit } from './libp2p/net.ts'
export { loadOrCreateIdentity, IdentityError, IDENTITY_FILE } from './identity.ts'
export { deriveRunKeys, authProof, sealGossip, openGossip, gossipTopicName, MIN_SECRET_BYTES } from './libp2p/auth.ts'
export { writeMessage, MessageReader } from './lp.ts'
export { PhiDetector, phiOf, silenceFor, type PhiOptions } from './phi.ts'
export {
  createMembership,
  type Membership,
  type MembershipInit,
  type MembershipStatus,
  type MemberStatus,
  type MembershipEvents,
  type Member,
  type View,
  type MembershipComponents,
  type MembershipDurableState,
  type AcceptorRecord,
  type AcceptorStore,
  fileAcceptorStore,
  AcceptorRecordError,
  ACCEPTOR_RECORD_FILE,
  type Heartbeat,
  encodeHeartbeat,
  decodeHeartbeat,
  createMembershipShared,
  type MembershipShared,
  memberOf,
  mayTrain
} from './membership/index.ts'
export { freePort, simultaneousOpen, PunchFailedError, type PunchPlan } from './punch.ts'
export { startBulkChannel, bulkKey, bulkSessionId, BULK_IDLE_PER_SESSION, BULK_CLIENT_IDLE_MS, type BulkChannel } from './bulk.ts'
export { checkName, checkGossipSize, checkChunkSize, remember } from './checks.ts'
export { Listeners } from './listeners.ts'
export {
  createCollective,
  createZeroComm,
  createErrorFeedback,
  CollectiveError,
  COLLECTIVE_LIMITS,
  COLLECTIVE_DEFAULTS,
  linkTier,
  buildHierarchy,
  ringOrder,
  relayOf,
  F32_WIRE,
  BF16_WIRE,
  type Collective,
  type CollectiveInit,
  type CallOptions,
  type CollectiveResult,
  type CollectiveStats,
  type CollectiveFailure,
  type Scope,
  type OpOptions,
  type GatherOptions,
  type ReduceOptions,
  type HierReduceOptions,
  type HierGatherOptions,
  type IntoOption,
  type TierBytes,
  type ErrorFeedback,
  type ZeroComm,
  type ZeroOptions,
  type GatherPass,
  type Wire,
  type LinkTier,
  type TierKey,
  type Hierarchy
} from './collective/index.ts'
export type { CollectiveSent, EncodingName } from './collective/collective.ts'
