import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { InvalidArgumentError } from '../../../core/index.ts'
import { NamespaceRefusedError } from './errors.ts'
import { findNft, findTools, newPrefix, refused, removeNamespacesSync, run, sweepStale, type Tools } from './commands.ts'
import { ZONES_LIMITS as L } from './limits.ts'
import { cleanupOnExit, forget, tbfArgs, track, type ZoneHost } from './topology.ts'

/**
 * Homes behind NAT routers and public hosts on one "internet", built from network namespaces:
 *
 *   public host ns  eth0 45.77.0.<10+i>/24 ─────────── inet (bridge, in <prefix>core)
 *   router ns       wan0 45.77.0.<1+k>/24  ─────────── inet
 *                   lan0 192.168.<k+1>.1/24 ── home<k> (bridge, in the router ns)
 *   home host ns    eth0 192.168.<k+1>.<10+i>/24, default route via 192.168.<k+1>.1
 *
 * Each router forwards, masquerades what leaves wan0 and, as a home router does, drops every
 * packet from the internet that does not belong to a connection a home host opened (`ct state
 * established,related`); hosts of one home reach each other freely. Its NAT is one of:
 * - `cone`: plain `masquerade`. Linux keeps a connection's source port when it is free, so
 *   a host that binds port p is seen at <router>:p by everyone: the mapping is endpoint
 *   independent and TCP hole punching (a simultaneous open from both sides) gets through.
 * - `symmetric`: `masquerade random`: every connection gets a random source port, so no peer
 *   can predict where to send, and hole punching fails: such a home is reachable only through
 *   a relay.
 *
 * 45.77.0.0/24 is an address range that libp2p counts as public; it exists only inside these
 * namespaces (no namespace here has a route anywhere else). Each host's link to its bridge can
 * carry a tbf (both directions), so throughput through a NAT is measured against a public
 * host's at the same rate.
 */

export type NatKind = 'cone' | 'symmetric'

export interface NatInit {
  /** Hosts with a public address (the first is where a run bootstraps). */
  publicHosts: number
  /** One entry per home: its NAT and its number of hosts. */
  homes: ReadonlyArray<{ nat: NatKind; hosts: number }>
  /** tbf on every host's link, each direction (bits/s); default none. */
  linkBitsPerS?: number
  signal?: AbortSignal
}

/** A host of the NAT topology: `zone` is 'public' or 'home<k>'. */
export interface NatHost extends ZoneHost {
  /** Where others on the internet see it: its own address, or its router's. */
  publicIp: string
  nat: NatKind | 'none'
}

export interface NatTopology {
  readonly prefix: string
  readonly hosts: readonly NatHost[]
  readonly tools: Tools
  exec(host: ZoneHost, argv: readonly string[]): { command: string; args: string[] }
  /** The router's NAT table (`conntrack -L` is not needed: nft lists the rules). */
  rules(home: number): Promise<string>
  stop(): Promise<void>
}

const MAX_HOMES = 8
const MAX_HOSTS = 16

/** The nftables ruleset of a home router. */
export function routerRules(nat: NatKind): string {
  return [
    'table ip nat {',
    '  chain postrouting {',
    '    type nat hook postrouting priority srcnat; policy accept;',
    `    oifname "wan0" masquerade${nat === 'symmetric' ? ' random' : ''}`,
    '  }',
    '}',
    'table ip filter {',
    '  chain input {',
    '    type filter hook input priority filter; policy drop;',
    '    ct state established,related accept',
    '    iifname { "lo", "lan0" } accept',
    '  }',
    '  chain forward {',
    '    type filter hook forward priority filter; policy drop;',
    '    ct state established,related accept',
    '    iifname "lan0" oifname "wan0" accept',
    // Hosts of one home talk to each other freely (with br_netfilter loaded, traffic bridged
    // inside the home passes this hook too).
    '    iifname "lan0" oifname "lan0" accept',
    '  }',
    '}',
    ''
  ].join('\n')
}

function check(init: NatInit): void {
  if (!Number.isInteger(init.publicHosts) || init.publicHosts < 1 || init.publicHosts > MAX_HOSTS)
    throw new InvalidArgumentError(`publicHosts must be an integer in 1..${MAX_HOSTS}, got ${init.publicHosts}`)
  if (init.homes.length < 1 || init.homes.length > MAX_HOMES) throw new InvalidArgumentError(`homes: 1 to ${MAX_HOMES}, got ${init.homes.length}`)
  for (const [k, h] of init.homes.entries()) {
    if (h.nat !== 'cone' && h.nat !== 'symmetric') throw new InvalidArgumentError(`home ${k}: nat must be cone or symmetric, got ${String(h.nat)}`)
    if (!Number.isInteger(h.hosts) || h.hosts < 1 || h.hosts > MAX_HOSTS)
      throw new InvalidArgumentError(`home ${k}: hosts must be an integer in 1..${MAX_HOSTS}, got ${h.hosts}`)
  }
  const r = init.linkBitsPerS
  if (r !== undefined && (!Number.isInteger(r) || r < L.minUplinkBitsPerS || r > L.maxUplinkBitsPerS))
    throw new InvalidArgumentError(`linkBitsPerS must be an integer in ${L.minUplinkBitsPerS}..${L.maxUplinkBitsPerS}, got ${r}`)
}

/**
 * Builds the topology (removing first what dead runs left). Throws NotRootError or
 * ToolMissingError (iproute2, or nftables: `apt-get install nftables`) before building,
 * NamespaceRefusedError when the kernel refuses a piece (nothing is left behind then).
 */
