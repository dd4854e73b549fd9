import { batchFor } from '../data.ts'
import { callAt, type SessionParts } from './step.ts'
import { streamBuckets } from './streamer.ts'

/**
 * The loss of the final weights (f32, whatever the training wire) on a fixed held-out batch,
 * gathered bucket by bucket from every rank's master shard.
 */
export async function evaluateFinal (p: SessionParts, final: Float32Array): Promise<number> {
  const { cfg, deps } = p.env
  const { windows, collective } = p
  const held = deps.corpus.val.length > cfg.T + 1 ? deps.corpus.val : deps.corpus.train
  const evalBatch = batchFor(held, cfg.seed, 0, 0, cfg.B, cfg.T)
  p.rs.st.phase = 'evaluating the final weights'
  const fin = streamBuckets(p.forwardOrder, j => collective.allGather(final.subarray(windows[j]!.at, windows[j]!.at + windows[j]!.n), windows[j]!.length, { window: windows[j]!.window, ...callAt(p, cfg.steps), label: 'final_gather' }), p.acct)
  return await p.model.forwardStreamed(evalBatch.inputs, evalBatch.targets, fin).catch(p.fail)
}
