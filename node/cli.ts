import { parseArgs, type ParseArgsOptionsConfig } from 'node:util'
import { VERSION, ZeromeshError } from '../core/index.ts'

/**
 * The `zeromesh` command line. Each command is one entry in COMMANDS; errors print one line
 * (no stack) and exit non-zero: 2 for usage errors, 1 for failures.
 */

/** A usage error: bad command, flag or value. Printed as one line, exit code 2. */
export class UsageError extends ZeromeshError {
  static override name = 'UsageError'
}

interface Io { out: (line: string) => void, err: (line: string) => void }

interface Command {
  summary: string
  usage: string
  run: (args: string[], io: Io) => Promise<number>
}

const COMMANDS: Record<string, Command> = {
  version: {
    summary: 'print the zeromesh version',
    usage: 'zeromesh version',
    run: async (args, io) => {
      parseStrict(args, {})
      io.out(VERSION)
      return 0
    }
  }
}

function parseStrict<O extends ParseArgsOptionsConfig> (args: string[], options: O): ReturnType<typeof parseArgs<{ args: string[], options: O, strict: true, allowPositionals: false }>> {
  try {
    return parseArgs({ args, options, strict: true, allowPositionals: false })
  } catch (err) {
    throw new UsageError((err as Error).message)
  }
}

function help (): string {
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

/** Runs the CLI with `argv` (without node and script); returns the exit code. */
export async function main (argv: string[], io: Io = { out: l => process.stdout.write(l + '\n'), err: l => process.stderr.write(l + '\n') }): Promise<number> {
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
      io.out(`${cmd.usage}\n\n${cmd.summary}`)
      return 0
    }
    return await cmd.run(rest, io)
  } catch (err) {
    if (err instanceof UsageError) {
      io.err(`zeromesh: ${err.message}`)
      return 2
    }
    const e = err as Error
    io.err(`zeromesh: ${e.name}: ${e.message}`)
    return 1
  }
}