export async function createNat(init: NatInit): Promise<NatTopology> {
  check(init)
  const tools = findTools()
  const nft = findNft()
  sweepStale(tools)
  const prefix = newPrefix()
  const core = `${prefix}core`
  const opts = { ...(init.signal === undefined ? {} : { signal: init.signal }), fail: refused }
  const ip = (...args: string[]): Promise<string> => run(tools.ip, args, opts)
  const tc = (...args: string[]): Promise<string> => run(tools.tc, args, opts)
  const inNs = (ns: string, program: string, ...args: string[]): Promise<string> => run(tools.ip, ['netns', 'exec', ns, program, ...args], opts)
  track(prefix, tools)
  cleanupOnExit()
  const hosts: NatHost[] = []
  const rulesDir = mkdtempSync(join(tmpdir(), 'zeromesh-nat-'))
  /** A veth from `bridgeNs`'s bridge to eth0 of a new host namespace, shaped when asked. */
  const attach = async (h: NatHost, bridgeNs: string, bridge: string, end: string, cidr: string, gateway?: string): Promise<void> => {
    await ip('netns', 'add', h.netns)
    await ip('-n', bridgeNs, 'link', 'add', end, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', h.netns)
    await ip('-n', bridgeNs, 'link', 'set', end, 'master', bridge)
    await ip('-n', bridgeNs, 'link', 'set', end, 'up')
    await ip('-n', h.netns, 'addr', 'add', cidr, 'dev', 'eth0')
    await ip('-n', h.netns, 'link', 'set', 'eth0', 'up')
    await ip('-n', h.netns, 'link', 'set', 'lo', 'up')
    if (gateway !== undefined) await ip('-n', h.netns, 'route', 'add', 'default', 'via', gateway)
    if (init.linkBitsPerS !== undefined) {
      for (const [ns, dev] of [
        [bridgeNs, end],
        [h.netns, 'eth0']
      ] as const)
        await tc('-n', ns, 'qdisc', 'add', 'dev', dev, 'root', ...tbfArgs(init.linkBitsPerS, L.defaultQueueMs))
    }
    hosts.push(h)
  }
  try {
    await ip('netns', 'add', core)
    await ip('-n', core, 'link', 'set', 'lo', 'up')
    await ip('-n', core, 'link', 'add', 'inet', 'type', 'bridge')
    await ip('-n', core, 'link', 'set', 'inet', 'up')
    for (let i = 0; i < init.publicHosts; i++) {
      const addr = `45.77.0.${10 + i}`
      const h: NatHost = { name: `public-${i}`, zone: 'public', netns: `${prefix}public-${i}`, ip: addr, publicIp: addr, nat: 'none' }
      await attach(h, core, 'inet', `p${i}`, `${addr}/24`)
    }
    for (const [k, home] of init.homes.entries()) {
      const router = `${prefix}r${k}`
      const wan = `45.77.0.${1 + k}`
      const lan = `192.168.${k + 1}`
      await ip('netns', 'add', router)
      await ip('-n', router, 'link', 'set', 'lo', 'up')
      await ip('-n', core, 'link', 'add', `r${k}`, 'type', 'veth', 'peer', 'name', 'wan0', 'netns', router)
      await ip('-n', core, 'link', 'set', `r${k}`, 'master', 'inet')
      await ip('-n', core, 'link', 'set', `r${k}`, 'up')
      await ip('-n', router, 'addr', 'add', `${wan}/24`, 'dev', 'wan0')
      await ip('-n', router, 'link', 'set', 'wan0', 'up')
      await ip('-n', router, 'link', 'add', 'lan0', 'type', 'bridge')
      await ip('-n', router, 'addr', 'add', `${lan}.1/24`, 'dev', 'lan0')
      await ip('-n', router, 'link', 'set', 'lan0', 'up')
      await inNs(router, 'sysctl', '-q', '-w', 'net.ipv4.ip_forward=1')
      // A file, not stdin: under ava's worker threads `nft -f -` read nothing and the router
      // came up without rules (no NAT, no filter), silently.
      const file = join(rulesDir, `r${k}.nft`)
      writeFileSync(file, routerRules(home.nat))
      await run(tools.ip, ['netns', 'exec', router, nft, '-f', file], opts)
      if (!(await run(tools.ip, ['netns', 'exec', router, nft, 'list', 'ruleset'], opts)).includes('masquerade'))
        throw new NamespaceRefusedError(`router ${k}: nftables did not take the ruleset`)
      for (let i = 0; i < home.hosts; i++) {
        const h: NatHost = { name: `home${k}-${i}`, zone: `home${k}`, netns: `${prefix}home${k}-${i}`, ip: `${lan}.${10 + i}`, publicIp: wan, nat: home.nat }
        await attach(h, router, 'lan0', `h${i}`, `${h.ip}/24`, `${lan}.1`)
      }
    }
  } catch (err) {
    removeNamespacesSync(tools, n => n.startsWith(prefix))
    forget(prefix)
    throw err
  } finally {
    rmSync(rulesDir, { recursive: true, force: true })
  }
  let stopped = false
  return {
    prefix,
    hosts,
    tools,
    exec: (host, argv) => ({ command: tools.ip, args: ['netns', 'exec', host.netns, ...argv] }),
    rules: k => run(tools.ip, ['netns', 'exec', `${prefix}r${k}`, nft, 'list', 'ruleset']),
    async stop() {
      if (stopped) return
      stopped = true
      removeNamespacesSync(tools, n => n.startsWith(prefix))
      forget(prefix)
    }
  }
}
