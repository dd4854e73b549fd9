import { isMainThread } from 'node:worker_threads'
import { InvalidArgumentError } from '../../../core/index.ts'
import { findTools, newPrefix, refused, removeNamespacesSync, run, sweepStale, type Tools } from './commands.ts'
import { UNAVAILABLE_ERRORS, ZonesCommandError } from './errors.ts'
import { ZONES_LIMITS as L } from './limits.ts'

/**
 * Zones of hosts joined by shaped links, built from Linux network namespaces:
 *
 *   host ns <prefix><zone>-<i>        core ns <prefix>core
 *   eth0 10.99.<z>.<i+1>/16 ── veth ── h<z>-<i> ─┐
 *                                                 zb<z> (zone bridge) ── up<z> ══ veth ══ wan<z> ── wan (bridge)
 *
 * Each zone's hosts share a bridge; the zone bridge reaches the WAN bridge through one veth
 * pair, the zone's uplink, with a tbf qdisc on the egress of both ends (up<z> shapes what
 * leaves the zone, wan<z> what enters it). Traffic between two zones crosses two uplinks;
 * traffic inside a zone crosses none and is not shaped. Everything lives in namespaces
 * whose names start with the topology's prefix, so nothing is added to the root namespace
 * and deleting the namespaces removes all of it. tbf shapes bandwidth only: there is no
 * netem here, so no added latency, loss or reordering.
 */

/** One zone to build: its name (a zone label and part of host names) and its number of hosts. */
export interface ZoneSpec {
  name: string
  hosts: number
}

export interface ZonesInit {
  zones: readonly ZoneSpec[]
  /** The rate of every zone's uplink, each direction (bits/s). */
  uplinkBitsPerS: number
  /** tbf queue length as the time a packet may wait (ms, default {@link L.defaultQueueMs}). */
  queueMs?: number
  signal?: AbortSignal
}

/** A host: a network namespace with one interface (eth0) on its zone's bridge. */
export interface ZoneHost {
  /** `<zone>-<i>`; also the `--host` label of its nodes. */
  name: string
  zone: string
  netns: string
  ip: string
}

/** Bytes that crossed a zone's uplink (Ethernet frames, from the kernel's interface counters). */
export interface UplinkBytes {
  /** Left the zone. */
  out: number
  /** Entered the zone. */
  in: number
}

export interface Zones {
  /** Every namespace of this topology starts with it. */
  readonly prefix: string
  readonly hosts: readonly ZoneHost[]
  readonly uplinkBitsPerS: number
  readonly tools: Tools
  /** The command line that runs `argv` on `host` (`ip netns exec <ns> ...argv`). */
  exec(host: ZoneHost, argv: readonly string[]): { command: string; args: string[] }
  /** Takes the zone's uplink down: its hosts reach each other but no other zone (a partition). */
  cut(zone: string, opts?: { signal?: AbortSignal }): Promise<void>
  /** Brings the zone's uplink back up. */
  heal(zone: string, opts?: { signal?: AbortSignal }): Promise<void>
  uplinkBytes(zone: string, opts?: { signal?: AbortSignal }): Promise<UplinkBytes>
  /** Kills what runs in the namespaces and deletes them. Idempotent; also runs when the process exits. */
  stop(): Promise<void>
}

function check(init: ZonesInit): void {
  const { zones, uplinkBitsPerS } = init
  if (zones.length < 1 || zones.length > L.maxZones) throw new InvalidArgumentError(`zones: 1 to ${L.maxZones}, got ${zones.length}`)
  const names = new Set<string>()
  for (const z of zones) {
    if (!L.zoneName.test(z.name)) throw new InvalidArgumentError(`zone name '${z.name}' must match ${L.zoneName}`)
    if (names.has(z.name)) throw new InvalidArgumentError(`zone '${z.name}' is named twice`)
    names.add(z.name)
    if (!Number.isInteger(z.hosts) || z.hosts < 1 || z.hosts > L.maxHostsPerZone)
      throw new InvalidArgumentError(`zone '${z.name}': hosts must be an integer in 1..${L.maxHostsPerZone}, got ${z.hosts}`)
  }
  if (!Number.isInteger(uplinkBitsPerS) || uplinkBitsPerS < L.minUplinkBitsPerS || uplinkBitsPerS > L.maxUplinkBitsPerS)
    throw new InvalidArgumentError(`uplinkBitsPerS must be an integer in ${L.minUplinkBitsPerS}..${L.maxUplinkBitsPerS}, got ${uplinkBitsPerS}`)
}

