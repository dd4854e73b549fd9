import test from 'ava'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { request } from 'node:http'
import { connect, createServer, type Socket } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { createMetricsRegistry } from '../../core/index.ts'
import { main } from '../../cli/main.ts'
import { loadStartConfig } from '../../cli/start.ts'
import { METRICS_HTTP_LIMITS, defineNodeMetrics, serveMetrics, type TrainFigures } from '../../node/metrics-http.ts'
import { startNode } from '../../node/start.ts'
import type { NodeEvent } from '../../node/events.ts'

const dir = mkdtempSync(join(tmpdir(), 'zm-metrics-'))
const secret = join(dir, 'secret')
writeFileSync(secret, 'a secret that is long enough\n')
const dataFile = join(dir, 'corpus.txt')
writeFileSync(dataFile, 'it was the best of times, it was the worst of times. '.repeat(64))
test.after.always(() => rmSync(dir, { recursive: true, force: true }))

interface Sample {
  name: string
  labels: Record<string, string>
  value: number
}

/**
 * A strict reader of the Prometheus text format (0.0.4): HELP and TYPE comments, then samples
 * `name{label="value",...} number`; every sample must belong to a declared metric (histograms
 * through their _bucket / _sum / _count series). Throws on any line it cannot read.
 */
function parseExposition(text: string): { types: Map<string, string>; samples: Sample[] } {
  const types = new Map<string, string>()
  const samples: Sample[] = []
  if (!text.endsWith('\n')) throw new Error('exposition must end with a newline')
  for (const line of text.split('\n').slice(0, -1)) {
    if (line === '') continue
    let m = /^# (HELP|TYPE) ([a-zA-Z_:][a-zA-Z0-9_:]*) (.*)$/.exec(line)
    if (m !== null) {
      if (m[1] === 'TYPE') {
        if (!['counter', 'gauge', 'histogram', 'summary', 'untyped'].includes(m[3]!)) throw new Error(`bad type: ${line}`)
        types.set(m[2]!, m[3]!)
      }
      continue
    }
    m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$/.exec(line)
    if (m === null) throw new Error(`unreadable line: ${line}`)
    const labels: Record<string, string> = {}
    if (m[2] !== undefined && m[2] !== '') {
      for (const part of m[2].split(',')) {
        const l = /^([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"$/.exec(part)
        if (l === null) throw new Error(`bad label in: ${line}`)
        labels[l[1]!] = l[2]!
      }
    }
    const raw = m[3]!
    const value = raw === 'NaN' ? NaN : raw === '+Inf' ? Infinity : raw === '-Inf' ? -Infinity : Number(raw)
    if (raw !== 'NaN' && Number.isNaN(value)) throw new Error(`bad value in: ${line}`)
    const name = m[1]!
    const family = types.has(name) ? name : name.replace(/_(bucket|sum|count)$/, '')
    if (!types.has(family)) throw new Error(`sample of an undeclared metric: ${line}`)
    samples.push({ name, labels, value })
  }
  return { types, samples }
}

function value(samples: Sample[], name: string, labels: Record<string, string> = {}): number | undefined {
  return samples.find(s => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v))?.value
}

async function get(
  url: string,
  init: { method?: string; headers?: Record<string, string>; body?: string } = {}
): Promise<{ status: number; headers: Record<string, string | string[] | undefined>; body: string }> {
  return await new Promise((resolve, reject) => {
    const req = request(url, { method: init.method ?? 'GET', headers: init.headers ?? {}, timeout: 5000 }, res => {
      const parts: Buffer[] = []
      res.on('data', (c: Buffer) => parts.push(c))
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(parts).toString('utf8') }))
    })
    req.on('timeout', () => req.destroy(new Error('timeout')))
    req.on('error', reject)
    req.end(init.body)
  })
}

const closed = async (s: Socket, ms: number): Promise<boolean> =>
  await new Promise(resolve => {
    if (s.destroyed) {
      resolve(true)
      return
    }
    const timer = setTimeout(() => resolve(false), ms)
    s.once('close', () => {
      clearTimeout(timer)
      resolve(true)
    })
  })

