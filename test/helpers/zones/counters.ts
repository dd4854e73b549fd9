import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { InvalidArgumentError } from '../../../core/index.ts'
import { findNft, run } from './commands.ts'
import { ZonesCommandError } from './errors.ts'
import type { Zones } from './topology.ts'

/**
 * The bytes that leave the zones, split by the connection they belong to: nftables counters in
 * the core namespace, where the WAN bridge takes a frame in from a zone's uplink (`iifname
 * wan<z>`: after the uplink's tbf, so a frame it dropped is not counted, as the uplink's own
 * counters do not count it). A node's libp2p connections (membership heartbeats,
 * gossip, direct messages, failure notices) all have one end on its libp2p listen port, so
 * TCP frames with an end on one of `ports` are libp2p's; other TCP frames are the bulk
 * channel's (mesh/bulk.ts: collectives, snapshot fragments); the rest is anything else (ARP,
 * multicast). The bridge hook sees a frame without its 14-byte Ethernet header, which is added
 * back per packet, so the three add up to the uplinks' counters.
 */
export interface PortSplit {
  /** Frames of TCP connections with an end on one of the ports given (libp2p). */
  listed: number
  /** Frames of other TCP connections (the bulk channel). */
  otherTcp: number
  /** Everything else. */
  rest: number
}

export interface PortCounters {
  /** Counts TCP frames with an end on these ports as `listed` from now on. */
  add(ports: readonly number[], opts?: { signal?: AbortSignal }): Promise<void>
  /** Bytes (Ethernet frames) that left every zone so far, by kind. */
  read(opts?: { signal?: AbortSignal }): Promise<PortSplit>
}

const TABLE = 'zmsplit'
const ETHERNET_HEADER = 14
const KINDS = ['listed', 'otherTcp', 'rest'] as const

/** The ruleset: per zone uplink, one counter per kind; the first that matches counts a frame. */
export function splitRules(zones: number): string {
  const rules: string[] = []
  for (let z = 0; z < zones; z++) {
    const out = `iifname "wan${z}"`
    rules.push(`    ${out} tcp sport @ports counter accept comment "listed"`)
    rules.push(`    ${out} tcp dport @ports counter accept comment "listed"`)
    rules.push(`    ${out} meta l4proto tcp counter accept comment "otherTcp"`)
    rules.push(`    ${out} counter accept comment "rest"`)
  }
  return [
    `table bridge ${TABLE} {`,
    '  set ports { type inet_service; }',
    '  chain out {',
    '    type filter hook forward priority 0; policy accept;',
    ...rules,
    '  }',
    '}',
    ''
  ].join('\n')
}

/** Sums `nft -j list table` counters by their rule's comment (frames: bytes plus an Ethernet header per packet). */
export function parseSplit(json: string): PortSplit {
  const parsed = JSON.parse(json) as { nftables?: Array<{ rule?: { comment?: string; expr?: Array<{ counter?: { packets: number; bytes: number } }> } }> }
  const out: PortSplit = { listed: 0, otherTcp: 0, rest: 0 }
  let seen = 0
  for (const item of parsed.nftables ?? []) {
    const kind = item.rule?.comment
    const counter = item.rule?.expr?.find(e => e.counter !== undefined)?.counter
    if (kind === undefined || counter === undefined || !(KINDS as readonly string[]).includes(kind)) continue
    out[kind as (typeof KINDS)[number]] += counter.bytes + ETHERNET_HEADER * counter.packets
    seen++
  }
  if (seen === 0) throw new ZonesCommandError(`nft list table: no counters in ${json.slice(0, 200)}`)
  return out
}

/** Installs the counters on a zone topology (removed with its namespaces). Needs nftables. */
export async function countByPort(z: Zones, opts: { signal?: AbortSignal } = {}): Promise<PortCounters> {
  const nft = findNft()
  const core = `${z.prefix}core`
  const zones = new Set(z.hosts.map(h => h.zone)).size
  const o = opts.signal === undefined ? {} : { signal: opts.signal }
  const inCore = (args: readonly string[], signal?: AbortSignal): Promise<string> =>
    run(z.tools.ip, ['netns', 'exec', core, nft, ...args], signal === undefined ? o : { signal })
  // A file, not stdin (see nat.ts: under ava's worker threads `nft -f -` read nothing).
  const dir = mkdtempSync(join(tmpdir(), 'zm-split-'))
  try {
    const file = join(dir, 'split.nft')
    writeFileSync(file, splitRules(zones))
    await inCore(['-f', file])
  } finally {
    rmSync(dir, { recursive: true, force: true })
  }
  return {
    async add(ports, a = {}) {
      for (const p of ports) if (!Number.isInteger(p) || p < 1 || p > 65535) throw new InvalidArgumentError(`not a TCP port: ${p}`)
      if (ports.length > 0) await inCore(['add', 'element', 'bridge', TABLE, 'ports', `{ ${ports.join(', ')} }`], a.signal)
    },
    async read(a = {}) {
      return parseSplit(await inCore(['-j', 'list', 'table', 'bridge', TABLE], a.signal))
    }
  }
}
