/**
 * node: the worker, what runs one zeromesh node: the trainer, its data and disk tier, and the
 * composition `zeromesh start` runs (node/start.ts: mesh, membership, control socket, metrics
 * server, trainer), with the node's option spec and the events it reports. Depends on core/,
 * codec/, gpu/, mesh/ and snapshot/.
 */
export { option, shapeOf, type OptionSpec, type OptionsSpec } from './options.ts'
export { START_OPTIONS, startSchema, ConfigError, defaultDataDir, type StartConfig } from './config.ts'
export { NODE_EVENT_LIMITS, encodeNodeEvent, parseNodeEvent, type NodeEvent } from './events.ts'
export { startNode, type RunningNode, type NodeStatus, type EmitEvent } from './start.ts'
export { ControlError, fetchStatus } from './control.ts'
export { loadCorpus } from './data.ts'
export { diskDir, diskSteps, loadDiskState } from './disk-tier.ts'
export { TRAIN_MODELS, trainingModel, formatParamMemory, type TrainModelName } from './trainer.ts'
