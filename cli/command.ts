import type { OptionsSpec } from '../node/index.ts'
import { optionsHelp } from './flags.ts'

/** Where a command writes: lines for stdout and for stderr. */
export interface Io {
  out: (line: string) => void
  err: (line: string) => void
}

/** One `zeromesh` command. */
export interface Command {
  /** One line for `zeromesh --help`. */
  summary: string
  /** `zeromesh <command> --help`: the synopsis, every flag with its default, and notes. */
  usage: () => string
  /** Runs the command with its arguments; returns the exit code. */
  run: (args: string[], io: Io) => Promise<number>
}

/** A command's help: `synopsis`, the flags of each spec (with their ZEROMESH_* names when `env`), then `notes`. */
export function usageText(synopsis: string, specs: readonly OptionsSpec[], opts: { env?: boolean; notes?: readonly string[] } = {}): string {
  const flags = specs.flatMap(s => optionsHelp(s, opts.env === true))
  return [synopsis, ...(flags.length === 0 ? [] : ['', ...flags]), ...(opts.notes === undefined ? [] : ['', ...opts.notes])].join('\n')
}