/** The tbf arguments for a rate: a bucket of at least 4 ms at the rate, a queue of `queueMs`. */
export function tbfArgs(bitsPerS: number, queueMs: number): string[] {
  const burst = Math.max(L.minBurstBytes, Math.ceil(bitsPerS / 8 / 250))
  return ['tbf', 'rate', `${bitsPerS}bit`, 'burst', String(burst), 'latency', `${queueMs}ms`]
}

/** Topologies of this thread not stopped yet (prefix -> tools): removed on exit and on SIGINT / SIGTERM. */
const live = new Map<string, Tools>()
/** Registers a topology being built, so the exit hook removes it. */
export function track(prefix: string, tools: Tools): void {
  live.set(prefix, tools)
}
/** A topology that was removed. */
export function forget(prefix: string): void {
  live.delete(prefix)
}
let hooked = false
/** Removes every live topology of this thread when the process exits (hooked once). */
export function cleanupOnExit(): void {
  if (hooked) return
  hooked = true
  const sync = (): void => {
    for (const [prefix, tools] of live) removeNamespacesSync(tools, n => n.startsWith(prefix))
    live.clear()
  }
  process.on('exit', sync)
  // Signals reach only the main thread; a test worker thread relies on `exit` and the next
  // run's sweep of stale prefixes.
  if (isMainThread) {
    for (const sig of ['SIGINT', 'SIGTERM'] as const) {
      process.once(sig, () => {
        sync()
        process.exit(sig === 'SIGINT' ? 130 : 143)
      })
    }
  }
}

/**
 * Builds the zones (removing first what dead runs left). Throws {@link NotRootError} or
 * {@link ToolMissingError} before building, {@link NamespaceRefusedError} when the kernel
 * refuses a piece (nothing is left behind then).
 */
