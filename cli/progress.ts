/** A one-line progress bar (over simulated time, or steps) on a terminal; plain percentages elsewhere. */
export function progressBar(stream: NodeJS.WriteStream, what = 'of simulated time'): { update: (f: number) => void; done: () => void } {
  let last = -1
  return {
    update(f: number) {
      const pct = Math.floor(f * 100)
      if (pct === last) return
      if (stream.isTTY) {
        const w = 30
        const filled = Math.round(f * w)
        stream.write(`\r[${'#'.repeat(filled)}${'.'.repeat(w - filled)}] ${String(pct).padStart(3)}% ${what}`)
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
