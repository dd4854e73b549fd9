/**
 * Checks `cond` every `everyMs` (default 100) until it returns a value other than undefined, and
 * resolves with it; rejects naming `what` after `ms`. Tests wait for a state this way, never
 * with a fixed sleep.
 */
export async function waitFor<T>(what: string, ms: number, cond: () => Promise<T | undefined> | T | undefined, everyMs = 100): Promise<T> {
  const deadline = performance.now() + ms
  for (;;) {
    const v = await cond()
    if (v !== undefined) return v
    if (performance.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}`)
    await new Promise(resolve => setTimeout(resolve, everyMs))
  }
}
