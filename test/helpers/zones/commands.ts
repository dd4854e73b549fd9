import { execFile, spawnSync } from 'node:child_process'
import { accessSync, constants } from 'node:fs'
import { delimiter, join } from 'node:path'
import { threadId } from 'node:worker_threads'
import { NamespaceRefusedError, NotRootError, ToolMissingError, ZonesCommandError, type ZonesError } from './errors.ts'
import { ZONES_LIMITS } from './limits.ts'

/**
 * Running `ip` and `tc`, and the names of what the harness creates. Every namespace of one
 * topology starts with `zmz-<pid>-<thread>-<n>-`: a later run removes those whose pid is gone
 * (a run killed before its `stop()`), and leaves live runs alone.
 */

/** Where iproute2's programs are. */
export interface Tools {
  ip: string
  tc: string
}

/** The start of every namespace name the harness creates. */
export const NAMESPACE_PREFIX = 'zmz-'
const STALE = /^zmz-(\d+)-/

/** Places a root's PATH may not list but iproute2 installs into. */
const SBIN = ['/usr/sbin', '/sbin', '/usr/bin', '/bin']

function which(name: string): string | undefined {
  const dirs = [...(process.env['PATH'] ?? '').split(delimiter).filter(d => d.length > 0), ...SBIN]
  for (const d of dirs) {
    const p = join(d, name)
    try {
      accessSync(p, constants.X_OK)
      return p
    } catch {
      // not here
    }
  }
  return undefined
}

/** Checks that this process is root and iproute2 is installed; returns the programs' paths. */
export function findTools(): Tools {
  if (process.getuid?.() !== 0) throw new NotRootError(`the zone harness needs root for network namespaces (uid ${process.getuid?.() ?? 'unknown'})`)
  const ip = which('ip')
  const tc = which('tc')
  if (ip === undefined || tc === undefined)
    throw new ToolMissingError(`the zone harness needs iproute2: '${ip === undefined ? 'ip' : 'tc'}' is not on PATH or in /usr/sbin (apt-get install iproute2)`)
  return { ip, tc }
}

/** Where nftables' `nft` is (the NAT topology's routers need it). */
export function findNft(): string {
  // The system's first: under npm scripts PATH starts with node_modules/.bin, where an npm
  // package (node-file-trace) installs a program also called `nft`.
  const nft = SBIN.map(d => join(d, 'nft')).find(p => {
    try {
      accessSync(p, constants.X_OK)
      return true
    } catch {
      return false
    }
  })
  if (nft === undefined) throw new ToolMissingError("the NAT harness needs nftables: 'nft' is not on PATH or in /usr/sbin (apt-get install nftables)")
  return nft
}

let created = 0
/** A fresh name prefix for one topology of this process and thread. */
export function newPrefix(): string {
  return `${NAMESPACE_PREFIX}${process.pid}-${threadId}-${created++}-`
}

/**
 * Runs one command; resolves with its stdout. A failure rejects with `fail(message)` (default
 * {@link ZonesCommandError}) naming the command and its stderr.
 */
export function run(program: string, args: readonly string[], opts: { signal?: AbortSignal; fail?: (message: string) => ZonesError } = {}): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(
      program,
      args,
      { timeout: ZONES_LIMITS.commandTimeoutMs, maxBuffer: 4 << 20, ...(opts.signal === undefined ? {} : { signal: opts.signal }) },
      (err, stdout, stderr) => {
        if (err === null) return resolve(stdout)
        if ((err as NodeJS.ErrnoException).code === 'ENOENT') return reject(new ToolMissingError(`${program} is not installed (apt-get install iproute2)`))
        if (err.name === 'AbortError') return reject(err)
        const why = stderr.trim().split('\n')[0] || err.message
        const message = `${[program.split('/').pop(), ...args].join(' ')}: ${why}`
        reject(opts.fail?.(message) ?? new ZonesCommandError(message))
      }
    )
  })
}

/** A refusal while building: the kernel or the container said no. */
export const refused = (message: string): ZonesError => new NamespaceRefusedError(`the kernel refused: ${message}`)

/** Names of the network namespaces that exist now (`ip netns list`). */
export async function listNamespaces(tools: Tools, signal?: AbortSignal): Promise<string[]> {
  return parseNamespaces(await run(tools.ip, ['netns', 'list'], signal === undefined ? {} : { signal }))
}

function parseNamespaces(out: string): string[] {
  return out
    .split('\n')
    .map(l => l.trim().split(/\s+/)[0] ?? '')
    .filter(n => n.length > 0)
}

/** Whether process `pid` exists (EPERM: it does, owned by someone else). */
export function alive(pid: number): boolean {
  try {
    process.kill(pid, 0)
    return true
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM'
  }
}

/** Namespaces a dead harness run left behind (its pid is gone). */
export function isStale(name: string): boolean {
  const m = STALE.exec(name)
  return m !== null && Number(m[1]) !== process.pid && !alive(Number(m[1]))
}

/**
 * Removes namespaces: SIGKILLs the processes the harness started in them (`ip netns pids`),
 * then deletes them; deleting a namespace destroys its veth ends and bridges, and each veth's
 * other end with it. Synchronous, so it also runs in an `exit` handler. Returns the names removed.
 */
export function removeNamespacesSync(tools: Tools, match: (name: string) => boolean): string[] {
  const list = spawnSync(tools.ip, ['netns', 'list'], { encoding: 'utf8', timeout: ZONES_LIMITS.commandTimeoutMs })
  const names = parseNamespaces(list.stdout ?? '').filter(match)
  for (const ns of names) {
    const pids = spawnSync(tools.ip, ['netns', 'pids', ns], { encoding: 'utf8', timeout: ZONES_LIMITS.commandTimeoutMs })
    for (const p of (pids.stdout ?? '')
      .split('\n')
      .map(Number)
      .filter(n => Number.isInteger(n) && n > 0)) {
      try {
        process.kill(p, 'SIGKILL')
      } catch {
        // already gone
      }
    }
    spawnSync(tools.ip, ['netns', 'del', ns], { timeout: ZONES_LIMITS.commandTimeoutMs })
  }
  return names
}

/** Removes what dead runs of the harness left (namespaces named for a pid that is gone). */
export function sweepStale(tools: Tools): string[] {
  return removeNamespacesSync(tools, isStale)
}
