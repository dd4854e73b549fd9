import test from 'ava'
import { randomMembershipRun, type RandomRunOptions } from '../../sim/index.ts'

/**
 * Seeded random-fault runs of the real membership code on SimNet: crashes, restarts, pauses
 * and partitions over 16 nodes, then a heal. Every run must be safe (no two views with one
 * epoch) and live (one view with everyone after healing). `ZEROMESH_SIM_SEED=<n>` replays one
 * seed; `ZEROMESH_SIM_RUNS=<n>` lengthens the sweep.
 */
export function randomRuns(file: string, first: number, count: number): void {
  const opts: RandomRunOptions = { nodes: 16, faults: 8 }
  const only = process.env['ZEROMESH_SIM_SEED']
  const runs = Number(process.env['ZEROMESH_SIM_RUNS'] ?? count)
  const seeds = only !== undefined ? [Number(only)] : Array.from({ length: runs }, (_, i) => first + i)
  test(`${seeds.length} seeded random-fault runs over 16 nodes are safe and heal to one view (seeds ${seeds[0]}..${seeds.at(-1)})`, async t => {
    let epochs = 0
    let slowest = 0
    for (const seed of seeds) {
      const r = await randomMembershipRun(seed, opts)
      const replay = `replay: ZEROMESH_SIM_SEED=${seed} npx ava ${file}`
      if (r.violations.length > 0 || r.convergedMs === undefined) {
        t.log(`faults: ${r.faults.join('; ')}`)
        t.deepEqual(r.violations, [], `safety, seed ${seed}; ${replay}`)
        t.not(r.convergedMs, undefined, `liveness, seed ${seed}; ${replay}`)
        return
      }
      epochs += r.maxEpoch
      slowest = Math.max(slowest, r.convergedMs)
    }
    t.log(`${seeds.length} runs, ${epochs} views installed in all, slowest convergence after healing ${slowest} simulated ms`)
    t.pass()
  })
}
