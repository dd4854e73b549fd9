// Shared benchmark plumbing: timing by repetition with a median of runs, and one JSON object
// per line on stdout. Figures are only comparable to a baseline measured in the same run.

/** Runs `fn` repeatedly for about `seconds`, `runs` times; returns the median seconds per call. */
export function timeIt(fn: () => void, opts: { seconds?: number; runs?: number } = {}): number {
  const budget = (opts.seconds ?? Number(process.env['BENCH_SECONDS'] ?? 0.4)) * 1000
  const runs = opts.runs ?? 5
  fn() // warm-up (JIT, caches, lazy allocation)
  let iters = 1
  for (;;) {
    const t0 = performance.now()
    for (let i = 0; i < iters; i++) fn()
    const dt = performance.now() - t0
    if (dt >= budget / runs / 4 || iters >= 1 << 24) break
    iters *= 2
  }
  const samples: number[] = []
  for (let r = 0; r < runs; r++) {
    const t0 = performance.now()
    for (let i = 0; i < iters; i++) fn()
    samples.push((performance.now() - t0) / 1000 / iters)
  }
  samples.sort((a, b) => a - b)
  return samples[Math.floor(samples.length / 2)]!
}

export interface Result {
  bench: string
  impl: string
  bytes: number
  seconds: number
  [k: string]: unknown
}

/** Prints one result line with GB/s (10^9 bytes/s) and, when given, the ratio to a baseline. */
export function report(r: Result, baseline?: { impl: string; seconds: number }): void {
  const line: Record<string, unknown> = { ...r, gbps: round(r.bytes / r.seconds / 1e9) }
  line['seconds'] = Number(r.seconds.toPrecision(4))
  if (baseline !== undefined) {
    line['baseline'] = baseline.impl
    line['ratio'] = round(baseline.seconds / r.seconds)
  }
  process.stdout.write(JSON.stringify(line) + '\n')
}

function round(x: number): number {
  return Number(x.toPrecision(4))
}

/** Deterministic filler (benchmarks need no randomness quality, only non-trivial bytes). */
export function filled(n: number, seed = 1): Uint8Array {
  const out = new Uint8Array(n)
  let x = seed >>> 0 || 1
  for (let i = 0; i < n; i++) {
    x ^= x << 13
    x ^= x >>> 17
    x ^= x << 5
    out[i] = x
  }
  return out
}

/** A number from the environment (`dflt` when unset or empty); anything not a finite number >= 0 is an error naming the variable. */
export function envNumber(name: string, dflt: number): number {
  const v = process.env[name]
  if (v === undefined || v === '') return dflt
  const n = Number(v)
  if (!Number.isFinite(n) || n < 0) throw new Error(`${name} must be a number >= 0, got '${v}'`)
  return n
}
