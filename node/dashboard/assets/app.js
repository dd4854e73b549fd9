// The zeromesh dashboard page: reads the node's event stream (/api/events) and draws the
// mesh, the curves (uPlot), the placement map, the timeline and the config. No build step.
/* global uPlot */

const $ = id => document.getElementById(id)
const COLORS = ['#3b82f6', '#22c55e', '#f59e0b', '#ef4444', '#a78bfa', '#14b8a6', '#f472b6', '#eab308', '#60a5fa', '#fb923c']
const state = { s: undefined, series: {}, charts: {}, connected: false, updates: 0 }

function el(tag, attrs, ...children) {
  const e = document.createElement(tag)
  for (const [k, v] of Object.entries(attrs ?? {})) {
    if (k === 'class') e.className = v
    else if (k === 'title') e.title = v
    else e.setAttribute(k, v)
  }
  for (const c of children.flat()) if (c !== undefined && c !== null) e.append(typeof c === 'string' || typeof c === 'number' ? String(c) : c)
  return e
}

const short = id => (id.length > 16 ? `…${id.slice(-8)}` : id)
const secs = ms => `${(ms / 1000).toFixed(1)} s`
const num = (x, d = 4) => (typeof x === 'number' && Number.isFinite(x) ? x.toFixed(d) : '–')
const mib = b => (b / 2 ** 20).toFixed(b < 2 ** 24 ? 2 : 0)

/** Names a peer: its host (and rank) when known. */
function who(id) {
  const s = state.s
  const m = s?.view.members.find(x => x.id === id)
  const n = s?.nodes[id]
  const host = m?.host ?? n?.host
  return host === undefined ? short(id) : host
}

function applySeries(series) {
  for (const [k, v] of Object.entries(series)) {
    const had = state.series[k]
    if (v.from === 0 || had === undefined || had.gen !== v.gen) state.series[k] = { gen: v.gen, points: v.points.slice() }
    else had.points.push(...v.points)
  }
}

function onMessage(kind, data) {
  const msg = JSON.parse(data)
  if (kind === 'state') state.series = {}
  applySeries(msg.series)
  state.s = msg
  state.updates++
  render()
}

function connect() {
  const es = new EventSource('/api/events')
  es.addEventListener('state', e => onMessage('state', e.data))
  es.addEventListener('update', e => onMessage('update', e.data))
  es.onopen = () => setConn(true)
  es.onerror = () => setConn(false)
}

function setConn(on) {
  state.connected = on
  const c = $('conn')
  c.className = `pill ${on ? 'on' : 'off'}`
  c.textContent = on ? 'live' : 'disconnected: retrying'
}

function render() {
  const s = state.s
  if (s === undefined) return
  document.body.dataset.updates = String(state.updates)
  $('run').textContent = `run ${s.run}`
  renderPills(s)
  renderMesh(s)
  renderCharts()
  renderTimeline(s)
  renderPlacement(s)
  renderNodes(s)
  renderViews(s)
  renderConfig(s)
}

function renderPills(s) {
  const inView = new Set(s.view.members.map(m => m.id))
  const rows = Object.entries(s.nodes)
    .filter(([id]) => inView.has(id))
    .map(([, n]) => n)
  const ranks = s.view.members.filter(m => m.role === 'rank').length
  const spares = s.view.members.filter(m => m.role === 'spare').length
  const step = rows.filter(r => r.role === 'rank' || r.role === 'done').reduce((a, r) => Math.min(a, r.step), Number.POSITIVE_INFINITY)
  const steps = rows[0]?.steps
  const loss = state.series.loss?.points.at(-1)
  const recoveries = s.timeline.filter(e => e.kind === 'recovery').length
  const pill = (label, value) => el('span', { class: 'pill' }, `${label} `, el('b', {}, value))
  $('pills').replaceChildren(
    pill('step', Number.isFinite(step) ? `${step}${steps === undefined ? '' : ` / ${steps}`}` : '–'),
    pill('loss', loss === undefined ? '–' : num(loss[2])),
    pill('view', String(s.view.epoch)),
    pill('ranks', String(ranks)),
    pill('spares', String(spares)),
    pill('recoveries', String(recoveries)),
    ...(s.view.paused ? [el('span', { class: 'pill off' }, 'paused: minority')] : [])
  )
}

