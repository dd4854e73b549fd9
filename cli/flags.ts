import { parseArgs, type ParseArgsOptionsConfig } from 'node:util'
import type { z } from 'zod'
import { ZeromeshError, readFileCapped } from '../core/index.ts'
import { ConfigError, type OptionSpec, type OptionsSpec } from '../node/index.ts'

/**
 * Command-line flags from an option spec (node/options.ts): the parseArgs options, the
 * conversion of flag and ZEROMESH_* strings to the schema's types, one-line errors and the help
 * lines all come from the spec, so an option is written once.
 */

/** A usage error: bad command, flag or value. Printed as one line, exit code 2. */
export class UsageError extends ZeromeshError {
  static override name = 'UsageError'
}

/** The flag of a schema key, without dashes: `secretFile` -> `secret-file`. */
export function flagOf(key: string): string {
  return key.replace(/[A-Z]/g, c => `-${c.toLowerCase()}`)
}

/** The environment variable of a schema key: `secretFile` -> `ZEROMESH_SECRET_FILE`. */
export function envOf(key: string): string {
  return `ZEROMESH_${flagOf(key).toUpperCase().replaceAll('-', '_')}`
}

/** How a flag's string becomes the schema's value. */
type Kind = 'string' | 'list' | 'int' | 'number' | 'bool'

/** What an option's schema says about its values: for conversion, messages and help. */
interface Described {
  kind: Kind
  /** The schema's default, when it has one. */
  dflt?: unknown
  required: boolean
  min?: number
  max?: number
  choices?: readonly string[]
}

interface Def {
  type: string
  innerType?: z.ZodType
  in?: z.ZodType
  defaultValue?: unknown
  entries?: Record<string, string>
}
const defOf = (s: z.ZodType): Def => (s as unknown as { def: Def }).def

/** Reads kind, default, range and choices off an option's zod schema. */
function describe(o: OptionSpec): Described {
  let s = o.schema
  let dflt: unknown
  for (;;) {
    const def = defOf(s)
    if (def.type === 'default') dflt = def.defaultValue
    if ((def.type === 'default' || def.type === 'optional') && def.innerType !== undefined) s = def.innerType
    else if (def.type === 'pipe' && def.in !== undefined) s = def.in
    else break
  }
  const type = defOf(s).type
  const required = !o.schema.safeParse(undefined).success
  if (type === 'array') return { kind: 'list', dflt, required }
  if (type === 'boolean') return { kind: 'bool', dflt, required }
  if (type === 'enum') return { kind: 'string', dflt, required, choices: Object.values(defOf(s).entries ?? {}) }
  if (type !== 'number') return { kind: 'string', dflt, required }
  const n = s as unknown as { format: string | null; minValue: number | null; maxValue: number | null }
  const bound = (v: number | null): number | undefined => (v === null || Math.abs(v) >= Number.MAX_SAFE_INTEGER ? undefined : v)
  const min = bound(n.minValue)
  const max = bound(n.maxValue)
  return {
    kind: n.format === 'safeint' || n.format === 'int32' ? 'int' : 'number',
    dflt,
    required,
    ...(min === undefined ? {} : { min }),
    ...(max === undefined ? {} : { max })
  }
}

/** `an integer in [1, 64]`, `cpu or cuda`: what a value must be, for messages. */
function expected(d: Described): string {
  if (d.choices !== undefined) return d.choices.length < 2 ? d.choices.join('') : `${d.choices.slice(0, -1).join(', ')} or ${d.choices.at(-1)}`
  const what = d.kind === 'int' ? 'an integer' : 'a number'
  if (d.min !== undefined && d.max !== undefined) return `${what} in [${d.min}, ${d.max}]`
  if (d.min !== undefined) return `${what} >= ${d.min}`
  if (d.max !== undefined) return `${what} <= ${d.max}`
  return what
}

/** The parseArgs options of some specs (each key as its flag). */
function parseOptions(specs: readonly OptionsSpec[]): ParseArgsOptionsConfig {
  const options: ParseArgsOptionsConfig = {}
  for (const spec of specs) {
    for (const [key, o] of Object.entries(spec)) {
      const kind = describe(o).kind
      options[flagOf(key)] = { type: kind === 'bool' ? 'boolean' : 'string', multiple: kind === 'list' }
    }
  }
  return options
}

