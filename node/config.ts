import { readFileSync } from 'node:fs'
import { homedir, hostname } from 'node:os'
import { join, resolve } from 'node:path'
import { multiaddr } from '@multiformats/multiaddr'
import { z } from 'zod'
import { ZeromeshError } from '../core/index.ts'
import { MIN_SECRET_BYTES } from '../mesh/index.ts'

/**
 * One strict schema for a node's configuration, fed by (highest first) command-line flags,
 * ZEROMESH_* environment variables, a JSON config file (`--config`), and the defaults below.
 * Unknown keys are errors at every level.
 */

/** A configuration problem the user must fix: printed as one line, exit code 2. */
export class ConfigError extends ZeromeshError {
  static override name = 'ConfigError'
}

const multiaddrString = z.string().superRefine((s, ctx) => {
  try {
    multiaddr(s)
  } catch (err) {
    ctx.addIssue({ code: 'custom', message: `'${s}' is not a multiaddr (${(err as Error).message})` })
  }
})

/** A TCP `host:port` (`[v6]:port` for IPv6; port 0 picks a free one), parsed. */
export interface HostPort { host: string, port: number }

/**
 * Parses `host:port`, `[ipv6]:port` or `:port` (all interfaces). Undefined when malformed:
 * the host is a name, IPv4 or bracketed IPv6 address; the port 0-65535.
 */
export function parseHostPort (s: string): HostPort | undefined {
  const m = /^(?:\[([0-9A-Fa-f:.]+)\]|([A-Za-z0-9][A-Za-z0-9.-]{0,252})?):(\d{1,5})$/.exec(s)
  if (m === null) return undefined
  const port = Number(m[3])
  if (port > 65535) return undefined
  return { host: m[1] ?? m[2] ?? '0.0.0.0', port }
}

const hostPort = z.string().transform((s, ctx) => {
  const hp = parseHostPort(s)
  if (hp === undefined) {
    ctx.addIssue({ code: 'custom', message: `must be host:port (e.g. 127.0.0.1:9464, [::1]:9464 or :9464), got '${s}'` })
    return z.NEVER
  }
  return hp
})

export const startSchema = z.strictObject({
  run: z.string().regex(/^[A-Za-z0-9._-]{1,64}$/, 'run ids are 1-64 of [A-Za-z0-9._-]'),
  secretFile: z.string().min(1),
  bootstrap: z.array(multiaddrString).max(64).default([]),
  listen: z.array(multiaddrString).min(1).max(16).default(['/ip4/0.0.0.0/tcp/0']),
  announce: z.array(multiaddrString).max(16).default([]),
  zone: z.string().min(1).max(64).default('default'),
  host: z.string().min(1).max(253).default(hostname()),
  dataDir: z.string().min(1).optional(),
  expect: z.int().min(1).max(1024).default(1),
  heartbeatMs: z.int().min(20).max(60_000).default(500),
  mdns: z.boolean().default(false),
  logLevel: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('warn'),
  /** Serve Prometheus metrics at http://<host:port>/metrics (default off). */
  metricsListen: hostPort.optional(),
  // Training (all optional: without --train the node only joins the mesh).
  train: z.boolean().default(false),
  device: z.enum(['cpu', 'cuda']).default('cpu'),
  model: z.enum(['mini', 'small', 'gpt2-124m']).default('mini'),
  data: z.string().min(1).optional(),
  steps: z.int().min(0).max(10_000_000).default(200),
  worldSize: z.int().min(1).max(1024).optional(),
  /** Grow the run up to this many ranks as nodes join (default: the world size, never). */
  maxWorldSize: z.int().min(1).max(1024).optional(),
  batch: z.int().min(1).max(4096).default(4),
  seq: z.int().min(2).max(1024).default(64),
  lr: z.number().positive().max(1).default(3e-3),
  seed: z.int().min(0).default(1),
  zeropp: z.boolean().default(false),
  snapshot: z.string().regex(/^(off|[1-9]\d?\+[0-9]\d?)$/, 'must be k+m (e.g. 2+1) or off').default('2+1'),
  /** Erasure-coded snapshots every N committed steps (and the first step of every session). */
  snapshotEvery: z.int().min(1).max(10_000_000).default(1),
  /** Disk tier: persist this rank's state every N committed steps (0: never). */
  diskEvery: z.int().min(0).max(10_000_000).default(10),
  /** Start from the newest step every rank has in its disk tier. */
  resume: z.boolean().default(false),
  exitWhenDone: z.boolean().default(false)
}).superRefine((c, ctx) => {
  if (c.resume && !c.train) ctx.addIssue({ code: 'custom', path: ['resume'], message: 'needs --train (it resumes training from the disk tier)' })
  const ws = c.worldSize ?? c.expect
  if (c.maxWorldSize !== undefined && c.maxWorldSize < ws) ctx.addIssue({ code: 'custom', path: ['maxWorldSize'], message: `must be at least the world size (${ws})` })
})

export type StartConfig = z.output<typeof startSchema> & { dataDir: string }

