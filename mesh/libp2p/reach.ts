import type { Multiaddr } from '@multiformats/multiaddr'
import { isIP } from 'node:net'
import { networkInterfaces } from 'node:os'
import type { Connection } from '@libp2p/interface'
import type { PeerId } from '../peernet.ts'

/**
 * Whether this node can be dialled from outside, found from what its peers see rather than
 * configured. Every run handshake tells each side the IP the other end sees it at on that
 * connection (auth.ts `seen`):
 * - as the dialer, the listener reports the source IP our connection came from. An IP that is
 *   not one of ours means a NAT rewrote it: we are behind NAT, and that IP is our external one.
 * - as the listener, the dialer reports the IP it dialled. One of ours means a peer reached us
 *   at our own address.
 * Seen at our own address either way, and never from elsewhere: `public` (no NAT between us and
 * our peers; a firewall that drops unasked connections would still hide us, but a member that
 * asks us for a relay slot reached us directly first).
 * NAT evidence wins over public evidence (a peer on our own LAN reaches us at our address even
 * when the internet cannot).
 *
 * Not AutoNAT: js-libp2p's AutoNAT v1 server answers a dial-back request by dialling the asker,
 * and when a connection to it already exists it reuses that one and closes it after the check.
 * In a run that is the pair's only connection: on the NAT harness every home node lost its
 * connection to the public node within 0.2 s of joining, again and again. The run handshake
 * already carries what AutoNAT would learn (where each peer sees us), at no extra dial.
 */
export type Reach = 'public' | 'nat' | 'unknown'

/** The IP of a connection's remote end; undefined for a relayed connection (its address is the relay's). */
export function ipOf(conn: Connection): string | undefined {
  const parts = conn.remoteAddr.getComponents()
  if (parts.some(c => c.name === 'p2p-circuit')) return undefined
  return parts.find(c => c.name === 'ip4' || c.name === 'ip6')?.value
}

/** Whether a connection runs through a relay. */
export function isRelayed(conn: Connection): boolean {
  return conn.remoteAddr.getComponents().some(c => c.name === 'p2p-circuit')
}

/** An IP literal (what a handshake's `seen` and `bulkHost` may carry). */
export function isIpLiteral(s: string): boolean {
  return isIP(s) !== 0
}

/** Wildcard listen addresses: they say nothing about where a host is reached. */
export function isWildcard(ip: string): boolean {
  return ip === '0.0.0.0' || ip === '::'
}

/** The IP addresses of this host's interfaces (inside a network namespace, the namespace's). */
export function localIps(): Set<string> {
  const out = new Set<string>()
  for (const list of Object.values(networkInterfaces())) for (const a of list ?? []) out.add(a.address)
  return out
}

export class Reachability {
  private readonly mine: () => Set<string>
  /** The newest IP a listener saw us come from that is not ours, and who saw it. */
  private external: { ip: string; peer: PeerId } | undefined
  /** The newest IP of ours a peer saw us at. */
  private reachedAt: string | undefined
  /** Hole punches of the bulk channel that opened a connection, and that did not. */
  readonly punches = { ok: 0, failed: 0 }

  constructor(mine: () => Set<string> = localIps) {
    this.mine = mine
  }

  /**
   * A handshake on a direct connection told us `seen`: as `dialer`, the IP the listener sees us
   * at; as listener, the IP the dialer dialled.
   */
  observe(peer: PeerId, seen: string, role: 'dialer' | 'listener'): void {
    const ours = this.mine().has(seen)
    if (role === 'dialer' && !ours) this.external = { ip: seen, peer }
    // Either way, a peer that sees us at our own address has no NAT between us.
    if (ours) this.reachedAt = seen
  }

  get reach(): Reach {
    if (this.external !== undefined) return 'nat'
    if (this.reachedAt !== undefined) return 'public'
    return 'unknown'
  }

  /** The IP a peer outside should aim at: our NAT's when behind one, else the one peers reached us at. */
  advertisedIp(bindHost: string): string | undefined {
    if (this.external !== undefined) return this.external.ip
    if (this.reachedAt !== undefined) return this.reachedAt
    return isWildcard(bindHost) ? undefined : bindHost
  }

  /** What a report shows: the verdict and the evidence. */
  describe(): { reach: Reach; externalIp?: string; seenBy?: PeerId; reachedAt?: string; punches: { ok: number; failed: number } } {
    return {
      reach: this.reach,
      ...(this.external === undefined ? {} : { externalIp: this.external.ip, seenBy: this.external.peer }),
      ...(this.reachedAt === undefined ? {} : { reachedAt: this.reachedAt }),
      punches: { ...this.punches }
    }
  }
}

/** The IPv4 address as a 32-bit unsigned number. */
function v4(ip: string): number | undefined {
  const m = /^(\d+)\.(\d+)\.(\d+)\.(\d+)$/.exec(ip)
  if (m === null) return undefined
  return ((Number(m[1]) << 24) | (Number(m[2]) << 16) | (Number(m[3]) << 8) | Number(m[4])) >>> 0
}

/**
 * Whether `ip` is on a network one of this host's interfaces is attached to (IPv4; loopback
 * and the wildcard excluded): a host there is reached without any router, NAT or not.
 */
export function onLink(ip: string): boolean {
  const x = v4(ip)
  if (x === undefined || isWildcard(ip)) return false
  for (const list of Object.values(networkInterfaces())) {
    for (const a of list ?? []) {
      if (a.family !== 'IPv4' || a.internal) continue
      const base = v4(a.address)
      const mask = v4(a.netmask)
      if (base !== undefined && mask !== undefined && mask !== 0 && (base & mask) >>> 0 === (x & mask) >>> 0) return true
    }
  }
  return false
}

/** An RFC 1918 IPv4 address (10/8, 172.16/12, 192.168/16): a LAN's, behind some NAT. */
export function isPrivateV4(ip: string): boolean {
  const x = v4(ip)
  if (x === undefined) return false
  return x >>> 24 === 10 || x >>> 20 === (172 << 4) + 1 || x >>> 16 === (192 << 8) + 168
}

/**
 * The addresses of a peer worth dialling from here. When it announced a relayed address (it
 * is behind a NAT), its private addresses on a network this host is not attached to are
 * another LAN's: a dial there gets no answer at all on most networks (an ICMP error is rate
 * limited, a SYN into another LAN's range is dropped), and libp2p dials a peer's addresses
 * in turn, so the relayed one would wait out the dial timeout behind it. Without a relayed
 * address nothing is left out (a private range may be routed, e.g. over a VPN).
 */
export function dialable(addrs: readonly Multiaddr[]): Multiaddr[] {
  const relayed = (a: Multiaddr): boolean => a.getComponents().some(c => c.name === 'p2p-circuit')
  if (!addrs.some(relayed)) return [...addrs]
  return addrs.filter(a => relayed(a) || !offLinkPrivate(a))
}

/** An address at a private IPv4 on a network this host is not attached to (another LAN's, most likely). */
export function offLinkPrivate(a: Multiaddr): boolean {
  const parts = a.getComponents()
  if (parts.some(c => c.name === 'p2p-circuit')) return false
  const ip = parts.find(c => c.name === 'ip4')?.value
  return ip !== undefined && isPrivateV4(ip) && !onLink(ip)
}
