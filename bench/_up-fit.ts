// What the `zeromesh up` benchmarks (train, mesh-gpu) read from a run's status polls.
import type { UpPoll } from '../cli/index.ts'

/**
 * Committed steps per second: least squares of step against time over the polls with
 * `from <= step < to` (the steady state: past the warm-up, before the final evaluation).
 * Throws naming `knob` when fewer than 3 polls fall in that range.
 */
export function stepsPerSecond(polls: readonly UpPoll[], from: number, to: number, knob: string): { rate: number; from: number; to: number; polls: number } {
  const ss = polls.filter(p => p.step >= from && p.step < to)
  if (ss.length < 3) throw new Error(`too few steady-state polls (${ss.length}): raise ${knob}`)
  const n = ss.length
  const mx = ss.reduce((a, p) => a + p.ms, 0) / n
  const my = ss.reduce((a, p) => a + p.step, 0) / n
  let sxy = 0
  let sxx = 0
  for (const p of ss) {
    sxy += (p.ms - mx) * (p.step - my)
    sxx += (p.ms - mx) ** 2
  }
  return { rate: (sxy / sxx) * 1000, from: ss[0]!.step, to: ss.at(-1)!.step, polls: n }
}