test('a training node serves Prometheus metrics on --metrics-listen; other paths 404, other methods 405; closed on stop', async t => {
  const cfg = loadStartConfig(
    {
      run: 'metrics-1',
      'secret-file': secret,
      'data-dir': join(dir, 'node1'),
      listen: ['/ip4/127.0.0.1/tcp/0'],
      'metrics-listen': '127.0.0.1:0',
      train: true,
      steps: '3',
      batch: '2',
      seq: '16',
      snapshot: 'off',
      'disk-every': '0',
      data: dataFile
    },
    {}
  )
  const events: NodeEvent[] = []
  const node = await startNode(cfg, e => events.push(e))
  let stopped = false
  t.teardown(async () => {
    if (!stopped) await node.stop()
  })
  const url = node.metricsUrl!
  t.regex(url, /^http:\/\/127\.0\.0\.1:\d+\/metrics$/)
  t.is(events.find(e => e.type === 'started')?.metricsUrl, url, JSON.stringify(events))

  const done = await node.training!
  t.is(done.step, 3)
  const res = await get(url)
  t.is(res.status, 200)
  t.regex(String(res.headers['content-type']), /^text\/plain; version=0\.0\.4/)
  const { types, samples } = parseExposition(res.body)
  for (const [name, type] of [
    ['zeromesh_view_epoch_count', 'gauge'],
    ['zeromesh_view_members_peers', 'gauge'],
    ['zeromesh_train_committed_steps', 'gauge'],
    ['zeromesh_train_loss_nats', 'gauge'],
    ['zeromesh_train_tokens_total', 'counter'],
    ['zeromesh_train_step_seconds', 'histogram'],
    ['zeromesh_train_sent_bytes_total', 'counter'],
    ['zeromesh_train_snapshot_steps', 'gauge'],
    ['zeromesh_train_recoveries_total', 'counter'],
    ['zeromesh_train_last_recovery_seconds', 'gauge'],
    ['zeromesh_train_role_info', 'gauge']
  ])
    t.is(types.get(name!), type, name)
  t.is(value(samples, 'zeromesh_train_committed_steps'), 3)
  t.is(value(samples, 'zeromesh_train_target_steps'), 3)
  t.is(value(samples, 'zeromesh_train_loss_nats'), done.loss)
  t.is(value(samples, 'zeromesh_train_tokens_total'), 3 * 1 * 2 * 16)
  t.is(value(samples, 'zeromesh_train_step_seconds_count'), 3)
  t.is(value(samples, 'zeromesh_train_role_info', { role: 'done' }), 1)
  t.is(value(samples, 'zeromesh_train_role_info', { role: 'rank' }), 0)
  t.is(value(samples, 'zeromesh_view_members_peers'), 1)
  t.true(value(samples, 'zeromesh_view_epoch_count')! >= 1)
  for (const tier of ['host', 'zone', 'wan']) t.is(value(samples, 'zeromesh_train_sent_bytes_total', { tier }), 0, tier) // one rank sends nothing
  t.is(value(samples, 'zeromesh_train_recoveries_total', { mode: 'replace' }), 0)
  // Values not known yet are left out, not reported as 0.
  t.is(value(samples, 'zeromesh_train_last_recovery_seconds'), undefined)
  t.is(value(samples, 'zeromesh_train_snapshot_steps'), undefined)

  // A query string is still a scrape; anything else is refused without reading a body.
  t.is((await get(`${url}?name[]=x`)).status, 200)
  const other = await get(url.replace('/metrics', '/status'))
  t.is(other.status, 404)
  t.regex(other.body, /metrics are at \/metrics/)
  t.is((await get(url.replace('/metrics', '/'))).status, 404)
  for (const method of ['POST', 'PUT', 'DELETE', 'HEAD']) {
    const r = await get(url, { method, ...(method === 'HEAD' ? {} : { body: 'x'.repeat(100_000) }) })
    t.is(r.status, 405, method)
    t.is(r.headers['allow'], 'GET')
  }

  await node.stop()
  stopped = true
  await t.throwsAsync(get(url), { code: 'ECONNREFUSED' })
})

test('a metrics port in use is one clear line and exit code 2; the node does not start', async t => {
  const blocker = createServer()
  await new Promise<void>(resolve => blocker.listen(0, '127.0.0.1', resolve))
  const port = (blocker.address() as { port: number }).port
  try {
    const err: string[] = []
    const code = await main(
      [
        'start',
        '--run',
        'metrics-2',
        '--data-dir',
        join(dir, 'node2'),
        '--secret-file',
        secret,
        '--listen',
        '/ip4/127.0.0.1/tcp/0',
        '--metrics-listen',
        `127.0.0.1:${port}`
      ],
      { out: () => {}, err: l => err.push(l) }
    )
    t.is(code, 2)
    t.deepEqual(err, [`zeromesh: cannot serve metrics on 127.0.0.1:${port}: the address is in use`])
  } finally {
    blocker.close()
  }
})

