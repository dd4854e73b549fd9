import { shardRange } from '../../core/index.ts'
import type { Backend, HostArray } from '../../gpu/index.ts'
import { codedMoments, keepsV } from './config.ts'
import { adam8Runs } from './adam8.ts'
import type { TrainerEnv } from './state.ts'

/**
 * The host arrays a session's saves copy the optimizer state into (persist.ts), by role: f32
 * master and moments, or the 8-bit optimizers' u8 codes of m (and v) and their f32 block absmaxes.
 */
export type HostRole = 'save.master' | 'save.m' | 'save.v' | U8Role | 'save.scales'
/** The roles of u8 arrays (the 8-bit optimizers' codes). */
type U8Role = 'save.m8' | 'save.v8'
/** A role's host array: u8 for the codes, f32 for the rest. */
export type HostArrayOf<R extends HostRole> = R extends U8Role ? Uint8Array : Float32Array

const dtypeOf = (role: HostRole): 'u8' | 'f32' => (role === 'save.m8' || role === 'save.v8' ? 'u8' : 'f32')

/** Where a session takes its host arrays from and gives them back to. */
export interface HostSpace {
  /** An array of `n` elements for `role` (the device copies into it: page-locked on CUDA). */
  take<R extends HostRole>(role: R, n: number): HostArrayOf<R>
  /** Gives back an array from {@link take} (freed unless it is reserved). */
  give(role: HostRole, a: HostArray): void
}

/**
 * Page-locked host arrays allocated once, before the node joins the mesh, and kept for every
 * session. `cuMemHostAlloc` of a shard's 500 MB arrays holds the thread for a long time (the
 * pages are pinned one by one, then zeroed): allocated at a session's first save, they held a
 * GPU rank's event loop, and the heartbeats it sends, long enough for its peers to take it for
 * dead. A session whose shard is larger than the reserve (a world smaller than planned) takes
 * that role's arrays from the backend as before. (The wire's landing spaces, step.ts, are
 * still allocated per session, before its first step: a late write of an aborted session's
 * transfer must never land in the next session's arrays.)
 */
export interface HostReserve {
  readonly be: Backend
  readonly arrays: Map<HostRole, HostArray>
}

/** The elements each role needs for the largest shard this node may train (its collective group is the world, or a zone group). */
export function reservePlan(env: TrainerEnv): Map<HostRole, number> {
  const { cfg } = env
  const plan = new Map<HostRole, number>()
  // Nothing is saved without snapshots or a disk tier. An offloaded state's saves copy it from
  // the host backend into that backend's own arrays (page-locking them would buy nothing).
  if (cfg.snapshot === undefined && !(cfg.disk !== undefined && cfg.disk.every > 0)) return plan
  if (cfg.offload !== undefined) return plan
  const N = env.layout.length
  const group = cfg.outer === undefined ? cfg.worldSize : cfg.worldSize / cfg.outer.zones
  const shard = shardRange(N, group, 0).length
  plan.set('save.master', shard)
  const k8 = codedMoments(cfg)
  if (k8 > 0) {
    plan.set('save.m8', shard)
    if (k8 === 2) plan.set('save.v8', shard)
    // Block counts differ between ranks by where their shards cut the decay segments.
    const blocks = Array.from({ length: group }, (_, r) => adam8Runs(env.layout, shardRange(N, group, r)).blocks)
    plan.set('save.scales', k8 * Math.max(...blocks))
    return plan
  }
  // A zeroth-order state is the weights alone.
  if (cfg.zo === undefined) plan.set('save.m', shard)
  if (keepsV(cfg)) plan.set('save.v', shard)
  return plan
}

/** Allocates the reserve of `plan` on `be`, one array per turn of the event loop. */
export async function reserveHost(be: Backend, plan: Map<HostRole, number>, turn: () => Promise<void>): Promise<HostReserve> {
  const arrays = new Map<HostRole, HostArray>()
  try {
    for (const [role, n] of plan) {
      arrays.set(role, be.hostAlloc(dtypeOf(role), n))
      await turn()
    }
  } catch (err) {
    for (const a of arrays.values()) be.freeHost(a)
    throw err
  }
  return { be, arrays }
}

/** Frees a reserve's arrays (the trainer is done). */
export function releaseHost(r: HostReserve): void {
  for (const a of r.arrays.values()) r.be.freeHost(a)
  r.arrays.clear()
}

/** A session's host space on `be`: the reserve's arrays (a view of `n` elements) where they are large enough, else the backend's. */
export function hostSpace(be: Backend, reserve: HostReserve | undefined): HostSpace {
  const usable = reserve !== undefined && reserve.be === be ? reserve.arrays : undefined
  return {
    take<R extends HostRole>(role: R, n: number): HostArrayOf<R> {
      const r = usable?.get(role)
      return (r !== undefined && r.length >= n ? r.subarray(0, n) : be.hostAlloc(dtypeOf(role), n)) as HostArrayOf<R>
    },
    give(role, a) {
      if (usable?.get(role)?.buffer === a.buffer) return
      be.freeHost(a)
    }
  }
}
