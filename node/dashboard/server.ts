import { readFileSync } from 'node:fs'
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http'
import { createRequire } from 'node:module'
import { isIP } from 'node:net'
import { fileURLToPath } from 'node:url'
import { capPerAddress } from '../../mesh/index.ts'
import type { HostPort } from '../config.ts'
import { bindHttp } from '../metrics-http.ts'
import type { DashboardRecorder, DashboardState } from './model.ts'

/**
 * A node's dashboard (`zeromesh start --http host:port`): one read-only page, its script and
 * style and uPlot (shipped in the package: no build step, no CDN), `GET /api/state` (the
 * whole state as JSON) and `GET /api/events` (Server-Sent Events: the state when the page
 * connects, then an update every tick with the points each series gained). Connections,
 * streams, header size and request time are capped (DASHBOARD_HTTP_LIMITS), a stream whose
 * reader does not keep up is closed, and requests whose Host is a name other than localhost
 * or the bound host are refused (a web page elsewhere cannot read the dashboard by DNS
 * rebinding).
 */

/** Caps of the dashboard endpoint (docs/LIMITS.md). */
export const DASHBOARD_HTTP_LIMITS = Object.freeze({
  /** Open connections at once; more are closed on arrival. */
  maxConnections: 32,
  /** Open connections from one address. */
  maxPerAddress: 16,
  /** Event streams (open pages) at once; more are answered 503. */
  maxStreams: 8,
  /** Bytes of request line and headers. */
  maxHeaderBytes: 8192,
  /** Time to receive the headers (ms). */
  headersTimeoutMs: 5000,
  /** Time to receive a whole request (ms; a stream's response is not bounded by it). */
  requestTimeoutMs: 10_000,
  /** Bytes queued for a stream whose reader does not keep up before it is closed. */
  maxStreamBacklogBytes: 4 * 2 ** 20
})

export interface DashboardServer {
  /** `http://host:port/`, with the port actually bound. */
  url: string
  port: number
  /** Sends an update to every open page (after the recorder's tick). */
  push(): void
  /** Open event streams. */
  streams(): number
  close(): Promise<void>
}

/** The files of the page: ours beside this module, uPlot from its npm package. */
function assets(): Map<string, { type: string; body: Buffer }> {
  const here = (name: string): Buffer => readFileSync(fileURLToPath(new URL(`./assets/${name}`, import.meta.url)))
  const req = createRequire(import.meta.url)
  const uplot = (name: string): Buffer => readFileSync(req.resolve(`uplot/dist/${name}`))
  return new Map([
    ['/', { type: 'text/html; charset=utf-8', body: here('index.html') }],
    ['/app.js', { type: 'text/javascript; charset=utf-8', body: here('app.js') }],
    ['/style.css', { type: 'text/css; charset=utf-8', body: here('style.css') }],
    ['/uplot.js', { type: 'text/javascript; charset=utf-8', body: uplot('uPlot.iife.min.js') }],
    ['/uplot.css', { type: 'text/css; charset=utf-8', body: uplot('uPlot.min.css') }]
  ])
}

/** `http://host:port/` (IPv6 hosts bracketed; the unspecified address shown as loopback). */
export function dashboardUrl(host: string, port: number): string {
  const h = host === '0.0.0.0' ? '127.0.0.1' : host === '::' ? '::1' : host
  return `http://${h.includes(':') ? `[${h}]` : h}:${port}/`
}

/** A page's stream: what it has of each series (generation and count), to send only the new points. */
interface Stream {
  res: ServerResponse
  sent: Map<string, { gen: number; n: number }>
}

