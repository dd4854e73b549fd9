import { LimitExceededError } from './errors.ts'

/**
 * Throws {@link LimitExceededError} when `value` is above `cap`. Call it *before* allocating
 * anything sized by `value`: this is how every decoder and queue stays bounded.
 */
export function checkCap(limit: string, value: number, cap: number): void {
  if (!(value <= cap)) throw new LimitExceededError(limit, value, cap)
}

/**
 * Process-wide caps that no single layer owns. Layer-specific caps live in each folder's
 * `limits.ts`; all of them are listed in docs/LIMITS.md with the test that exceeds them.
 */
export const CORE_LIMITS = Object.freeze({
  /** Longest label accepted by {@link Rng.split} (bytes of UTF-8). */
  maxRngLabelBytes: 1024,
  /** Most timers a ManualClock holds at once. */
  maxManualTimers: 1_000_000
})
