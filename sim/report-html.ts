import { formatBytes, timelineSvg } from './report.ts'
import type { ScenarioReport } from './scenario.ts'
import type { TrainRunResult } from './train-run.ts'

/**
 * `zeromesh sim … --html report.html`: a scenario's report as one self-contained page (inline
 * style and SVG, no script, nothing fetched), for a person to read: the verdict and how to
 * replay it, the invariants, the timeline, views, faults and traffic of a membership scenario,
 * or the progress, recoveries and bytes of a training one.
 */

function esc(s: string): string {
  return s.replace(/[<>&"]/g, c => ({ '<': '&lt;', '>': '&gt;', '&': '&amp;', '"': '&quot;' })[c]!)
}

const STYLE = `
body { font: 14px/1.45 system-ui, sans-serif; margin: 24px auto; max-width: 1040px; color: #1f2933; padding: 0 16px; }
h1 { font-size: 22px; margin-bottom: 4px; } h2 { font-size: 16px; margin-top: 28px; border-bottom: 1px solid #e4e7eb; padding-bottom: 4px; }
.verdict { display: inline-block; padding: 2px 10px; border-radius: 10px; color: #fff; font-weight: 600; }
.pass { background: #2f9e44; } .fail { background: #e03131; }
.muted { color: #7b8794; } code { background: #f5f7fa; padding: 1px 5px; border-radius: 4px; }
table { border-collapse: collapse; margin: 8px 0; } th, td { text-align: left; padding: 3px 10px; border-bottom: 1px solid #e4e7eb; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
.cards { display: flex; gap: 12px; flex-wrap: wrap; } .card { border: 1px solid #e4e7eb; border-radius: 8px; padding: 8px 12px; min-width: 200px; }
.ok { color: #2f9e44; font-weight: 600; } .bad { color: #e03131; font-weight: 600; }
svg { max-width: 100%; height: auto; }
`

function page(title: string, body: string[]): string {
  return `<!doctype html>\n<html lang="en"><head><meta charset="utf-8"><title>${esc(title)}</title><style>${STYLE}</style></head><body>\n${body.join('\n')}\n</body></html>\n`
}

function table(head: string[], rows: Array<Array<string | number>>): string {
  const cell = (c: string | number): string => (typeof c === 'number' ? `<td class="num">${c}</td>` : `<td>${c}</td>`)
  return `<table><thead><tr>${head.map(h => `<th>${esc(h)}</th>`).join('')}</tr></thead><tbody>${rows.map(r => `<tr>${r.map(cell).join('')}</tr>`).join('')}</tbody></table>`
}

/** A line plot of (x, y) points in SVG, with its axes' ranges labelled. */
export function linePlot(
  points: ReadonlyArray<readonly [number, number]>,
  o: { title: string; x: string; y: string; width?: number; height?: number }
): string {
  const w = o.width ?? 640
  const h = o.height ?? 220
  const left = 64
  const bottom = 36
  const pw = w - left - 16
  const ph = h - bottom - 24
  if (points.length === 0) return `<p class="muted">${esc(o.title)}: no points</p>`
  const xs = points.map(p => p[0])
  const ys = points.map(p => p[1])
  const [x0, x1] = [Math.min(...xs), Math.max(...xs)]
  const [y0, y1] = [Math.min(0, ...ys), Math.max(...ys)]
  const sx = (x: number): number => left + (x1 === x0 ? 0 : ((x - x0) / (x1 - x0)) * pw)
  const sy = (y: number): number => 24 + ph - (y1 === y0 ? 0 : ((y - y0) / (y1 - y0)) * ph)
  const path = points.map((p, i) => `${i === 0 ? 'M' : 'L'}${sx(p[0]).toFixed(1)},${sy(p[1]).toFixed(1)}`).join(' ')
  const fmt = (v: number): string => (Math.abs(v) >= 1000 ? v.toExponential(2) : Number(v.toPrecision(4)).toString())
  return [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${w}" height="${h}" font-size="11" font-family="sans-serif">`,
    `<text x="${left}" y="14" font-size="13">${esc(o.title)}</text>`,
    `<rect x="${left}" y="24" width="${pw}" height="${ph}" fill="#fafbfc" stroke="#e4e7eb"/>`,
    `<path d="${path}" fill="none" stroke="#1c7ed6" stroke-width="1.6"/>`,
    `<text x="${left - 6}" y="${28}" text-anchor="end">${fmt(y1)}</text><text x="${left - 6}" y="${24 + ph}" text-anchor="end">${fmt(y0)}</text>`,
    `<text x="${left}" y="${h - 18}">${fmt(x0)}</text><text x="${left + pw}" y="${h - 18}" text-anchor="end">${fmt(x1)}</text>`,
    `<text x="${left + pw / 2}" y="${h - 4}" text-anchor="middle" fill="#7b8794">${esc(o.x)}</text>`,
    `<text x="12" y="${24 + ph / 2}" transform="rotate(-90 12 ${24 + ph / 2})" text-anchor="middle" fill="#7b8794">${esc(o.y)}</text>`,
    '</svg>'
  ].join('')
}

/** Horizontal bars, one per labelled value (bytes). */
function byteBars(values: Array<[string, number]>): string {
  const max = Math.max(1, ...values.map(v => v[1]))
  const row = 22
  const w = 640
  const parts = values.map(([label, v], i) => {
    const bw = Math.max(1, (v / max) * (w - 260))
    return `<text x="0" y="${i * row + 15}">${esc(label)}</text><rect x="120" y="${i * row + 4}" width="${bw.toFixed(1)}" height="14" fill="#1c7ed6"/><text x="${(126 + bw).toFixed(1)}" y="${i * row + 15}">${esc(formatBytes(v))}</text>`
  })
  return `<svg xmlns="http://www.w3.org/2000/svg" width="${w}" height="${values.length * row + 6}" font-size="12" font-family="sans-serif">${parts.join('')}</svg>`
}

function header(title: string, ok: boolean, lines: string[], replay: string): string[] {
  return [
    `<h1>${esc(title)} <span class="verdict ${ok ? 'pass' : 'fail'}">${ok ? 'PASS' : 'FAIL'}</span></h1>`,
    ...lines.map(l => `<div class="muted">${esc(l)}</div>`),
    `<p>Replay exactly: <code>${esc(replay)}</code></p>`
  ]
}

/** The page of a membership scenario's report. */
export function membershipReportHtml(r: ScenarioReport, replay: string): string {
  const inv = r.invariants
  const card = (name: string, ok: boolean, text: string): string =>
    `<div class="card"><div>${esc(name)}</div><div class="${ok ? 'ok' : 'bad'}">${ok ? 'ok' : 'violated'}</div><div class="muted">${esc(text)}</div></div>`
  // Each epoch: when it was first installed, by whom, and how many members it had.
  const epochs = new Map<number, { at: number; members: number; node: string }>()
  for (const v of r.views) if (!epochs.has(v.epoch)) epochs.set(v.epoch, { at: v.at, members: v.members, node: v.node })
  return page(`zeromesh sim: ${r.scenario}`, [
    ...header(
      `Scenario ${r.scenario}`,
      r.ok,
      [`${r.nodes} nodes, ${(r.durationMs / 1000).toFixed(1)} s simulated, seed ${r.seed}`, `trace ${r.traceHash.slice(0, 16)} (${r.events} events)`],
      replay
    ),
    '<h2>Invariants</h2>',
    `<div class="cards">${[
      card('safety', inv.safety.ok, inv.safety.violations[0] ?? 'no two views with one epoch'),
      card(
        'liveness',
        inv.liveness.ok,
        inv.liveness.convergedAfterMs !== undefined
          ? `one view with every live node ${inv.liveness.convergedAfterMs} ms after the end`
          : 'not converged or not asserted'
      ),
      card(
        'detection',
        inv.detection.ok,
        inv.detection.worstMs !== undefined
          ? `worst crash left every view after ${inv.detection.worstMs} ms${inv.detection.limitMs === undefined ? '' : ` (limit ${inv.detection.limitMs} ms)`}`
          : 'no crash to detect'
      )
    ].join('')}</div>`,
    '<h2>Timeline</h2>',
    '<p class="muted">One row per node: up green, paused amber, down grey; a blue tick per new view, a red line per fault. Hover for details.</p>',
    timelineSvg(r),
    '<h2>Faults</h2>',
    r.faults.length === 0
      ? '<p class="muted">none</p>'
      : table(
          ['at', 'fault', 'first view without it', 'every view without it'],
          r.faults.map(f => [
            `${(f.at / 1000).toFixed(2)} s`,
            esc(f.fault),
            f.firstViewChangeMs === undefined ? '–' : `+${Math.round(f.firstViewChangeMs)} ms`,
            f.allViewsChangedMs === undefined ? '–' : `+${Math.round(f.allViewsChangedMs)} ms`
          ])
        ),
    '<h2>Views</h2>',
    table(
      ['epoch', 'first installed', 'by', 'members'],
      [...epochs.entries()].map(([epoch, e]) => [epoch, `${(e.at / 1000).toFixed(2)} s`, esc(e.node), e.members])
    ),
    '<h2>Traffic by tier</h2>',
    byteBars(Object.entries(r.tiers).map(([tier, t]) => [`${tier} (${t.messages} msgs)`, t.bytes]))
  ])
}

/** The page of a training scenario's report. */
export function trainReportHtml(r: TrainRunResult & { scenario: string; ok: boolean }, replay: string): string {
  const commits = r.commits ?? []
  return page(`zeromesh sim: ${r.scenario}`, [
    ...header(
      `Training scenario ${r.scenario}`,
      r.ok,
      [
        `${r.steps} steps, ${(r.simMs / 1000).toFixed(1)} s simulated${r.stepMs === undefined ? '' : `, ${Math.round(r.stepMs)} simulated ms per step`}, seed ${r.seed}`,
        `trace ${r.traceHash.slice(0, 16)} (${r.events} events)${r.weightsHash === undefined ? '' : `, final weights ${r.weightsHash.slice(0, 16)}`}`
      ],
      replay
    ),
    '<h2>Result</h2>',
    table(
      ['', 'this run', ...(r.reference === undefined ? [] : ['fault-free reference'])],
      [
        ['loss (last step)', r.loss?.toFixed(4) ?? '–', ...(r.reference === undefined ? [] : [''])],
        ['held-out loss', r.evalLoss?.toFixed(4) ?? '–', ...(r.reference === undefined ? [] : [r.reference.evalLoss?.toFixed(4) ?? '–'])],
        ['final weights', r.weightsHash?.slice(0, 16) ?? '–', ...(r.reference === undefined ? [] : [r.reference.weightsHash?.slice(0, 16) ?? '–'])],
        ['simulated time', `${(r.simMs / 1000).toFixed(1)} s`, ...(r.reference === undefined ? [] : [`${(r.reference.simMs / 1000).toFixed(1)} s`])]
      ]
    ),
    r.violations.length === 0 ? '<p class="ok">every invariant held</p>' : `<ul>${r.violations.map(v => `<li class="bad">${esc(v)}</li>`).join('')}</ul>`,
    '<h2>Progress</h2>',
    linePlot(
      commits.map(c => [c.ms / 1000, c.step] as const),
      { title: 'steps committed over simulated time (a flat stretch is a failure being detected and recovered)', x: 'simulated s', y: 'step' }
    ),
    linePlot(
      commits.map(c => [c.ms / 1000, c.wanBytes / 2 ** 20] as const),
      { title: 'bytes across zones so far (MiB)', x: 'simulated s', y: 'MiB' }
    ),
    '<h2>Recoveries</h2>',
    r.recoveries.length === 0
      ? '<p class="muted">none</p>'
      : table(
          ['mode', 'lost ranks', 'from step', 'took'],
          r.recoveries.map(x => [x.mode, x.lost.join(', '), x.fromStep, `${Math.round(x.ms)} ms`])
        ),
    ...(r.snapshotBytes === undefined
      ? []
      : [
          '<h2>Snapshot bytes by link tier</h2>',
          byteBars([
            ['same host', r.snapshotBytes.host],
            ['same zone', r.snapshotBytes.zone],
            ['across zones', r.snapshotBytes.wan]
          ])
        ])
  ])
}
