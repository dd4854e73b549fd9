import { homedir, hostname } from 'node:os'
import { join } from 'node:path'
import { multiaddr } from '@multiformats/multiaddr'
import { z } from 'zod'
import { ZeromeshError, readFileCapped } from '../core/index.ts'
import { MIN_SECRET_BYTES } from '../mesh/index.ts'
import { option, shapeOf } from './options.ts'
import { TOKENIZERS } from './tokenizer.ts'
import { OPTIMIZERS, TRAIN_MODELS } from './train/config.ts'

/**
 * A node's configuration: one spec of its options, the strict schema built from it, and the
 * helpers the node needs at start-up. The command line fills it (highest first) from flags,
 * ZEROMESH_* environment variables, a JSON `--config` file and the defaults here (cli/start.ts).
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
export interface HostPort {
  host: string
  port: number
}

/**
 * Parses `host:port`, `[ipv6]:port` or `:port` (all interfaces). Undefined when malformed:
 * the host is a name, IPv4 or bracketed IPv6 address; the port 0-65535.
 */
export function parseHostPort(s: string): HostPort | undefined {
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

const SIZE_UNITS: Record<string, number> = { '': 1, b: 1, kb: 1e3, mb: 1e6, gb: 1e9, tb: 1e12, kib: 2 ** 10, mib: 2 ** 20, gib: 2 ** 30, tib: 2 ** 40 }

/** Bytes from `8GiB`, `500MB`, `1.5gb` or a plain number of bytes (at least 64 MiB: a CUDA backend's own buffers take 32). */
export function parseSize(s: string): number | undefined {
  const m = /^(\d+(?:\.\d+)?)\s*([kmgt]i?b|b)?$/i.exec(s.trim())
  if (m === null) return undefined
  const bytes = Math.floor(Number(m[1]) * SIZE_UNITS[(m[2] ?? '').toLowerCase()]!)
  return Number.isSafeInteger(bytes) && bytes >= 64 * 2 ** 20 ? bytes : undefined
}

const sizeSchema = z.string().transform((s, ctx) => {
  const bytes = parseSize(s)
  if (bytes === undefined) {
    ctx.addIssue({ code: 'custom', message: `must be a size of at least 64 MiB (e.g. 8GiB, 500MB or a number of bytes), got '${s}'` })
    return z.NEVER
  }
  return bytes
})

/** `--http`: `host:port`, or a bare port on loopback (the dashboard is not exposed unless asked). */
const dashboardListen = z.string().transform((s, ctx) => {
  const hp = /^\d{1,5}$/.test(s) && Number(s) <= 65535 ? { host: '127.0.0.1', port: Number(s) } : parseHostPort(s)
  if (hp === undefined) {
    ctx.addIssue({ code: 'custom', message: `must be a port or host:port (e.g. 8080, 127.0.0.1:8080 or 0.0.0.0:8080), got '${s}'` })
    return z.NEVER
  }
  return hp
})

/** The default listen address: every interface, a free port. */
const DEFAULT_LISTEN = '/ip4/0.0.0.0/tcp/0'
const TRAINING = 'training (with --train; the first --world-size members train, the rest are spares):'

/**
 * Every option of a node (`zeromesh start`): flags, ZEROMESH_* variables and `--config` keys
 * all come from this table (node/options.ts), and so does `zeromesh start --help`.
 */
export const START_OPTIONS = {
  run: option(z.string().regex(/^[A-Za-z0-9._-]{1,64}$/, 'run ids are 1-64 of [A-Za-z0-9._-]'), { arg: '<id>', help: 'run id (1-64 of A-Z a-z 0-9 . _ -)' }),
  secretFile: option(z.string().min(1), { arg: '<file>', help: 'file holding the run secret (>= 16 bytes)' }),
  bootstrap: option(z.array(multiaddrString).max(64).default([]), {
    arg: '<addr>',
    help: "a member's multiaddr ending in /p2p/<id>; repeat the flag (comma-separated in the environment)"
  }),
  listen: option(z.array(multiaddrString).min(1).max(16).default([DEFAULT_LISTEN]), { arg: '<addr>', help: 'listen multiaddr; repeat for several' }),
  announce: option(z.array(multiaddrString).max(16).default([]), {
    arg: '<addr>',
    help: 'address to announce instead of the listen addresses (NAT, public IP)'
  }),
  zone: option(z.string().min(1).max(64).default('default'), { arg: '<name>', help: 'failure/bandwidth domain' }),
  host: option(z.string().min(1).max(253).default(hostname()), { arg: '<name>', help: 'machine name', defaultText: 'the hostname' }),
  dataDir: option(z.string().min(1).optional(), { arg: '<dir>', help: 'identity key, control socket and disk tier', defaultText: '~/.zeromesh/<run>' }),
  expect: option(z.int().min(1).max(1024).default(1), {
    arg: '<n>',
    help: 'nodes needed before the first view forms; set it above half the nodes you start so two first views cannot form'
  }),
  heartbeatMs: option(z.int().min(20).max(60_000).default(500), { arg: '<ms>', help: 'heartbeat period' }),
  mdns: option(z.boolean().default(false), { help: 'discover peers on the LAN' }),
  logLevel: option(z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('warn'), {
    arg: '<level>',
    help: 'structured logs on stderr'
  }),
  metricsListen: option(hostPort.optional(), {
    arg: '<host:port>',
    help: 'serve Prometheus metrics at http://<host:port>/metrics (e.g. 127.0.0.1:9464; port 0 picks a free one)',
    defaultText: 'off'
  }),
  http: option(dashboardListen.optional(), {
    arg: '<[host:]port>',
    help: "serve this node's live dashboard at http://<host:port>/ (a bare port binds loopback: 8080 is 127.0.0.1:8080; port 0 picks a free one)",
    defaultText: 'off'
  }),
  train: option(z.boolean().default(false), { help: 'train (without it the node only joins the mesh)', section: TRAINING }),
  device: option(z.enum(['cpu', 'cuda']).default('cpu'), { arg: '<device>', help: 'backend' }),
  model: option(z.enum(TRAIN_MODELS).default('mini'), { arg: '<name>', help: 'model shape' }),
  initFrom: option(z.string().min(1).optional(), {
    arg: '<dir|file>',
    help: "start from an HF GPT-2 checkpoint (a dir with model.safetensors and config.json, or a zeromesh export) instead of the seed's weights; the model shape is the checkpoint's (--model is ignored)",
    defaultText: "the seed's initial weights"
  }),
  data: option(z.string().min(1).optional(), { arg: '<file>', help: 'text or llm.c .bin tokens', defaultText: 'the Brown Corpus' }),
  tokenizer: option(z.enum(TOKENIZERS).default('bytes'), {
    arg: '<bytes|gpt2>',
    help: "how text data becomes tokens: its bytes, or GPT-2's BPE (vocabulary 50257; what a GPT-2 checkpoint wants)"
  }),
  steps: option(z.int().min(0).max(10_000_000).default(200), { arg: '<n>', help: 'steps to train' }),
  worldSize: option(z.int().min(1).max(1024).optional(), { arg: '<n>', help: 'training ranks', defaultText: '--expect' }),
  maxWorldSize: option(z.int().min(1).max(1024).optional(), {
    arg: '<n>',
    help: 'grow the run up to n ranks as nodes join, at a step boundary',
    defaultText: 'never grow'
  }),
  batch: option(z.int().min(1).max(4096).default(4), { arg: '<n>', help: 'sequences per rank per step' }),
  seq: option(z.int().min(2).max(1024).default(64), { arg: '<n>', help: 'sequence length' }),
  lr: option(z.number().positive().max(1).optional(), {
    arg: '<x>',
    help: 'learning rate',
    defaultText: '3e-3 (AdamW, 8-bit AdamW), 1e-4 (Lion, 8-bit Lion), 1e-3 (--zo)'
  }),
  optimizer: option(z.enum(OPTIMIZERS).default('adamw'), {
    arg: '<adamw|lion|adamw8bit|lion8bit>',
    help: 'AdamW (two moments), Lion (one moment and a sign update: state and snapshots 8 bytes per parameter instead of 12), adamw8bit (AdamW with 8-bit block-quantized moments: about 6 bytes per parameter), or lion8bit (Lion with its moment so: about 5 bytes per parameter)'
  }),
  zo: option(z.boolean().default(false), {
    help: 'zeroth-order training (MeZO): two forward passes a step, no gradients or optimizer state; the ranks exchange one (projected gradient, loss) pair each per step instead of the model (for fine-tuning over slow links; see the README)'
  }),
  zoEps: option(z.number().positive().max(1).default(1e-3), { arg: '<x>', help: 'the zeroth-order perturbation size ε (with --zo)' }),
  offload: option(z.enum(['none', 'cpu']).default('none'), {
    arg: '<none|cpu>',
    help: 'cpu: master weights, gradients and optimizer state in host memory, the optimizer on worker threads; the device keeps the streamed model and activations only (a model whose training state does not fit the device)'
  }),
  offloadThreads: option(z.int().min(1).max(64).optional(), {
    arg: '<n>',
    help: 'optimizer threads with --offload cpu',
    defaultText: 'the cores beyond two, at most 16'
  }),
  deviceMemory: option(sizeSchema.optional(), {
    arg: '<size>',
    help: 'device memory the trainer may hold at most (e.g. 8GiB, 500MB): beyond it an allocation fails as on a smaller device',
    defaultText: "the device's"
  }),
  seed: option(z.int().min(0).default(1), { arg: '<n>', help: 'run seed' }),
  zeropp: option(z.boolean().default(false), { help: 'ZeRO++ (int8 weights, zone-local backward gather, int4 gradients)' }),
  outerEvery: option(z.int().min(1).max(1_000_000).optional(), {
    arg: '<H>',
    help: 'DiLoCo across zones: zone groups train apart and average their quantized pseudo-gradients every H steps',
    defaultText: 'off: every rank syncs every step'
  }),
  outerZones: option(z.int().min(1).max(64).default(2), {
    arg: '<n>',
    help: 'zone groups with --outer-every: --world-size / n ranks from each of n zones (by --zone label)'
  }),
  outerQuant: option(z.enum(['int8', 'int4']).default('int8'), {
    arg: '<int8|int4>',
    help: 'quantization of the pseudo-gradients (blockwise, error feedback)'
  }),
  outerLr: option(z.number().positive().max(10).default(0.7), { arg: '<x>', help: 'outer Nesterov learning rate' }),
  outerMomentum: option(z.number().min(0).max(0.999).default(0.9), { arg: '<x>', help: 'outer Nesterov momentum' }),
  streaming: option(z.boolean().default(false), {
    help: 'streaming DiLoCo: 4 fragments on a staggered schedule, each exchange overlapped with the next H/4 steps'
  }),
  snapshotPlacement: option(z.enum(['zone', 'spread']).optional(), {
    arg: '<zone|spread>',
    help: "where a rank's snapshot fragments go: its own zone's hosts, or spread over zones",
    defaultText: 'zone with --outer-every, else spread'
  }),
  snapshot: option(
    z
      .string()
      .regex(/^(off|[1-9]\d?\+[0-9]\d?)$/, 'must be k+m (e.g. 2+1) or off')
      .default('2+1'),
    { arg: '<k+m|off>', help: 'erasure-coded snapshot of every rank: k data and m parity fragments' }
  ),
  snapshotEvery: option(z.int().min(1).max(10_000_000).default(1), {
    arg: '<n>',
    help: 'snapshot every n committed steps (and the first step of every session): a loss then re-runs up to n-1 more steps, for less snapshot traffic (with --outer-every: at each outer stage instead)'
  }),
  diskEvery: option(z.int().min(0).max(10_000_000).default(10), {
    arg: '<n>',
    help: "write this rank's state to <data dir>/train every n steps (0: never); `zeromesh export` reads these files"
  }),
  resume: option(z.boolean().default(false), { help: 'continue from the newest step every rank has on disk' }),
  exitWhenDone: option(z.boolean().default(false), { help: 'leave the run and exit once training ends' })
}

/** The rules between options that no single option's schema can check. */
function checkStart(
  c: {
    initFrom?: string | undefined
    resume: boolean
    train: boolean
    worldSize?: number | undefined
    expect: number
    maxWorldSize?: number | undefined
    outerEvery?: number | undefined
    outerZones: number
    streaming: boolean
    offload: 'none' | 'cpu'
    offloadThreads?: number | undefined
    zo: boolean
  },
  ctx: z.RefinementCtx
): void {
  if (c.initFrom !== undefined && !c.train)
    ctx.addIssue({ code: 'custom', path: ['initFrom'], message: 'needs --train (it sets the initial weights of training)' })
  if (c.resume && !c.train) ctx.addIssue({ code: 'custom', path: ['resume'], message: 'needs --train (it resumes training from the disk tier)' })
  const ws = c.worldSize ?? c.expect
  if (c.maxWorldSize !== undefined && c.maxWorldSize < ws)
    ctx.addIssue({ code: 'custom', path: ['maxWorldSize'], message: `must be at least the world size (${ws})` })
  if (c.outerEvery !== undefined && ws % c.outerZones !== 0)
    ctx.addIssue({ code: 'custom', path: ['outerZones'], message: `must divide the world size (${ws}) into equal zone groups` })
  if (c.outerEvery !== undefined && c.maxWorldSize !== undefined && c.maxWorldSize !== ws)
    ctx.addIssue({ code: 'custom', path: ['maxWorldSize'], message: 'growing the run does not combine with --outer-every yet' })
  if (c.streaming && c.outerEvery === undefined) ctx.addIssue({ code: 'custom', path: ['streaming'], message: 'needs --outer-every' })
  if (c.offload === 'cpu' && c.zo) ctx.addIssue({ code: 'custom', path: ['offload'], message: 'a --zo run keeps no optimizer state to offload' })
  if (c.offloadThreads !== undefined && c.offload !== 'cpu') ctx.addIssue({ code: 'custom', path: ['offloadThreads'], message: 'needs --offload cpu' })
}

/** One strict schema for a node's configuration (unknown keys are errors). */
export const startSchema = z.strictObject(shapeOf(START_OPTIONS)).superRefine(checkStart)

/** A validated node configuration, its data dir resolved. */
export type StartConfig = z.output<typeof startSchema> & { dataDir: string }

/** Where a node of `run` keeps its identity and control socket unless told otherwise. */
export function defaultDataDir(run: string): string {
  return join(homedir(), '.zeromesh', run)
}

/** The largest secret file read (a run secret is 16 bytes or more; 32 random bytes in hex is 65). */
export const MAX_SECRET_FILE_BYTES = 64 * 1024

/** Reads the run secret: the file's bytes without one trailing newline, at least 16 bytes. */
export function readSecret(file: string): Uint8Array {
  let bytes: Uint8Array
  try {
    bytes = readFileCapped(file, MAX_SECRET_FILE_BYTES, 'secret file')
  } catch (err) {
    const e = err as NodeJS.ErrnoException
    throw new ConfigError(e.code !== undefined ? `cannot read secret file ${file}: ${e.code}` : e.message)
  }
  let end = bytes.length
  if (end > 0 && bytes[end - 1] === 0x0a) end--
  if (end > 0 && bytes[end - 1] === 0x0d) end--
  if (end < MIN_SECRET_BYTES) throw new ConfigError(`secret file ${file} holds ${end} bytes; a run secret needs at least ${MIN_SECRET_BYTES}`)
  return bytes.subarray(0, end)
}
