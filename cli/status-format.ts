import type { Connectivity } from '../mesh/index.ts'
import type { NodeStatus } from '../node/index.ts'

/**
 * What a relayed path costs, as measured on the NAT harness (docs/PERFORMANCE.md, "Through
 * NAT"): named in the warning so a user can weigh it.
 */
export const RELAY_COST = 'on the NAT harness a relayed path moved 0.09x of a direct one unshaped (54 vs 620 MB/s) and 0.77x on 200 Mbit/s links'

/** One line: how this node is reached. */
export function reachLine(c: Connectivity): string {
  if (c.reach === 'public') return `reachability: public (peers see it at its own address ${c.reachedAt ?? '?'})`
  if (c.reach === 'unknown') return 'reachability: unknown (no peer has told where it sees this node yet)'
  const punch =
    c.punches.ok > 0
      ? `hole punching works (${c.punches.ok} punched, ${c.punches.failed} failed)`
      : c.punches.failed > 0
        ? `relayed only: ${c.punches.failed} hole punch(es) failed, none worked (a NAT that maps ports unpredictably)`
        : 'hole punching not tried yet'
  return `reachability: behind NAT at ${c.externalIp ?? '?'}; ${punch}`
}

/** The network section of a status: reachability, relays, and a warning naming relayed peers. */
export function formatNetwork(c: Connectivity): string[] {
  const lines = [reachLine(c)]
  lines.push(`relays held: ${c.relays.length === 0 ? 'none' : c.relays.join(', ')}; reservations served: ${c.relayServing}`)
  const direct = c.peers.filter(p => p.link === 'direct').length
  lines.push(`peers: ${direct} direct, ${c.peers.length - direct} relayed`)
  const slow = c.peers.filter(p => p.bulk === 'libp2p' || (p.link === 'relayed' && p.bulk !== 'punched'))
  if (slow.length > 0)
    lines.push(
      `WARNING: bulk bytes to ${slow.map(p => p.id).join(', ')} ride ${slow.some(p => p.link === 'relayed') ? 'a relay' : 'libp2p streams'}: ${RELAY_COST}`
    )
  return lines
}

/** Renders a node's status as a short human table. */
export function formatStatus(raw: unknown): string {
  const s = raw as NodeStatus
  const m = s.membership
  const lines = [
    `run ${s.run}: node ${s.peerId} (zeromesh ${s.version}, up ${s.uptimeS} s, cpu ${(s.cpuMs / 1000).toFixed(1)} s)`,
    m.epoch === 0
      ? `no view yet${m.joining.length > 0 ? ` (${m.joining.length} other node(s) waiting)` : ''}`
      : `view ${m.epoch}: ${m.members.length} members, ${m.members.filter(x => x.live).length} live${m.paused ? ', PAUSED (no majority)' : ''}${m.member ? '' : ', this node is not a member'}`
  ]
  if (m.members.length > 0) {
    const rows = [['rank', 'peer', 'zone', 'host', 'live', 'phi', 'last heartbeat']]
    for (const x of m.members) {
      const name = `${x.id}${x.id === s.peerId ? ' (this node)' : ''}${x.id === m.leader ? ' (leader)' : ''}`
      const watched = x.id !== s.peerId && x.monitored
      rows.push([
        String(x.rank),
        name,
        x.zone,
        x.host,
        x.live ? 'yes' : 'NO',
        watched ? String(x.phi) : '-',
        !watched ? '-' : x.lastHeartbeatAgeMs < 0 ? 'never' : `${x.lastHeartbeatAgeMs} ms ago`
      ])
    }
    const widths = rows[0]!.map((_, i) => Math.max(...rows.map(r => r[i]!.length)))
    for (const r of rows)
      lines.push(
        r
          .map((c, i) => c.padEnd(widths[i]!))
          .join('  ')
          .trimEnd()
      )
  }
  if (m.joining.length > 0) lines.push(`joining: ${m.joining.join(', ')}`)
  const t = s.training
  if (t !== undefined) {
    const who = t.role === 'rank' || t.role === 'done' ? `rank ${t.rank} of ${t.worldSize}` : t.role
    const loss = t.loss === undefined ? '' : `, loss ${t.loss.toFixed(4)}`
    const speed = t.tokensPerS === undefined ? '' : `, ${Math.round(t.tokensPerS)} tokens/s`
    const snap = t.snapshotStep === undefined ? '' : `, snapshot at step ${t.snapshotStep}`
    lines.push(
      `training: ${who}, step ${t.step}/${t.steps}${loss}${speed}${snap}${t.recoveries.length > 0 ? `, ${t.recoveries.length} recovery(ies)` : ''}${t.error === undefined ? '' : `; failed: ${t.error}`}`
    )
    if (t.phase !== undefined && t.phase !== '') lines.push(`now: ${t.phase}`)
  }
  if (s.network !== undefined) lines.push(...formatNetwork(s.network))
  if (m.leader !== undefined && m.leader !== s.peerId) lines.push('members report to the leader, which watches them all; this node watches the leader')
  lines.push(`a crashed member is detected within ~${m.detectionBoundMs} ms`)
  return lines.join('\n')
}
