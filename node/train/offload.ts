import { totalmem } from 'node:os'
import { CPU_LIMITS, CpuBackend, createHostOptimizer, type GptStream, type HostOptimizer, type Tensor } from '../../gpu/index.ts'
import { adamParams, lionParams, type SessionParts, type ShardTensors } from './step.ts'
import type { RunState, TrainerEnv } from './state.ts'
import { updateRule } from './config.ts'

/**
 * `--offload cpu` (ZeRO-Offload: Ren et al. 2021). A rank's shard (f32 master weights, its
 * gradient, the optimizer's moments) lives in host memory instead of on the device: tensors of
 * a CPU backend whose memory is shared with worker threads (SharedArrayBuffer), page-locked for
 * the device by registration (`Backend.hostRegister`). The device keeps only the model's
 * streamed buckets (two block slots, the embeddings, the final layernorm) and the
 * activations, so a model whose 16 bytes per parameter of training state do not fit the
 * device still trains. Each step:
 * - the forward and backward upload each bucket from the host master (a local rank; a ZeRO-3
 *   rank gathers from it as from its downloaded copy),
 * - each bucket's gradient is downloaded into the host gradient (or reduce-scattered into it),
 * - the optimizer runs on the threads (gpu/host-optim-threads.ts), slice by slice, with the
 *   CPU backend's own update rules: an offloaded CPU rank is bit-identical to one that is not.
 */
/** Caps of an offloaded shard's host tensors (docs/LIMITS.md). */
export const OFFLOAD_LIMITS = Object.freeze({
  /** One host tensor (a master, gradient or moment of a shard): 8 GiB, 2 G f32 elements. */
  maxTensorBytes: 8 * 2 ** 30
})

export interface Offload {
  /** The host backend the shard's tensors are allocated on. */
  be: CpuBackend
  optim: HostOptimizer
}

/** The trainer's offload parts (made once, kept across sessions), or undefined without `--offload`. */
export function offloadOf(env: TrainerEnv, rs: RunState): Offload | undefined {
  const o = env.cfg.offload
  if (o === undefined) return undefined
  // The host's memory is the cap of an offloaded shard, not the CPU backend's defaults for a
  // device of its own (2 GiB a tensor: a shard of 536 M parameters).
  const host = { maxTensorBytes: OFFLOAD_LIMITS.maxTensorBytes, maxTotalBytes: Math.max(CPU_LIMITS.maxTotalBytes, totalmem()) }
  rs.offload ??= { be: new CpuBackend({ shared: true, ...host }), optim: createHostOptimizer(o.threads === undefined ? {} : { threads: o.threads }) }
  return rs.offload
}

/** Stops the threads and frees the host backend (the trainer is done). */
export function endOffload(rs: RunState): void {
  if (rs.offload === undefined) return
  rs.offload.optim.stop()
  rs.offload.be.dispose()
  rs.offload = undefined
}

/** Makes the host master and gradient the device's copy source and destination. */
export function registerHost(p: SessionParts, master: Tensor, grad: Tensor): void {
  const h = p.host!
  p.be.hostRegister(h.be.storage(master))
  try {
    p.be.hostRegister(h.be.storage(grad))
  } catch (err) {
    p.be.freeHost(h.be.storage(master))
    throw err
  }
}

/** Undoes {@link registerHost} (nothing without offload). */
export function unregisterHost(p: SessionParts, master: Tensor, grad: Tensor): void {
  if (p.host === undefined) return
  p.be.freeHost(p.host.be.storage(master))
  p.be.freeHost(p.host.be.storage(grad))
}

/** A local offloaded rank's buckets: each uploaded from the host master into the model's slot. */
export function hostBuckets(p: SessionParts, master: Float32Array): GptStream {
  const { clock } = p.env.deps
  return {
    load: async (j: number, dst: Tensor) => {
      // As deviceBuckets: nothing else in such a pass waits for I/O.
      await clock.turn()
      const w = p.windows[j]!
      p.be.write(dst, master.subarray(w.at, w.at + w.n))
      return undefined
    }
  }
}

/** Step s's optimizer on the host shard: every segment at once, sliced over the threads. */
export async function hostOptimizerStep(p: SessionParts, t: ShardTensors, s: number): Promise<void> {
  const { be, optim } = p.host!
  const f32 = (x: Tensor): Float32Array => be.storage(x) as Float32Array
  const u8 = (x: Tensor): Uint8Array => be.storage(x) as Uint8Array
  const signal = p.signal
  const lion = updateRule(p.env.cfg.optimizer) === 'lion'
  // Every segment's slices settle before the step goes on or fails (none left writing).
  const done = await Promise.allSettled(
    t.segments.map(x => {
      if (lion) {
        const hp = lionParams(p, x.decay)
        if (x.s !== undefined) return optim.lion8bit(f32(x.p), f32(x.g), u8(x.m), f32(x.s), hp, signal)
        return optim.lion(f32(x.p), f32(x.g), f32(x.m), hp, signal)
      }
      const adam = adamParams(p, x.decay, s)
      if (x.s !== undefined) return optim.adamw8bit(f32(x.p), f32(x.g), u8(x.m), u8(x.v!), f32(x.s), adam, signal)
      return optim.adamw(f32(x.p), f32(x.g), f32(x.m), f32(x.v!), adam, signal)
    })
  )
  const failed = done.find(d => d.status === 'rejected')
  if (failed !== undefined) throw (failed as PromiseRejectedResult).reason
}