function renderMesh(s) {
  const zones = new Map()
  for (const m of s.view.members) {
    if (!zones.has(m.zone)) zones.set(m.zone, new Map())
    const hosts = zones.get(m.zone)
    if (!hosts.has(m.host)) hosts.set(m.host, [])
    hosts.get(m.host).push(m)
  }
  // Members lost from the view (the newest view change's) stay visible, struck through.
  const lost = s.views.at(-1)?.lost ?? []
  const leader = s.view.leader
  $('view-line').textContent =
    `view ${s.view.epoch}: ${s.view.members.length} members${s.view.worldSize === undefined ? '' : `, world size ${s.view.worldSize}`}${leader === undefined ? '' : `, leader ${who(leader)}`}${s.view.joining.length > 0 ? `, ${s.view.joining.length} joining` : ''}`
  const zoneEls = [...zones.entries()].map(([zone, hosts]) =>
    el(
      'div',
      { class: 'zone' },
      el('div', { class: 'label' }, `zone ${zone}`),
      [...hosts.entries()].map(([host, ms]) =>
        el(
          'div',
          { class: 'host' },
          el('div', { class: 'label' }, host),
          ms.map(m =>
            el(
              'span',
              {
                class: `member ${m.live ? `role-${m.role}` : 'dead'}${m.self ? ' self' : ''}`,
                title: `${m.id}${m.self ? ' (this node)' : ''}`,
                'data-rank': String(m.rank)
              },
              m.role === 'rank' ? `rank ${m.rank}` : m.role === 'spare' ? 'spare' : `#${m.rank}`,
              m.live ? '' : ' (dead)'
            )
          )
        )
      )
    )
  )
  const goneEls = lost.map(id => el('span', { class: 'member gone', title: id }, `${who(id)}: lost`))
  $('mesh').replaceChildren(el('div', { class: 'zones' }, zoneEls), goneEls.length > 0 ? el('div', {}, 'lost in the last view change: ', goneEls) : '')
}

function chart(key, target, opts, data) {
  const c = state.charts[key]
  const width = Math.max(300, $(target).clientWidth)
  if (c !== undefined && c.series.length === opts.series.length) {
    c.setData(data)
    if (Math.abs(c.width - width) > 4) c.setSize({ width, height: 220 })
    return
  }
  c?.destroy()
  $(target).replaceChildren()
  state.charts[key] = new uPlot({ width, height: 220, ...opts }, data, $(target))
}

const axis = label => ({ stroke: '#8793a0', grid: { stroke: '#2a323c' }, ticks: { stroke: '#2a323c' }, label, labelSize: 18 })

function renderCharts() {
  const loss = state.series.loss?.points ?? []
  document.body.dataset.lossPoints = String(loss.length)
  chart(
    'loss',
    'loss-chart',
    { scales: { x: { time: false } }, axes: [axis('step'), axis('loss')], series: [{ label: 'step' }, { label: 'loss', stroke: '#3b82f6', width: 2 }] },
    [loss.map(p => p[1]), loss.map(p => p[2])]
  )
  // Tokens/s per rank, by step: one line per node that trained (labelled by its host).
  const keys = Object.keys(state.series)
    .filter(k => k.startsWith('rank:'))
    .sort()
  const steps = [...new Set(keys.flatMap(k => state.series[k].points.map(p => p[1])))].sort((a, b) => a - b)
  const cols = keys.map(k => {
    const byStep = new Map(state.series[k].points.map(p => [p[1], p[2]]))
    return steps.map(x => byStep.get(x) ?? null)
  })
  chart(
    `tps${keys.length}`,
    'tps-chart',
    {
      scales: { x: { time: false } },
      axes: [axis('step'), axis('tokens/s')],
      series: [{ label: 'step' }, ...keys.map((k, i) => ({ label: who(k.slice(5)), stroke: COLORS[i % COLORS.length], width: 1.5, spanGaps: true }))]
    },
    [steps, ...cols]
  )
  const tiers = state.series.tiers?.points ?? []
  chart(
    'tiers',
    'tier-chart',
    {
      scales: { x: { time: false } },
      axes: [axis('seconds since this node started'), axis('MiB')],
      series: [
        { label: 's' },
        { label: 'same host', stroke: '#22c55e', width: 2 },
        { label: 'same zone', stroke: '#3b82f6', width: 2 },
        { label: 'across zones', stroke: '#ef4444', width: 2 }
      ]
    },
    [tiers.map(p => p[0] / 1000), tiers.map(p => p[1] / 2 ** 20), tiers.map(p => p[2] / 2 ** 20), tiers.map(p => p[3] / 2 ** 20)]
  )
}

function renderTimeline(s) {
  const items = s.timeline.slice().reverse()
  $('timeline').replaceChildren(
    ...items.map(e =>
      el(
        'li',
        { 'data-kind': e.kind },
        el('span', { class: 't' }, secs(e.t)),
        el('span', { class: `kind ${e.kind}` }, e.kind),
        e.text,
        e.ms === undefined ? '' : el('span', { class: 'muted' }, ` (${Math.round(e.ms)} ms)`)
      )
    )
  )
  // A strip over the node's lifetime: one tick per entry, coloured by kind.
  const svg = $('timeline-strip')
  const w = svg.clientWidth || 500
  const end = Math.max(s.t, 1)
  const color = { lost: '#ef4444', failed: '#ef4444', recovery: '#22c55e', view: '#93c5fd', joined: '#a78bfa', paused: '#f59e0b', done: '#34d399' }
  const ns = 'http://www.w3.org/2000/svg'
  const kids = []
  const axisLine = document.createElementNS(ns, 'line')
  for (const [k, v] of Object.entries({ x1: 0, x2: w, y1: 17, y2: 17, stroke: '#2a323c' })) axisLine.setAttribute(k, String(v))
  kids.push(axisLine)
  for (const e of s.timeline) {
    const x = Math.round((e.t / end) * (w - 4)) + 2
    const r = document.createElementNS(ns, 'rect')
    const wide = e.ms === undefined ? 3 : Math.max(3, (e.ms / end) * w)
    for (const [k, v] of Object.entries({ x, y: 6, width: wide, height: 22, fill: color[e.kind] ?? '#94a3b8' })) r.setAttribute(k, String(v))
    const title = document.createElementNS(ns, 'title')
    title.textContent = `${secs(e.t)} ${e.kind}: ${e.text}`
    r.append(title)
    kids.push(r)
  }
  svg.replaceChildren(...kids)
}

