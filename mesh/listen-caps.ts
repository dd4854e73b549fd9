import type { Server, Socket } from 'node:net'

/**
 * Caps the connections one remote address holds open on `server` at `max`: a connection over
 * the cap is destroyed on arrival (`onRefused` hears of it). Returns how many connections are
 * open in all. For listeners anyone who reaches the port can use (the bulk channel, the metrics
 * and dashboard endpoints), so one address cannot take every slot of the total cap.
 */
export function capPerAddress(server: Server, max: number, onRefused?: (ip: string, open: number) => void): () => number {
  const open = new Map<string, number>()
  server.on('connection', (raw: Socket) => {
    const ip = raw.remoteAddress ?? ''
    const n = open.get(ip) ?? 0
    if (n >= max) {
      onRefused?.(ip, n)
      raw.destroy()
      return
    }
    open.set(ip, n + 1)
    raw.once('close', () => {
      const left = (open.get(ip) ?? 1) - 1
      if (left <= 0) open.delete(ip)
      else open.set(ip, left)
    })
  })
  return () => [...open.values()].reduce((a, b) => a + b, 0)
}
