import { batchFor, type Batch } from '../data.ts'
import { callAt, shardBuckets, type SessionParts, type ShardTensors } from './step.ts'
import type { GptStream } from '../../gpu/index.ts'
import { streamBuckets } from './streamer.ts'

/**
 * The final evaluation: a fixed held-out batch, and the final weights (f32, whatever the
 * training wire) gathered bucket by bucket from every rank's master shard (`final`, on the
 * host); a local rank copies them from its shard on the device.
 */
export function finalEvaluation(p: SessionParts, t: ShardTensors, final: Float32Array): { batch: Batch; stream: GptStream } {
  const { cfg, deps } = p.env
  const { windows, collective } = p
  const held = deps.corpus.val.length > cfg.T + 1 ? deps.corpus.val : deps.corpus.train
  const batch = batchFor(held, cfg.seed, 0, 0, cfg.B, cfg.T)
  p.rs.st.phase = 'evaluating the final weights'
  if (p.local) return { batch, stream: shardBuckets(p, t) }
  const stream = streamBuckets(
    p.forwardOrder,
    j =>
      collective.allGather(final.subarray(windows[j]!.at, windows[j]!.at + windows[j]!.n), windows[j]!.length, {
        window: windows[j]!.window,
        ...callAt(p, cfg.steps),
        label: 'final_gather'
      }),
    p.acct,
    p.be
  )
  return { batch, stream }
}