export async function createZones(init: ZonesInit): Promise<Zones> {
  check(init)
  const tools = findTools()
  sweepStale(tools)
  const prefix = newPrefix()
  const core = `${prefix}core`
  const queueMs = init.queueMs ?? L.defaultQueueMs
  const opts = { ...(init.signal === undefined ? {} : { signal: init.signal }), fail: refused }
  const ip = (...args: string[]): Promise<string> => run(tools.ip, args, opts)
  const tc = (...args: string[]): Promise<string> => run(tools.tc, args, opts)
  track(prefix, tools)
  cleanupOnExit()
  const hosts: ZoneHost[] = []
  try {
    await ip('netns', 'add', core)
    await ip('-n', core, 'link', 'set', 'lo', 'up')
    await ip('-n', core, 'link', 'add', 'wan', 'type', 'bridge')
    await ip('-n', core, 'link', 'set', 'wan', 'up')
    for (const [z, zone] of init.zones.entries()) {
      await ip('-n', core, 'link', 'add', `zb${z}`, 'type', 'bridge')
      await ip('-n', core, 'link', 'add', `up${z}`, 'type', 'veth', 'peer', 'name', `wan${z}`)
      await ip('-n', core, 'link', 'set', `up${z}`, 'master', `zb${z}`)
      await ip('-n', core, 'link', 'set', `wan${z}`, 'master', 'wan')
      for (const dev of [`up${z}`, `wan${z}`]) await tc('-n', core, 'qdisc', 'add', 'dev', dev, 'root', ...tbfArgs(init.uplinkBitsPerS, queueMs))
      for (const dev of [`zb${z}`, `up${z}`, `wan${z}`]) await ip('-n', core, 'link', 'set', dev, 'up')
      for (let i = 0; i < zone.hosts; i++) {
        const h: ZoneHost = { name: `${zone.name}-${i}`, zone: zone.name, netns: `${prefix}${zone.name}-${i}`, ip: `10.99.${z}.${i + 1}` }
        await ip('netns', 'add', h.netns)
        await ip('-n', core, 'link', 'add', `h${z}-${i}`, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', h.netns)
        await ip('-n', core, 'link', 'set', `h${z}-${i}`, 'master', `zb${z}`)
        await ip('-n', core, 'link', 'set', `h${z}-${i}`, 'up')
        await ip('-n', h.netns, 'addr', 'add', `${h.ip}/16`, 'dev', 'eth0')
        await ip('-n', h.netns, 'link', 'set', 'eth0', 'up')
        await ip('-n', h.netns, 'link', 'set', 'lo', 'up')
        hosts.push(h)
      }
    }
  } catch (err) {
    removeNamespacesSync(tools, n => n.startsWith(prefix))
    forget(prefix)
    throw err
  }
  const zoneIndex = (zone: string): number => {
    const z = init.zones.findIndex(s => s.name === zone)
    if (z < 0) throw new InvalidArgumentError(`no zone '${zone}' (zones: ${init.zones.map(s => s.name).join(', ')})`)
    return z
  }
  const cmd = (o: { signal?: AbortSignal } = {}): { signal?: AbortSignal } => (o.signal === undefined ? {} : { signal: o.signal })
  let stopped = false
  return {
    prefix,
    hosts,
    uplinkBitsPerS: init.uplinkBitsPerS,
    tools,
    exec: (host, argv) => ({ command: tools.ip, args: ['netns', 'exec', host.netns, ...argv] }),
    async cut(zone, o) {
      await run(tools.ip, ['-n', core, 'link', 'set', `up${zoneIndex(zone)}`, 'down'], cmd(o))
    },
    async heal(zone, o) {
      await run(tools.ip, ['-n', core, 'link', 'set', `up${zoneIndex(zone)}`, 'up'], cmd(o))
    },
    async uplinkBytes(zone, o) {
      const out = await run(tools.ip, ['-n', core, '-j', '-s', 'link', 'show', 'dev', `up${zoneIndex(zone)}`], cmd(o))
      return parseUplink(out)
    },
    async stop() {
      if (stopped) return
      stopped = true
      removeNamespacesSync(tools, n => n.startsWith(prefix))
      forget(prefix)
    }
  }
}

/** The uplink's counters from `ip -j -s link show`: up<z> sends what leaves the zone and receives what enters it. */
export function parseUplink(json: string): UplinkBytes {
  const parsed = JSON.parse(json) as Array<{ stats64?: { rx?: { bytes?: unknown }; tx?: { bytes?: unknown } } }>
  const s = parsed[0]?.stats64
  const tx = s?.tx?.bytes
  const rx = s?.rx?.bytes
  if (typeof tx !== 'number' || typeof rx !== 'number') throw new ZonesCommandError(`ip -j -s link show: no byte counters in ${json.slice(0, 200)}`)
  return { out: tx, in: rx }
}

/**
 * Why this machine cannot build zones (not root, no iproute2, namespaces or tbf refused), or
 * undefined when it can: builds and removes a one-host zone. Tests skip on a reason.
 */
export async function zonesUnavailable(): Promise<string | undefined> {
  let z: Zones | undefined
  try {
    z = await createZones({ zones: [{ name: 'probe', hosts: 1 }], uplinkBitsPerS: 1_000_000 })
    return undefined
  } catch (err) {
    const e = err as Error
    if (UNAVAILABLE_ERRORS.includes(e.name)) return `${e.name}: ${e.message}`
    throw err
  } finally {
    await z?.stop()
  }
}
