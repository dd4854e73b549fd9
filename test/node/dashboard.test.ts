// The dashboard's recorder and server, in process: what the page is told, and what the endpoint
// refuses (the browser test, test/cli/dashboard.test.ts, drives the page itself).
import test from 'ava'
import { request } from 'node:http'
import { ManualClock, ProtocolError } from '../../core/index.ts'
import type { MembershipStatus, View } from '../../mesh/index.ts'
import { DASHBOARD_LIMITS, DashboardRecorder, Series, decodeProgress, encodeProgress, type Progress } from '../../node/dashboard/model.ts'
import { DASHBOARD_HTTP_LIMITS, serveDashboard } from '../../node/dashboard/server.ts'

const member = (id: string, rank: number) => ({
  id,
  zone: rank < 2 ? 'z0' : 'z1',
  host: `h${rank}`,
  rank,
  live: true,
  phi: 0,
  lastHeartbeatAgeMs: 0,
  monitored: true
})
const view = (epoch: number, ids: string[]): View => ({ epoch, members: ids.map((id, r) => ({ id, zone: r < 2 ? 'z0' : 'z1', host: `h${r}` })) })

function recorder(clock = new ManualClock()): { rec: DashboardRecorder; clock: ManualClock; set: (ids: string[]) => void } {
  let ids = ['a', 'b', 'c']
  const membership = (): MembershipStatus => ({
    self: 'a',
    epoch: 1,
    members: ids.map(member),
    paused: false,
    member: true,
    joining: [],
    leader: 'a',
    detectionBoundMs: 1000
  })
  const rec = new DashboardRecorder({
    clock,
    run: 'r1',
    self: { id: 'a', zone: 'z0', host: 'h0' },
    config: { model: 'mini' },
    membership,
    worldSize: () => 2
  })
  return { rec, clock, set: x => (ids = x) }
}

const progress = (step: number, loss?: number): Progress => ({
  zone: 'z1',
  host: 'h2',
  role: 'rank',
  rank: 1,
  step,
  steps: 10,
  ...(loss === undefined ? {} : { loss }),
  tokensPerS: 100,
  bytes: { host: 0, zone: 10, wan: 20 },
  phase: 'step'
})

test('the recorder turns events and views into a timeline, ranks and spares, a loss curve by step and per-rank series', t => {
  const { rec, clock } = recorder()
  rec.view(view(1, ['a', 'b', 'c']))
  rec.event({ type: 'step', step: 1, steps: 10, loss: 5, worldSize: 2, tokensPerS: 10 })
  rec.event({ type: 'step', step: 2, steps: 10, loss: 4, worldSize: 2, tokensPerS: 10 })
  clock.advance(1000)
  rec.view(view(2, ['a', 'c']))
  rec.event({ type: 'recovery', mode: 'replace', lost: [1], fromStep: 1, ms: 250, worldSize: 2 })
  // The replayed step after the rollback is not drawn again.
  rec.event({ type: 'step', step: 2, steps: 10, loss: 4, worldSize: 2, tokensPerS: 10 })
  rec.progress('c', progress(3, 3.5))
  const s = rec.state()
  t.deepEqual(
    s.timeline.map(e => e.kind),
    ['view', 'lost', 'view', 'recovery']
  )
  t.regex(s.timeline[1]!.text, /lost h1/)
  t.is(s.timeline[3]!.ms, 250)
  t.deepEqual(
    s.view.members.map(m => m.role),
    ['rank', 'rank', 'spare']
  )
  t.deepEqual(
    s.series['loss']!.points.map(p => [p[1], p[2]]),
    [
      [1, 5],
      [2, 4],
      [3, 3.5]
    ]
  )
  t.deepEqual(
    s.series['rank:c']!.points.map(p => p[1]),
    [3]
  )
  t.deepEqual(s.views.at(-1)!.lost, ['b'])
})

test('progress gossip is strict and capped: malformed or oversized messages are refused before use', t => {
  const ok = progress(1, 2)
  t.deepEqual(decodeProgress(encodeProgress(ok)), ok)
  t.throws(() => decodeProgress(new Uint8Array([1, 2, 3])), { instanceOf: ProtocolError })
  t.throws(() => decodeProgress(new Uint8Array(DASHBOARD_LIMITS.maxProgressBytes + 1)), { instanceOf: ProtocolError })
  t.throws(() => encodeProgress({ ...ok, phase: 'x'.repeat(161) }))
})

