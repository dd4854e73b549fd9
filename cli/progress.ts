/** `[#######.............]`: `f` (0..1) of `width` cells filled. */
export function barOf(f: number, width = 30): string {
  const filled = Math.round(Math.min(1, Math.max(0, f)) * width)
  return `[${'#'.repeat(filled)}${'.'.repeat(width - filled)}]`
}

/** A one-line progress bar (over simulated time, or steps) on a terminal; plain percentages elsewhere. */
export function progressBar(stream: NodeJS.WriteStream, what = 'of simulated time'): { update: (f: number) => void; done: () => void } {
  let last = -1
  return {
    update(f: number) {
      const pct = Math.floor(f * 100)
      if (pct === last) return
      if (stream.isTTY) {
        stream.write(`\r${barOf(f)} ${String(pct).padStart(3)}% ${what}`)
      } else if (pct % 25 === 0) {
        stream.write(`${pct}% ${what}\n`)
      }
      last = pct
    },
    done() {
      if (stream.isTTY) stream.write('\n')
    }
  }
}
