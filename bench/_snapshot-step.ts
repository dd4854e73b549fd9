import type { RankState, SnapshotService } from '../snapshot/index.ts'

/**
 * The snapshot step-overhead loop both snapshot benches use: a CPU loop updating `n` f32
 * parameters with AdamW-like arithmetic, a macrotask hop between steps (where a real trainer
 * awaits its collectives), and `svc.capture()` every `every` steps (0: never). Returns seconds
 * per step, after the last placement has settled.
 */
export function stepLoop(svc: SnapshotService, st: RankState, steps: number): (every: number) => Promise<number> {
  const n = st.weights.length
  const g = new Float32Array(n).fill(0.001)
  const step = (): void => {
    const w = st.weights
    const mm = st.adamM
    const vv = st.adamV
    for (let i = 0; i < n; i++) {
      const gi = g[i]!
      mm[i] = 0.9 * mm[i]! + 0.1 * gi
      vv[i] = 0.999 * vv[i]! + 0.001 * gi * gi
      w[i] = w[i]! - 1e-3 * (mm[i]! / (Math.sqrt(vv[i]!) + 1e-8) + 0.01 * w[i]!)
    }
    st.step++
  }
  return async every => {
    const t0 = performance.now()
    for (let s = 0; s < steps; s++) {
      step()
      if (every > 0 && st.step % every === 0) svc.capture(st)
      await new Promise(resolve => setImmediate(resolve))
    }
    await svc.idle()
    return (performance.now() - t0) / 1000 / steps
  }
}
