/**
 * node: the worker. What runs a node: the trainer (node/train/), its data and disk tier.
 * Other folders import node/ only from here.
 */
export { Trainer } from './train/trainer.ts'
export { createTrainingWorkload, type TrainingWorkload } from './train/workload.ts'
export {
  TrainingError, TRAIN_MODELS, trainingModel, formatParamMemory, validateTrainConfig, decaySegments,
  type TrainConfig, type TrainStatus, type TrainerDeps, type ParamMemory, type TrainModelName, type Segment
} from './train/config.ts'
export { TRAIN_LIMITS } from './train/limits.ts'
export { TrainMessageError } from './train/messages.ts'
export { DataError, DATA_LIMITS, loadCorpus, batchFor, untag, type Corpus, type Batch } from './data.ts'
export { DISK_DIR, DISK_KEEP, diskDir, diskSteps, persistDiskState, loadDiskState } from './disk-tier.ts'
