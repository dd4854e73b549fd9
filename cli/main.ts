import { VERSION, ZeromeshError } from '../core/index.ts'
import { ConfigError, ControlError } from '../node/index.ts'
import type { Command, Io } from './command.ts'
import { doctorCommand } from './doctor/command.ts'
import { exportCommand } from './export/command.ts'
import { sampleCommand } from './sample/command.ts'
import { UsageError, parseCommandLine } from './flags.ts'
import { simCommand } from './sim.ts'
import { startCommand } from './start.ts'
import { statusCommand } from './status.ts'
import { upCommand } from './up/command.ts'

/**
 * The `zeromesh` command line: one entry per command in COMMANDS, each in its own module of
 * cli/. Errors print one line (no stack) and exit non-zero: 2 for usage errors, 1 for failures.
 */

const versionCommand: Command = {
  summary: 'print the zeromesh version',
  usage: () => 'zeromesh version',
  run: async (args, io) => {
    parseCommandLine(args, [])
    io.out(VERSION)
    return 0
  }
}

const COMMANDS: Record<string, Command> = {
  start: startCommand,
  up: upCommand,
  export: exportCommand,
  sample: sampleCommand,
  sim: simCommand,
  doctor: doctorCommand,
  status: statusCommand,
  version: versionCommand
}

function help(): string {
  const width = Math.max(...Object.keys(COMMANDS).map(c => c.length))
  return [
    `zeromesh ${VERSION}: a fault-tolerant training mesh`,
    '',
    'usage: zeromesh <command> [flags]',
    '',
    'commands:',
    ...Object.entries(COMMANDS).map(([name, c]) => `  ${name.padEnd(width)}  ${c.summary}`),
    '',
    'flags:',
    '  --version  print the version',
    '  --help     show this help (also: zeromesh <command> --help)'
  ].join('\n')
}

/** The exit code and the line for an error that ended a command. */
function failure(err: unknown): { code: number; line: string } {
  const e = err as Error & { code?: string }
  // Usage errors: bad commands, flags, configuration, data and scenario files. One line, exit 2.
  if (
    err instanceof UsageError ||
    err instanceof ConfigError ||
    e.name === 'ScenarioError' ||
    e.name === 'DataError' ||
    e.code?.startsWith('ERR_PARSE_ARGS') === true
  ) {
    return { code: 2, line: `zeromesh: ${e.message}` }
  }
  if (err instanceof ControlError || err instanceof ZeromeshError) return { code: 1, line: `zeromesh: ${e.message}` }
  return { code: 1, line: `zeromesh: ${e.name}: ${e.message}` }
}

/** Runs the CLI with `argv` (without node and script); returns the exit code. */
export async function main(argv: string[], io: Io = { out: l => process.stdout.write(l + '\n'), err: l => process.stderr.write(l + '\n') }): Promise<number> {
  try {
    const [first, ...rest] = argv
    if (first === undefined || first === '--help' || first === '-h' || first === 'help') {
      io.out(help())
      return first === undefined ? 2 : 0
    }
    if (first === '--version' || first === '-v') {
      if (rest.length > 0) throw new UsageError(`--version takes no arguments, got '${rest[0]}'`)
      io.out(VERSION)
      return 0
    }
    const cmd = COMMANDS[first]
    if (cmd === undefined || !Object.hasOwn(COMMANDS, first)) {
      throw new UsageError(`unknown command '${first}' (run 'zeromesh --help' for the list)`)
    }
    if (rest.includes('--help') || rest.includes('-h')) {
      io.out(`${cmd.usage()}\n\n${cmd.summary}`)
      return 0
    }
    return await cmd.run(rest, io)
  } catch (err) {
    const f = failure(err)
    io.err(f.line)
    return f.code
  }
}
