import type { ScenarioReport } from './scenario.ts'

/** A short human summary of a scenario run. */
export function formatReport(r: ScenarioReport): string {
  const inv = r.invariants
  const lines = [
    `scenario ${r.scenario}: ${r.nodes} nodes, ${(r.durationMs / 1000).toFixed(1)} s simulated, seed ${r.seed}`,
    `trace ${r.traceHash.slice(0, 16)} (${r.events} events); replay with --seed ${r.seed}`,
    `views installed: ${r.maxEpoch} epochs`,
    `safety:    ${inv.safety.ok ? 'ok' : 'VIOLATED'}${inv.safety.violations.length > 0 ? ` - ${inv.safety.violations[0]}` : ' (no two views with one epoch)'}`,
    `liveness:  ${inv.liveness.ok ? 'ok' : 'FAILED'}${inv.liveness.convergedAfterMs !== undefined ? ` (one view with every live node ${inv.liveness.convergedAfterMs} ms after the end)` : inv.liveness.limitMs === undefined ? ' (not asserted)' : ` (no single view within ${inv.liveness.limitMs} ms)`}`,
    `detection: ${inv.detection.ok ? 'ok' : 'TOO SLOW'}${inv.detection.worstMs !== undefined ? ` (worst crash out of every view after ${inv.detection.worstMs} ms${inv.detection.limitMs !== undefined ? `, limit ${inv.detection.limitMs} ms` : ''})` : ''}`
  ]
  const crashes = r.faults.filter(f => f.allViewsChangedMs !== undefined || f.firstViewChangeMs !== undefined)
  if (crashes.length > 0) {
    lines.push('faults:')
    for (const f of r.faults) {
      const extra =
        f.firstViewChangeMs !== undefined
          ? `  first view without it +${Math.round(f.firstViewChangeMs)} ms, all views +${f.allViewsChangedMs === undefined ? '?' : Math.round(f.allViewsChangedMs)} ms`
          : ''
      lines.push(`  ${(f.at / 1000).toFixed(2).padStart(8)} s  ${f.fault}${extra}`)
    }
  }
  lines.push('traffic by tier:')
  for (const [tier, t] of Object.entries(r.tiers))
    lines.push(`  ${tier.padEnd(4)} ${String(t.messages).padStart(10)} messages  ${formatBytes(t.bytes).padStart(10)}`)
  lines.push(r.ok ? 'result: PASS' : 'result: FAIL')
  return lines.join('\n')
}

/** Bytes for people: B, KiB, MiB or GiB. */
export function formatBytes(n: number): string {
  if (n < 1024) return `${n} B`
  if (n < 1024 ** 2) return `${(n / 1024).toFixed(1)} KiB`
  if (n < 1024 ** 3) return `${(n / 1024 ** 2).toFixed(1)} MiB`
  return `${(n / 1024 ** 3).toFixed(2)} GiB`
}

function esc(s: string): string {
  return s.replace(/[<>&"]/g, c => ({ '<': '&lt;', '>': '&gt;', '&': '&amp;', '"': '&quot;' })[c]!)
}

/**
 * A timeline picture: one row per node (green up, grey down, amber paused), a tick for each
 * new view epoch, and a red line at each fault. Self-contained SVG, no scripts.
 */
export function timelineSvg(r: ScenarioReport, maxRows = 64): string {
  const ids = [...new Set(r.timeline.map(t => t.node))].sort().slice(0, maxRows)
  const left = 60
  const top = 40
  const row = 12
  const width = 960
  const plot = width - left - 20
  const end = Math.max(r.durationMs, ...r.timeline.map(t => t.at), 1)
  const x = (t: number): number => left + (t / end) * plot
  const height = top + ids.length * row + 40
  const colour = { up: '#4caf50', down: '#bdbdbd', paused: '#ffb300' }
  const parts: string[] = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" font-family="sans-serif" font-size="10">`,
    `<text x="${left}" y="16" font-size="13">${esc(r.scenario)}: ${r.nodes} nodes, seed ${r.seed}, ${r.ok ? 'PASS' : 'FAIL'}</text>`,
    `<text x="${left}" y="30" fill="#555">views (ticks), faults (red), node state: up green, paused amber, down grey</text>`
  ]
  ids.forEach((id, i) => {
    const y = top + i * row
    parts.push(`<text x="4" y="${y + 9}">${esc(id)}</text>`)
    const events = r.timeline.filter(t => t.node === id)
    events.forEach((e, k) => {
      const until = events[k + 1]?.at ?? end
      parts.push(
        `<rect x="${x(e.at).toFixed(1)}" y="${y}" width="${Math.max(0.5, x(until) - x(e.at)).toFixed(1)}" height="${row - 2}" fill="${colour[e.state]}"><title>${esc(id)} ${e.state} from ${e.at.toFixed(0)} ms</title></rect>`
      )
    })
  })
  const bottom = top + ids.length * row
  for (const v of r.views) {
    parts.push(
      `<line x1="${x(v.at).toFixed(1)}" y1="${bottom + 2}" x2="${x(v.at).toFixed(1)}" y2="${bottom + 12}" stroke="#1565c0"><title>view ${v.epoch}: ${v.members} members at ${v.at.toFixed(0)} ms</title></line>`
    )
  }
  for (const f of r.faults) {
    parts.push(
      `<line x1="${x(f.at).toFixed(1)}" y1="${top - 4}" x2="${x(f.at).toFixed(1)}" y2="${bottom}" stroke="#e53935" stroke-width="0.8"><title>${esc(f.fault)} at ${f.at.toFixed(0)} ms</title></line>`
    )
  }
  parts.push(`<text x="${left}" y="${bottom + 26}" fill="#555">0 ms</text><text x="${width - 80}" y="${bottom + 26}" fill="#555">${end.toFixed(0)} ms</text>`)
  parts.push('</svg>')
  return parts.join('\n')
}