test("counters follow the trainer's totals between scrapes; a node without training has only view metrics", async t => {
  const registry = createMetricsRegistry()
  const st: TrainFigures = {
    role: 'rank',
    worldSize: 2,
    step: 5,
    steps: 10,
    loss: 2.5,
    tokensPerS: 100,
    bytes: { host: 10, zone: 20, wan: 30 },
    snapshotStep: 4,
    recoveries: []
  }
  const membership = { status: () => ({ epoch: 2, members: [] }) }
  const obs = defineNodeMetrics(registry, { membership, training: () => st })
  const scrape = async (): Promise<Sample[]> => parseExposition(await registry.metrics()).samples
  let s = await scrape()
  t.is(value(s, 'zeromesh_train_sent_bytes_total', { tier: 'wan' }), 30)
  // No snapshot service yet: no snapshot bytes; then they follow the trainer's per-tier totals.
  t.is(value(s, 'zeromesh_train_snapshot_placed_bytes_total', { tier: 'zone' }), undefined)
  st.snapshotBytes = { host: 1, zone: 700, wan: 0 }
  s = await scrape()
  t.is(value(s, 'zeromesh_train_snapshot_placed_bytes_total', { tier: 'zone' }), 700)
  t.is(value(s, 'zeromesh_train_snapshot_placed_bytes_total', { tier: 'wan' }), 0)
  t.is(value(s, 'zeromesh_train_last_recovery_seconds'), undefined)
  t.is(value(s, 'zeromesh_train_loss_nats'), 2.5)
  t.is(value(s, 'zeromesh_train_snapshot_steps'), 4)
  st.bytes = { host: 15, zone: 20, wan: 130 }
  st.recoveries = [
    { mode: 'replace', lost: [1], fromStep: 4, ms: 1500 },
    { mode: 'shrink', lost: [0], fromStep: 6, ms: 250 }
  ]
  obs.step(st, 64)
  obs.step({ ...st, tokensPerS: undefined }, 64)
  s = await scrape()
  t.is(value(s, 'zeromesh_train_sent_bytes_total', { tier: 'host' }), 15)
  t.is(value(s, 'zeromesh_train_sent_bytes_total', { tier: 'wan' }), 130)
  t.is(value(s, 'zeromesh_train_recoveries_total', { mode: 'replace' }), 1)
  t.is(value(s, 'zeromesh_train_recoveries_total', { mode: 'shrink' }), 1)
  t.is(value(s, 'zeromesh_train_last_recovery_seconds'), 0.25)
  t.is(value(s, 'zeromesh_train_tokens_total'), 128)
  t.is(value(s, 'zeromesh_train_step_seconds_count'), 1) // no throughput, no step time
  t.is(value(s, 'zeromesh_train_step_seconds_sum'), 0.64)
  // A scrape with nothing new adds nothing.
  s = await scrape()
  t.is(value(s, 'zeromesh_train_recoveries_total', { mode: 'replace' }), 1)
  t.is(value(s, 'zeromesh_train_sent_bytes_total', { tier: 'wan' }), 130)

  const bare = createMetricsRegistry()
  defineNodeMetrics(bare, { membership })
  const names = new Set(parseExposition(await bare.metrics()).samples.map(x => x.name))
  t.deepEqual([...names].sort(), ['zeromesh_view_epoch_count', 'zeromesh_view_members_peers'])
})

test('the metrics endpoint caps connections in total and per address, and header bytes: slow clients on one address do not block a scraper on another', async t => {
  const server = await serveMetrics({ host: '127.0.0.1', port: 0 }, createMetricsRegistry())
  t.teardown(() => server.close())
  // Header bytes over the cap: 431, connection closed.
  const big = await get(server.url, { headers: { 'x-filler': 'a'.repeat(METRICS_HTTP_LIMITS.maxHeaderBytes + 1) } })
  t.is(big.status, 431)
  // Slow clients (connections that never send a request) from one address: maxPerAddress are
  // held, the next from that address is closed on arrival, and a scraper elsewhere still gets in.
  const held: Socket[] = []
  t.teardown(() => {
    for (const s of held) s.destroy()
  })
  const open = async (localAddress: string): Promise<Socket> => {
    const s = connect({ port: server.port, host: '127.0.0.1', localAddress })
    s.on('error', () => {})
    await new Promise<void>(resolve => s.once('connect', resolve).once('close', () => resolve()))
    return s
  }
  for (let i = 0; i < METRICS_HTTP_LIMITS.maxPerAddress; i++) held.push(await open('127.0.0.1'))
  const extra = await open('127.0.0.1')
  t.true(await closed(extra, 5000), 'a connection over the per-address cap is closed')
  t.false(
    held.some(s => s.destroyed),
    'the connections within the cap stay open'
  )
  // Another address (a loopback alias) scrapes while those slow clients hold their slots.
  const other = await new Promise<number>((resolve, reject) => {
    const req = request(server.url, { localAddress: '127.0.0.2', timeout: 5000 }, res => {
      res.resume()
      res.on('end', () => resolve(res.statusCode ?? 0))
    })
    req.on('error', reject)
    req.end()
  })
  t.is(other, 200, 'a scraper on another address is served')
  // The total cap: more addresses up to maxConnections; the next connection is closed on arrival.
  for (let a = 3; held.length < METRICS_HTTP_LIMITS.maxConnections; a++) {
    for (let i = 0; i < METRICS_HTTP_LIMITS.maxPerAddress && held.length < METRICS_HTTP_LIMITS.maxConnections; i++) held.push(await open(`127.0.0.${a}`))
  }
  const over = await open('127.0.0.250')
  t.true(await closed(over, 5000), 'the connection over the total cap is closed')
  const first = held.shift()!
  first.destroy()
  await closed(first, 1000)
  // Room again: a scrape gets through (the server may take a moment to count the close).
  let ok = 0
  for (let i = 0; i < 50 && ok !== 200; i++) ok = (await get(server.url).catch(() => ({ status: 0 }))).status
  t.is(ok, 200)
  // close() also ends connections that are still open, and is idempotent.
  await server.close()
  await server.close()
  t.true(await closed(held[0]!, 5000))
})