/** Serves `recorder`'s dashboard on `listen`; a bad address is a ConfigError (exit 2). */
export async function serveDashboard(listen: HostPort, recorder: DashboardRecorder): Promise<DashboardServer> {
  const L = DASHBOARD_HTTP_LIMITS
  const files = assets()
  const streams = new Set<Stream>()
  const server = createServer({ maxHeaderSize: L.maxHeaderBytes, headersTimeout: L.headersTimeoutMs, requestTimeout: L.requestTimeoutMs }, (req, res) =>
    handle(req, res)
  )
  server.maxConnections = L.maxConnections
  capPerAddress(server, L.maxPerAddress)

  const handle = (req: IncomingMessage, res: ServerResponse): void => {
    const plain = (code: number, text: string, headers: Record<string, string> = {}): void => {
      res.writeHead(code, { 'content-type': 'text/plain; charset=utf-8', connection: 'close', ...headers }).end(`${text}\n`)
    }
    if (!hostAllowed(req.headers.host, listen.host)) {
      plain(403, 'forbidden: open the dashboard by its address or localhost')
      return
    }
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      plain(405, 'method not allowed: the dashboard is read-only', { allow: 'GET, HEAD' })
      return
    }
    const path = (req.url ?? '/').split('?', 1)[0]!
    const headers = {
      'x-content-type-options': 'nosniff',
      'content-security-policy': "default-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:",
      'cache-control': 'no-store'
    }
    const file = files.get(path === '/index.html' ? '/' : path)
    if (file !== undefined) {
      res.writeHead(200, { ...headers, 'content-type': file.type, 'content-length': file.body.length })
      res.end(req.method === 'HEAD' ? undefined : file.body)
      return
    }
    if (path === '/api/state') {
      res.writeHead(200, { ...headers, 'content-type': 'application/json' }).end(req.method === 'HEAD' ? undefined : JSON.stringify(recorder.state()))
      return
    }
    if (path === '/api/events') {
      if (streams.size >= L.maxStreams) {
        plain(503, `too many open dashboards (${L.maxStreams}); close one`, { 'retry-after': '5' })
        return
      }
      res.writeHead(200, { ...headers, 'content-type': 'text/event-stream', connection: 'keep-alive' })
      const s: Stream = { res, sent: new Map() }
      streams.add(s)
      res.on('close', () => streams.delete(s))
      send(s, 'state', recorder.state())
      return
    }
    plain(404, 'not found: the dashboard is at /')
  }

  /** Writes one event; a stream whose backlog passed the cap is closed. */
  const send = (s: Stream, event: 'state' | 'update', st: DashboardState): void => {
    const series: Record<string, { gen: number; from: number; points: number[][] }> = {}
    for (const [k, v] of Object.entries(st.series)) {
      const had = s.sent.get(k)
      const from = had !== undefined && had.gen === v.gen ? had.n : 0
      if (event === 'update' && from === v.points.length) continue
      series[k] = { gen: v.gen, from, points: v.points.slice(from) }
      s.sent.set(k, { gen: v.gen, n: v.points.length })
    }
    s.res.write(`event: ${event}\ndata: ${JSON.stringify({ ...st, series })}\n\n`)
    if (s.res.writableLength > L.maxStreamBacklogBytes) {
      streams.delete(s)
      s.res.destroy()
    }
  }

  const bound = await bindHttp(server, listen, 'the dashboard')
  return {
    url: dashboardUrl(listen.host, bound.port),
    port: bound.port,
    push() {
      if (streams.size === 0) return
      const st = recorder.state()
      for (const s of [...streams]) send(s, 'update', st)
    },
    streams: () => streams.size,
    async close() {
      for (const s of streams) s.res.end()
      streams.clear()
      await bound.close()
    }
  }
}

/** A Host header that names an IP address, localhost, or the host the dashboard was bound to. */
function hostAllowed(header: string | undefined, bound: string): boolean {
  if (header === undefined) return false
  const m = /^(?:\[([^\]]+)\]|([^:]+))(?::\d+)?$/.exec(header)
  const host = (m?.[1] ?? m?.[2] ?? '').toLowerCase()
  return host !== '' && (isIP(host) !== 0 || host === 'localhost' || host === bound.toLowerCase())
}
