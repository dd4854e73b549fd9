import type { ShardState } from './config.ts'
import { growCheck, growMessage } from './messages.ts'
import type { Growth } from './roster.ts'
import { callAt, type SessionParts, type ShardTensors } from './step.ts'

/** Ranks tell spares the run grows: u32 view epoch, u32 ranks added, u32 step (little-endian). */
export const GROW_TOPIC = 'train/grow'

/**
 * After step s commits (not the last): every rank proposes the newest view's joiners, and the
 * run grows only when every rank names the same view (views reach ranks at different times;
 * they agree at some later step boundary). On agreement this rank keeps its state for the
 * new ranks, tells the spares, and returns the growth; the session then ends.
 */
export async function agreeGrowth (p: SessionParts, t: ShardTensors, s: number): Promise<Growth | undefined> {
  const { env, rs, roster, P } = p
  const max = env.cfg.maxWorldSize ?? env.cfg.worldSize
  const cand = rs.views.growCandidate(roster, max, env.deps.membership.view())
  const all = (await p.collective.allGather(growCheck.encode(cand), 2 * P, { ...callAt(p, s + 1), label: growCheck.label }).catch(p.fail)).data
  const proposals = growCheck.decode(all, P)
  const first = proposals[0]!
  const agreed = first.epoch > 0 && proposals.every(x => x.epoch === first.epoch && x.count === first.count)
  if (!agreed) return undefined
  const read = (x: typeof t.master): Float32Array => (p.opt.read(x) as Float32Array).slice()
  const state: ShardState = { step: s + 1, master: read(t.master), m: read(t.m), v: read(t.v) }
  rs.grow.handoff = { rank: p.rank, state }
  const growth = { epoch: first.epoch, count: first.count, step: s + 1 }
  const msg = growMessage.encode(growth)
  rs.grow.msg = msg
  await env.deps.net.publish(GROW_TOPIC, msg).catch(() => {})
  return growth
}
