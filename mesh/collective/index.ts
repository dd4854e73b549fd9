/**
 * mesh/collective: ring all-gather / reduce-scatter / all-reduce, the hierarchical,
 * quantized ZeRO++ collectives (qwZ, hpZ, qgZ) and the tiered all-gather of small vectors
 * over PeerNet streams.
 */
export {
  createCollective,
  type Collective,
  type Scope,
  type Window,
  type OpOptions,
  type GatherOptions,
  type ReduceOptions,
  type HierReduceOptions,
  type HierGatherOptions,
  type IntoOption
} from './api.ts'
export type { CollectiveInit, CallOptions, CollectiveResult, CollectiveStats } from './collective.ts'
export { CollectiveError, type CollectiveFailure } from './errors.ts'
export { COLLECTIVE_LIMITS, COLLECTIVE_DEFAULTS } from './limits.ts'
export { MESSAGE_MAGIC, MESSAGE_VERSION, OP_KINDS, ENCODINGS, encodeMessage, decodeHeader, MessageParser, type MessageHeader, type Message } from './message.ts'
export type { TierBytes } from './op.ts'
export { BufferPool } from './pool.ts'
export { createErrorFeedback, type ErrorFeedback } from './hier.ts'
export { windowRange, linkTier, buildHierarchy, ringOrder, relayOf, type LinkTier, type TierKey, type Group, type Hierarchy } from './topology.ts'
export { type Wire, F32_WIRE, BF16_WIRE, roundTrip, chunkElementsOf } from './wire.ts'
export { createZeroComm, type ZeroComm, type ZeroOptions, type ZeroCallOptions, type GatherPass } from './zero.ts'
