import type { ShardState } from './config.ts'
import { growCheck, growMessage } from './messages.ts'
import type { Growth } from './roster.ts'
import { shardBe, type SessionParts, type ShardTensors } from './step.ts'

/** Ranks tell spares the run grows: u32 view epoch, u32 ranks added, u32 step (little-endian). */
export const GROW_TOPIC = 'train/grow'

/**
 * After step s commits (not the last), this rank's growth proposal: the newest view's joiners.
 * The run grows only when every rank names the same view (views reach ranks at different
 * times; they agree at some later step boundary).
 */
export function growProposal(p: SessionParts): Uint32Array {
  const { env, rs, roster } = p
  return growCheck.encode(rs.views.growCandidate(roster, env.cfg.maxWorldSize ?? env.cfg.worldSize, env.deps.membership.view()))
}

/**
 * Every rank's proposals (the `grow_check` all-gather): on agreement, this rank keeps its
 * state for the new ranks and its announcement for the spares, and returns the growth.
 */
export function agreedGrowth(p: SessionParts, t: ShardTensors, all: Uint32Array, s: number): { growth: Growth; msg: Uint8Array } | undefined {
  const proposals = growCheck.decode(all, p.roster.length)
  const first = proposals[0]!
  if (!(first.epoch > 0 && proposals.every(x => x.epoch === first.epoch && x.count === first.count))) return undefined
  // read() returns a fresh host copy: the handoff outlives the session's tensors.
  const be = shardBe(p)
  const read = (x: typeof t.master): Float32Array => be.read(x) as Float32Array
  const empty = new Float32Array(0)
  const state: ShardState =
    t.scales === undefined
      ? { step: s + 1, master: read(t.master), m: read(t.m), v: t.v === undefined ? empty : read(t.v) }
      : {
          step: s + 1,
          master: read(t.master),
          m: empty,
          v: empty,
          adam8: { m: be.read(t.m) as Uint8Array, v: t.v === undefined ? new Uint8Array(0) : (be.read(t.v) as Uint8Array), scales: read(t.scales) }
        }
  p.rs.grow.handoff = { rank: p.rank, state }
  const growth = { epoch: first.epoch, count: first.count, step: s + 1 }
  const msg = growMessage.encode(growth)
  p.rs.grow.msg = msg
  return { growth, msg }
}