/** Parsed command line: flag values by flag name, and positionals when the command takes them. */
export interface CommandLine {
  values: Record<string, unknown>
  positionals: string[]
}

/** Parses `args` strictly against the flags of `specs`; anything unknown is a {@link UsageError}. */
export function parseCommandLine(args: string[], specs: readonly OptionsSpec[], allowPositionals = false): CommandLine {
  try {
    const { values, positionals } = parseArgs({ args, options: parseOptions(specs), strict: true, allowPositionals })
    return { values, positionals }
  } catch (err) {
    throw new UsageError((err as Error).message)
  }
}

/** A flag's or variable's value as the schema's type; `source` names it in the error. */
function convert(source: string, d: Described, raw: unknown): unknown {
  if (d.kind === 'int' || d.kind === 'number') {
    const n = Number(raw)
    if (String(raw).trim() === '' || (d.kind === 'int' ? !Number.isInteger(n) : !Number.isFinite(n)))
      throw new ConfigError(`${source} must be ${expected(d)}, got '${String(raw)}'`)
    return n
  }
  if (d.kind === 'bool') return raw === true || raw === 'true' || raw === '1'
  if (d.kind === 'list') return (Array.isArray(raw) ? raw : String(raw).split(',')).map(s => String(s).trim()).filter(s => s.length > 0)
  return raw
}

/** Where option values come from besides the flags, lowest first: a config file, then the environment. */
export interface Sources {
  file?: Record<string, unknown>
  /** The config file's path, for errors about its values. */
  fileName?: string
  env?: Record<string, string | undefined>
}

/**
 * Validates the options of `spec` with `schema`: the flags (parseArgs values) over the ZEROMESH_*
 * variables of `sources.env` over the keys of `sources.file` over the schema's defaults. The
 * first problem is a {@link ConfigError} of one line that names the flag.
 */
export function readOptions<S extends z.ZodType>(spec: OptionsSpec, schema: S, flags: Record<string, unknown>, sources: Sources = {}): z.output<S> {
  const fromEnv: Record<string, unknown> = {}
  const fromFlags: Record<string, unknown> = {}
  for (const [key, o] of Object.entries(spec)) {
    const d = describe(o)
    const env = sources.env?.[envOf(key)]
    if (env !== undefined && env !== '') fromEnv[key] = convert(envOf(key), d, env)
    const flag = flags[flagOf(key)]
    if (flag !== undefined) fromFlags[key] = convert(`--${flagOf(key)}`, d, flag)
  }
  const parsed = schema.safeParse({ ...sources.file, ...fromEnv, ...fromFlags }, { reportInput: true })
  if (!parsed.success) {
    const issue = parsed.error.issues[0]!
    const key = issue.path[0]
    // A bad value that came from the config file is named as the file's (not as a flag the user never gave).
    if (typeof key === 'string' && sources.file !== undefined && Object.hasOwn(sources.file, key) && !(key in fromEnv) && !(key in fromFlags)) {
      const where = sources.fileName === undefined ? 'the config file' : `config file ${sources.fileName}`
      throw new ConfigError(`${where}: "${key}" (--${flagOf(key)}): ${issue.message}`)
    }
    throw new ConfigError(issueLine(issue, spec))
  }
  return parsed.data
}

/** One line for a schema issue, naming the flag. */
function issueLine(issue: z.core.$ZodIssue, spec: OptionsSpec): string {
  const key = issue.path[0]
  const o = typeof key === 'string' && Object.hasOwn(spec, key) ? spec[key] : undefined
  if (o === undefined || typeof key !== 'string') {
    return issue.code === 'unrecognized_keys'
      ? `unknown setting${issue.keys.length === 1 ? '' : 's'} ${issue.keys.map(k => `'${k}'`).join(', ')} in the config file`
      : `config: ${issue.message}`
  }
  const flag = `--${flagOf(key)}`
  const d = describe(o)
  const input = (issue as { input?: unknown }).input
  const atOption = issue.path.length === 1
  if (atOption && issue.code === 'invalid_type' && input === undefined) return o.required ?? `${flag} is required`
  if (atOption && issue.code === 'too_small' && (issue.origin === 'string' || issue.origin === 'array')) return o.required ?? `${flag} ${issue.message}`
  if (atOption && issue.code === 'too_big' && issue.origin === 'array')
    return `at most ${String(issue.maximum)} ${flag}, got ${Array.isArray(input) ? input.length : '?'}`
  const numeric = d.kind === 'int' && (issue.code === 'too_small' || issue.code === 'too_big')
  if (atOption && (numeric || issue.code === 'invalid_type' || (issue.code === 'invalid_value' && d.choices !== undefined)))
    return `${flag} must be ${expected(d)}, got '${String(input)}'`
  return `${flag} ${issue.message}`
}

