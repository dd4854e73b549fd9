/**
 * node: the worker, what runs one zeromesh node: the trainer (node/train/), its data and disk
 * tier, and the composition `zeromesh start` runs (node/start.ts: mesh, membership, control
 * socket, metrics server, trainer), with the node's option spec and the events it reports.
 * Depends on core/, codec/, gpu/, mesh/ and snapshot/; other folders import node/ only from here.
 */
export { option, shapeOf, type OptionSpec, type OptionsSpec } from './options.ts'
export { START_OPTIONS, startSchema, ConfigError, defaultDataDir, type StartConfig } from './config.ts'
export { NODE_EVENT_LIMITS, encodeNodeEvent, parseNodeEvent, type NodeEvent } from './events.ts'
export { startNode, type RunningNode, type NodeStatus, type EmitEvent } from './start.ts'
export { ControlError, fetchStatus } from './control.ts'
export { Trainer } from './train/trainer.ts'
export { createTrainingWorkload, type TrainingWorkload } from './train/workload.ts'
export {
  TrainingError,
  TRAIN_MODELS,
  trainingModel,
  runModelConfig,
  formatParamMemory,
  formatStepPhases,
  validateTrainConfig,
  decaySegments,
  type TrainConfig,
  type TrainStatus,
  type TrainerDeps,
  type ParamMemory,
  type StepPhases,
  type TrainModelName,
  type Segment,
  OPTIMIZERS,
  codedMoments,
  defaultLr,
  type Optimizer
} from './train/config.ts'
export { TRAIN_LIMITS } from './train/limits.ts'
export { TrainMessageError } from './train/messages.ts'
export { OUTER_DEFAULTS, exchange as outerExchange, freshOuter, outerQuant, outerSchedule, sendsAt, type OuterConfig } from './train/outer.ts'
export { DataError, DATA_LIMITS, loadCorpus, checkDataFile, corpusVocabSize, batchFor, untag, type Corpus, type Batch } from './data.ts'
export { TOKENIZERS, TOKENIZER_LIMITS, createTokenizer, type Tokenizer, type TokenizerName } from './tokenizer.ts'
export { DISK_DIR, DISK_KEEP, diskDir, diskFile, diskSteps, persistDiskState, loadDiskState, sameRun } from './disk-tier.ts'
