import type { TrainConfig, TrainStatus, TrainerDeps } from './config.ts'
import { Trainer } from './trainer.ts'

/**
 * What a driver (the simulator, `zeromesh start`) holds of a node's training: run it to the
 * end, read its status while it runs, and read the final weights of its shard afterwards.
 */
export interface TrainingWorkload {
  run(signal?: AbortSignal): Promise<TrainStatus>
  status(): TrainStatus
  /** This rank's master weights after the last step (undefined on spares and before the end). */
  readonly finalShard: { start: number; data: Float32Array } | undefined
}

/** The training workload of one node: a {@link Trainer} behind the {@link TrainingWorkload} seam. */
export function createTrainingWorkload(deps: TrainerDeps, cfg: TrainConfig): TrainingWorkload {
  return new Trainer(deps, cfg)
}
