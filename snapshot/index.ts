/**
 * snapshot: erasure-coded in-memory snapshots of every rank's state on its peers. Capture
 * (double-buffered, asynchronous), stripe and place (k data + m parity fragments on k + m
 * distinct peers, hosts then zones spread), hold (a capped FragmentStore per node), recover
 * (any k valid fragments in parallel, swarm-style, from every holder), re-stripe after a view
 * change, a disk tier, and safetensors export. Depends on core/, codec/ and mesh/.
 */
export { SNAPSHOT_LIMITS, SAFETENSORS_LIMITS, CHECKPOINT_LIMITS, type SnapshotLimits } from './limits.ts'
export {
  SnapshotErrorCode,
  type SnapshotErrorCodeT,
  PlacementError,
  PlacementFailedError,
  StoreFullError,
  UnrecoverableError,
  NoSnapshotError,
  TransferTimeoutError,
  SnapshotCoderError
} from './errors.ts'
export {
  type RankState,
  type OuterArrays,
  type Adam8Arrays,
  type StateHeader,
  STATE_MAGIC,
  STATE_VERSION,
  STATE_HEADER_BYTES,
  RUN_IDENTITY_BYTES,
  RUN_NONCE_BYTES,
  sameLaunch,
  launchName,
  stateBytes,
  writeState,
  sealState,
  encodeState,
  readStateHeader,
  verifyState,
  decodeState
} from './state.ts'
export { copyState, type CopyStateOptions } from './state-copy.ts'
export { validateStripeParams, placeStripe, type PlacementScope } from './placement.ts'
export {
  type FragmentLabel,
  type SnapshotFragment,
  type StripeInit,
  type AssembleReport,
  type StripeSpec,
  type OnSegment,
  stripeLabels,
  codeSegment,
  LABEL_MAGIC,
  LABEL_VERSION,
  encodeLabel,
  decodeLabel,
  stripeState,
  stripeStateAsync,
  assembleState,
  assembleStateAsync,
  PAUSE_EVERY_BYTES,
  fragmentDigest,
  verifyFragment,
  segmentSizes
} from './fragment.ts'
export { type Manifest, MANIFEST_TOPIC, encodeManifest, decodeManifest } from './manifest.ts'
export {
  type FragmentStore,
  type FragmentStoreInit,
  type HeldFragment,
  type RecoveryPoint,
  type Reservation,
  type StoreStats,
  createFragmentStore
} from './store.ts'
export { type SnapshotCoder, type InlineCoderDeps, createInlineCoder } from './coder.ts'
export { type ThreadCoderInit, createThreadCoder, defaultCoderThreads } from './coder-threads.ts'
export { type Capturer, type CaptureOptions, type CaptureTicket, type CaptureOutcome, type CapturePacing, createCapturer } from './capture.ts'
export { PUT_PROTOCOL, FETCH_PROTOCOL } from './wire.ts'
export { type SnapshotService, type SnapshotServiceInit, type SnapshotDeps, createSnapshotService } from './service.ts'
export type { PlaceResult } from './placer.ts'
export type { RecoverRequest, Recovered, RecoveryReport } from './recovery.ts'
export { STATE_FILE, persistState, loadState, writeFileDurable } from './disk.ts'
export {
  type CheckpointInfo,
  CheckpointError,
  HF_WEIGHTS_FILE,
  HF_CONFIG_FILE,
  readCheckpointInfo,
  loadGptCheckpoint,
  writeHfCheckpoint
} from './checkpoint.ts'
export {
  type TensorLayout,
  type SafetensorsReader,
  type SafetensorsTensor,
  MAX_SAFETENSORS_HEADER_BYTES,
  SafetensorsError,
  encodeSafetensors,
  exportSafetensors,
  openSafetensors,
  f16ToF32
} from './safetensors.ts'