/** The largest `--config` file read. */
export const MAX_CONFIG_FILE_BYTES = 1024 * 1024

/** Reads a `--config` file: one JSON object whose keys are the options' schema keys. */
export function readConfigFile(file: string): Record<string, unknown> {
  let text: string
  try {
    text = readFileCapped(file, MAX_CONFIG_FILE_BYTES, 'config file').toString('utf8')
  } catch (err) {
    const e = err as NodeJS.ErrnoException
    throw new ConfigError(e.code !== undefined ? `cannot read config file ${file}: ${e.code}` : e.message)
  }
  try {
    const parsed: unknown = JSON.parse(text)
    if (parsed === null || typeof parsed !== 'object' || Array.isArray(parsed)) throw new Error('not a JSON object')
    return parsed as Record<string, unknown>
  } catch (err) {
    throw new ConfigError(`config file ${file} is not valid JSON: ${(err as Error).message}`)
  }
}

const HELP_WIDTH = 100

/** A default as help shows it; undefined when there is nothing worth saying (off switches, empty lists). */
function shownDefault(o: OptionSpec, d: Described): string | undefined {
  if (o.defaultText !== undefined) return o.defaultText
  if (d.dflt === undefined || d.dflt === false) return undefined
  if (Array.isArray(d.dflt)) return d.dflt.length === 0 ? undefined : d.dflt.join(',')
  return String(d.dflt)
}

/**
 * Help lines for every option of `spec`: flag, placeholder, what it does, its default (or that
 * it is required) and, with `env`, its ZEROMESH_* variable. Sections start with their heading.
 */
export function optionsHelp(spec: OptionsSpec, env = false): string[] {
  const entries = Object.entries(spec).map(([key, o]) => {
    const d = describe(o)
    const arg = o.arg ?? d.choices?.join('|')
    return { key, o, d, left: `--${flagOf(key)}${arg === undefined || d.kind === 'bool' ? '' : ` ${arg}`}` }
  })
  const width = Math.min(28, Math.max(...entries.map(e => e.left.length)))
  const lines: string[] = []
  for (const { key, o, d, left } of entries) {
    if (o.section !== undefined) lines.push('', o.section)
    const dflt = shownDefault(o, d)
    const notes = [
      ...(d.choices !== undefined && o.arg !== undefined ? [expected(d)] : []),
      ...(d.required ? ['required'] : dflt === undefined ? [] : [`default ${dflt}`]),
      ...(env ? [envOf(key)] : [])
    ]
    const text = `${o.help}${notes.length === 0 ? '' : ` (${notes.join('; ')})`}`
    const wrapped = wrap(text, HELP_WIDTH - width - 4)
    if (left.length > width) lines.push(`  ${left}`, ...wrapped.map(l => `  ${''.padEnd(width)}  ${l}`))
    else lines.push(...wrapped.map((l, i) => `  ${(i === 0 ? left : '').padEnd(width)}  ${l}`))
  }
  return lines
}

/** Splits `text` into lines of at most `width` characters at spaces (a longer word stays whole). */
function wrap(text: string, width: number): string[] {
  const lines: string[] = []
  let line = ''
  for (const word of text.split(' ')) {
    if (line !== '' && line.length + 1 + word.length > width) {
      lines.push(line)
      line = word
    } else {
      line = line === '' ? word : `${line} ${word}`
    }
  }
  if (line !== '') lines.push(line)
  return lines
}
