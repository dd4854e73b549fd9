/**
 * One direction of a link that many flows share: a host NIC's egress or ingress, or a zone
 * uplink's egress or ingress. It carries `bytesPerS` and keeps a calendar of the intervals it
 * is booked for from now on (sorted, disjoint, merged where they touch). A chunk is booked into
 * the earliest free gap that holds it, at or after the time the chunk can reach the pipe: a
 * chunk booked later but due earlier fills a gap that an earlier booking left, so the pipe
 * idles only when nothing could use it (work-conserving). Fairness between flows comes from
 * the flows (`sim/net-fabric.ts`): each books one chunk at a time, so the bookings of busy
 * flows interleave chunk by chunk, a round robin.
 */
export class SharedPipe {
  /** Capacity in bytes per second (Infinity: never a bottleneck, books nothing). */
  readonly bytesPerS: number
  private readonly starts: number[] = []
  private readonly ends: number[] = []

  constructor(bytesPerS: number) {
    this.bytesPerS = bytesPerS
  }

  /** Intervals booked from now on (for tests). */
  get booked(): number {
    return this.starts.length
  }

  /**
   * Books `ms` of this pipe in the earliest free gap at or after `from`, and returns where that
   * gap starts. Intervals over by `now` are forgotten first. A zero-length booking takes no room.
   */
  book(from: number, ms: number, now: number): number {
    if (!(ms > 0)) return from
    const starts = this.starts
    const ends = this.ends
    let n = ends.length
    if (n > 0 && ends[0]! <= now) {
      const k = firstAfter(ends, now, 0, n)
      starts.splice(0, k)
      ends.splice(0, k)
      n -= k
    }
    // The common case: after everything booked (a burst on an idle pipe, or the flow that keeps it busy).
    if (n === 0 || from >= ends[n - 1]!) {
      if (n > 0 && ends[n - 1] === from) ends[n - 1] = from + ms
      else {
        starts.push(from)
        ends.push(from + ms)
      }
      return from
    }
    let i = firstAfter(ends, from, 0, n)
    let s = from
    while (i < n && starts[i]! < s + ms) {
      if (ends[i]! > s) s = ends[i]!
      i++
    }
    const e = s + ms
    const joinPrev = i > 0 && ends[i - 1]! >= s
    const joinNext = i < n && starts[i]! <= e
    if (joinPrev && joinNext) {
      ends[i - 1] = ends[i]!
      starts.splice(i, 1)
      ends.splice(i, 1)
    } else if (joinPrev) ends[i - 1] = e
    else if (joinNext) starts[i] = s
    else {
      starts.splice(i, 0, s)
      ends.splice(i, 0, e)
    }
    return s
  }
}

/** The first index in [lo, hi) of ascending `sorted` whose value is above `t` (hi if none). */
function firstAfter(sorted: readonly number[], t: number, lo: number, hi: number): number {
  while (lo < hi) {
    const mid = (lo + hi) >>> 1
    if (sorted[mid]! > t) hi = mid
    else lo = mid + 1
  }
  return lo
}