test('a series keeps at most maxSeriesPoints: at the cap every other point goes and its generation grows', t => {
  const s = new Series()
  for (let i = 0; i < DASHBOARD_LIMITS.maxSeriesPoints; i++) s.push([i])
  t.is(s.gen, 0)
  s.push([-1])
  t.is(s.gen, 1)
  t.is(s.points.length, DASHBOARD_LIMITS.maxSeriesPoints / 2 + 1)
  t.deepEqual(s.points.at(-1), [-1])
})

/** One HTTP exchange with the dashboard: status, headers and body. */
function get(port: number, path: string, o: { method?: string; host?: string } = {}): Promise<{ status: number; body: string; type: string }> {
  return new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port, path, method: o.method ?? 'GET', headers: { host: o.host ?? `127.0.0.1:${port}` } }, res => {
      let body = ''
      res.setEncoding('utf8')
      res.on('data', c => (body += c))
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body, type: String(res.headers['content-type']) }))
    })
    req.on('error', reject)
    req.end()
  })
}

/** Opens the event stream and collects its events until `n` arrived. */
function stream(port: number): { events: Array<{ event: string; data: Record<string, unknown> }>; until: (n: number) => Promise<void>; close: () => void } {
  const events: Array<{ event: string; data: Record<string, unknown> }> = []
  const waiters: Array<() => void> = []
  let buf = ''
  const req = request({ host: '127.0.0.1', port, path: '/api/events' }, res => {
    res.setEncoding('utf8')
    res.on('data', (c: string) => {
      buf += c
      let i: number
      while ((i = buf.indexOf('\n\n')) >= 0) {
        const block = buf.slice(0, i)
        buf = buf.slice(i + 2)
        const event = /^event: (.*)$/m.exec(block)?.[1] ?? ''
        const data = JSON.parse(/^data: (.*)$/m.exec(block)?.[1] ?? '{}') as Record<string, unknown>
        events.push({ event, data })
        for (const w of waiters.splice(0)) w()
      }
    })
  })
  req.on('error', () => {})
  req.end()
  return {
    events,
    until: n =>
      new Promise<void>(resolve => {
        const check = (): void => {
          if (events.length >= n) resolve()
          else waiters.push(check)
        }
        check()
      }),
    close: () => req.destroy()
  }
}

test('the server: the page and its assets, the state as JSON, a stream that sends only new points, and refusals for other methods, hosts and paths', async t => {
  const { rec } = recorder()
  rec.event({ type: 'step', step: 1, steps: 10, loss: 5, worldSize: 2, tokensPerS: 10 })
  const server = await serveDashboard({ host: '127.0.0.1', port: 0 }, rec)
  try {
    const { port } = server
    const page = await get(port, '/')
    t.is(page.status, 200)
    t.regex(page.body, /<script src="\/app.js">/)
    t.is((await get(port, '/uplot.js')).status, 200)
    const st = await get(port, '/api/state')
    t.is(JSON.parse(st.body).run, 'r1')
    t.is((await get(port, '/api/state', { method: 'POST' })).status, 405)
    t.is((await get(port, '/nope')).status, 404)
    t.is((await get(port, '/', { host: 'evil.example:80' })).status, 403, 'a name other than localhost (DNS rebinding) is refused')
    t.is((await get(port, '/', { host: `localhost:${port}` })).status, 200)
    const s = stream(port)
    await s.until(1)
    t.is(s.events[0]!.event, 'state')
    const first = (s.events[0]!.data['series'] as Record<string, { from: number; points: number[][] }>)['loss']!
    t.is(first.points.length, 1)
    rec.event({ type: 'step', step: 2, steps: 10, loss: 4, worldSize: 2, tokensPerS: 10 })
    server.push()
    await s.until(2)
    const update = (s.events[1]!.data['series'] as Record<string, { from: number; points: number[][] }>)['loss']!
    t.is(update.from, 1, 'the update carries only the point the page does not have')
    t.deepEqual(
      update.points.map(p => p[1]),
      [2]
    )
    // More streams than the cap: the next page is told to come back later.
    const more = Array.from({ length: DASHBOARD_HTTP_LIMITS.maxStreams - 1 }, () => stream(port))
    await Promise.all(more.map(m => m.until(1)))
    t.is(server.streams(), DASHBOARD_HTTP_LIMITS.maxStreams)
    t.is((await get(port, '/api/events')).status, 503)
    for (const m of [s, ...more]) m.close()
  } finally {
    await server.close()
  }
})
