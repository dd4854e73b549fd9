/**
 * mesh: PeerNet (the interface protocol code talks to), its implementations, and (with the
 * membership issue) views and collectives. Depends on core/ and codec/.
 */
export type {
  PeerId, PeerLabels, PeerInfo, GossipVerdict, GossipMessage, GossipHandler, ByteStream, StreamHandler,
  PeerNetEvents, PeerNet
} from './peernet.ts'
export { PeerGoneError, StreamResetError, ProtocolNotSupportedError, NotStartedError, AuthenticationError } from './errors.ts'
export { MESH_LIMITS } from './limits.ts'
export { ByteQueue } from './byte-queue.ts'
export { createMemoryNetwork, type MemoryNetwork } from './memory-net.ts'