function renderPlacement(s) {
  if (s.placement.length === 0) {
    $('placement').replaceChildren(el('p', { class: 'muted' }, 'no complete snapshot yet (or snapshots are off)'))
    return
  }
  const live = new Set(s.view.members.map(m => m.id))
  const width = Math.max(...s.placement.map(p => p.holders.length))
  const head = el(
    'tr',
    {},
    el('th', {}, 'owner'),
    el('th', {}, 'rank'),
    el('th', {}, 'version'),
    el('th', {}, 'view'),
    el('th', {}, 'code'),
    el('th', { colspan: String(width) }, 'fragments → holder')
  )
  const rows = s.placement
    .slice()
    .sort((a, b) => a.rank - b.rank)
    .map(p =>
      el(
        'tr',
        { 'data-owner': p.owner },
        el('td', { title: p.owner }, who(p.owner)),
        el('td', { class: 'num' }, String(p.rank)),
        el('td', { class: 'num' }, String(p.version)),
        el('td', { class: 'num' }, String(p.epoch)),
        el('td', {}, `${p.k}+${p.m}`),
        p.holders.map((h, i) =>
          el(
            'td',
            {},
            el(
              'span',
              { class: `frag ${live.has(h) ? (i < p.k ? 'data' : 'parity') : 'missing'}`, title: `${i < p.k ? 'data' : 'parity'} fragment ${i} on ${h}` },
              `${i < p.k ? 'd' : 'p'}${i}: ${who(h)}`
            )
          )
        )
      )
    )
  $('placement').replaceChildren(el('table', {}, el('thead', {}, head), el('tbody', {}, rows)))
}

function renderNodes(s) {
  const inView = new Set(s.view.members.map(m => m.id))
  const head = el(
    'tr',
    {},
    ['node', 'zone', 'role', 'rank', 'step', 'loss', 'tokens/s', 'snapshot', 'sent host / zone / wan MiB', 'heard', 'doing'].map(h => el('th', {}, h))
  )
  const rows = Object.entries(s.nodes)
    .sort((a, b) => (a[1].rank ?? 1e9) - (b[1].rank ?? 1e9))
    .map(([id, n]) =>
      el(
        'tr',
        {},
        el('td', { title: id }, n.host),
        el('td', {}, n.zone),
        el('td', {}, inView.has(id) ? n.role : `${n.role}, left the view`),
        el('td', { class: 'num' }, n.rank === undefined ? '–' : String(n.rank)),
        el('td', { class: 'num' }, `${n.step} / ${n.steps}`),
        el('td', { class: 'num' }, num(n.loss)),
        el('td', { class: 'num' }, n.tokensPerS === undefined ? '–' : Math.round(n.tokensPerS).toLocaleString()),
        el('td', { class: 'num' }, n.snapshotStep === undefined ? '–' : String(n.snapshotStep)),
        el('td', { class: 'num' }, `${mib(n.bytes.host)} / ${mib(n.bytes.zone)} / ${mib(n.bytes.wan)}`),
        el('td', { class: 'num' }, `${secs(Math.max(0, s.t - n.t))} ago`),
        el('td', {}, n.phase)
      )
    )
  $('nodes').replaceChildren(el('table', {}, el('thead', {}, head), el('tbody', {}, rows)))
}

function renderViews(s) {
  $('views').replaceChildren(
    ...s.views
      .slice()
      .reverse()
      .map(v =>
        el(
          'li',
          {},
          `${secs(v.t)}: view ${v.epoch}, ${v.members} members`,
          v.lost.length > 0 ? el('span', { class: 'muted' }, ` · lost ${v.lost.map(who).join(', ')}`) : '',
          v.joined.length > 0 ? el('span', { class: 'muted' }, ` · joined ${v.joined.map(who).join(', ')}`) : ''
        )
      )
  )
}

function renderConfig(s) {
  $('served-by').textContent = `(served by ${s.self.host}, zone ${s.self.zone})`
  $('config').replaceChildren(...Object.entries(s.config).map(([k, v]) => el('tr', {}, el('th', {}, k), el('td', {}, String(v)))))
  const links = Object.entries(s.nodes)
    .filter(([id, n]) => id !== s.self.id && n.dashboard !== undefined)
    .map(([, n]) => el('a', { href: n.dashboard }, `${n.host}'s dashboard`))
  $('others').replaceChildren(...(links.length > 0 ? [el('h2', {}, 'Other nodes’ dashboards'), ...links] : []))
}

window.addEventListener('resize', () => render())
connect()