/** Flag name (kebab-case) -> schema key, with how to parse the string. */
const FLAGS: Record<string, { key: keyof z.input<typeof startSchema>, kind: 'string' | 'list' | 'int' | 'number' | 'bool' }> = {
  run: { key: 'run', kind: 'string' },
  'secret-file': { key: 'secretFile', kind: 'string' },
  bootstrap: { key: 'bootstrap', kind: 'list' },
  listen: { key: 'listen', kind: 'list' },
  announce: { key: 'announce', kind: 'list' },
  zone: { key: 'zone', kind: 'string' },
  host: { key: 'host', kind: 'string' },
  'data-dir': { key: 'dataDir', kind: 'string' },
  expect: { key: 'expect', kind: 'int' },
  'heartbeat-ms': { key: 'heartbeatMs', kind: 'int' },
  mdns: { key: 'mdns', kind: 'bool' },
  'log-level': { key: 'logLevel', kind: 'string' },
  'metrics-listen': { key: 'metricsListen', kind: 'string' },
  train: { key: 'train', kind: 'bool' },
  device: { key: 'device', kind: 'string' },
  model: { key: 'model', kind: 'string' },
  data: { key: 'data', kind: 'string' },
  steps: { key: 'steps', kind: 'int' },
  'world-size': { key: 'worldSize', kind: 'int' },
  'max-world-size': { key: 'maxWorldSize', kind: 'int' },
  batch: { key: 'batch', kind: 'int' },
  seq: { key: 'seq', kind: 'int' },
  lr: { key: 'lr', kind: 'number' },
  seed: { key: 'seed', kind: 'int' },
  zeropp: { key: 'zeropp', kind: 'bool' },
  snapshot: { key: 'snapshot', kind: 'string' },
  'snapshot-every': { key: 'snapshotEvery', kind: 'int' },
  'disk-every': { key: 'diskEvery', kind: 'int' },
  resume: { key: 'resume', kind: 'bool' },
  'exit-when-done': { key: 'exitWhenDone', kind: 'bool' }
}

/** parseArgs options for `start`: every flag above plus --config. */
export const START_FLAG_OPTIONS = {
  ...Object.fromEntries(Object.entries(FLAGS).map(([name, f]) => [name, { type: f.kind === 'bool' ? 'boolean' as const : 'string' as const, multiple: f.kind === 'list' }])),
  config: { type: 'string' as const }
}

function convert (name: string, kind: string, raw: unknown): unknown {
  if (kind === 'int') {
    const n = Number(raw)
    if (!Number.isInteger(n)) throw new ConfigError(`${name} must be an integer, got '${String(raw)}'`)
    return n
  }
  if (kind === 'number') {
    const n = Number(raw)
    if (!Number.isFinite(n)) throw new ConfigError(`${name} must be a number, got '${String(raw)}'`)
    return n
  }
  if (kind === 'bool') return raw === true || raw === 'true' || raw === '1'
  if (kind === 'list') return (Array.isArray(raw) ? raw : String(raw).split(',')).map(s => String(s).trim()).filter(s => s.length > 0)
  return raw
}

/**
 * Builds and validates the `start` configuration. `flags` come from parseArgs; `env` is
 * process.env (ZEROMESH_RUN, ZEROMESH_SECRET_FILE, ZEROMESH_BOOTSTRAP=a,b, ...).
 */
export function loadStartConfig (flags: Record<string, unknown>, env: Record<string, string | undefined> = process.env): StartConfig {
  let fromFile: Record<string, unknown> = {}
  const file = (flags['config'] as string | undefined) ?? env['ZEROMESH_CONFIG']
  if (file !== undefined) {
    let text: string
    try {
      text = readFileSync(file, 'utf8')
    } catch (err) {
      throw new ConfigError(`cannot read config file ${file}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`)
    }
    try {
      const parsed: unknown = JSON.parse(text)
      if (parsed === null || typeof parsed !== 'object' || Array.isArray(parsed)) throw new Error('not a JSON object')
      fromFile = parsed as Record<string, unknown>
    } catch (err) {
      throw new ConfigError(`config file ${file} is not valid JSON: ${(err as Error).message}`)
    }
  }
  const fromEnv: Record<string, unknown> = {}
  const fromFlags: Record<string, unknown> = {}
  for (const [name, f] of Object.entries(FLAGS)) {
    const envName = `ZEROMESH_${name.toUpperCase().replaceAll('-', '_')}`
    if (env[envName] !== undefined && env[envName] !== '') fromEnv[f.key] = convert(envName, f.kind, env[envName])
    if (flags[name] !== undefined) fromFlags[f.key] = convert(`--${name}`, f.kind, flags[name])
  }
  const merged = { ...fromFile, ...fromEnv, ...fromFlags }
  const parsed = startSchema.safeParse(merged)
  if (!parsed.success) {
    const issue = parsed.error.issues[0]!
    const key = issue.path[0]
    const flag = Object.entries(FLAGS).find(([, f]) => f.key === key)?.[0]
    const where = flag !== undefined ? `--${flag}` : String(key ?? 'config')
    const message = issue.code === 'invalid_type' && issue.input === undefined ? 'is required' : issue.message
    throw new ConfigError(`${where} ${message}`)
  }
  const cfg = parsed.data
  return { ...cfg, dataDir: resolve(cfg.dataDir ?? defaultDataDir(cfg.run)) }
}

/** Where a node of `run` keeps its identity and control socket unless told otherwise. */
export function defaultDataDir (run: string): string {
  return join(homedir(), '.zeromesh', run)
}

/** Reads the run secret: the file's bytes without one trailing newline, at least 16 bytes. */
export function readSecret (file: string): Uint8Array {
  let bytes: Uint8Array
  try {
    bytes = readFileSync(file)
  } catch (err) {
    throw new ConfigError(`cannot read secret file ${file}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`)
  }
  let end = bytes.length
  if (end > 0 && bytes[end - 1] === 0x0a) end--
  if (end > 0 && bytes[end - 1] === 0x0d) end--
  if (end < MIN_SECRET_BYTES) throw new ConfigError(`secret file ${file} holds ${end} bytes; a run secret needs at least ${MIN_SECRET_BYTES}`)
  return bytes.subarray(0, end)
}
