import { parseArgs, type ParseArgsOptionsConfig } from 'node:util'
import { VERSION, ZeromeshError } from '../core/index.ts'
import { ConfigError, START_FLAG_OPTIONS, defaultDataDir, loadStartConfig } from './config.ts'
import { ControlError, fetchStatus } from './control.ts'
import { formatStatus } from './status-format.ts'

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
  start: {
    summary: 'start a node and join (or begin) a run',
    usage: [
      'zeromesh start --run <id> --secret-file <file> [--bootstrap <multiaddr>]... [flags]',
      '',
      '  --run <id>             run id (1-64 of A-Z a-z 0-9 . _ -)            ZEROMESH_RUN',
      '  --secret-file <file>   file holding the run secret (>= 16 bytes)       ZEROMESH_SECRET_FILE',
      '  --bootstrap <addr>     a member\'s multiaddr ending in /p2p/<id>; repeat ZEROMESH_BOOTSTRAP=a,b',
      '  --listen <addr>        listen multiaddr (default /ip4/0.0.0.0/tcp/0)  ZEROMESH_LISTEN',
      '  --announce <addr>      address to announce instead (NAT, public IP)   ZEROMESH_ANNOUNCE',
      '  --zone <name>          failure/bandwidth domain (default "default")   ZEROMESH_ZONE',
      '  --host <name>          machine name (default the hostname)           ZEROMESH_HOST',
      '  --data-dir <dir>       identity key and control socket (default ~/.zeromesh/<run>)',
      '  --expect <n>           nodes needed before the first view forms (default 1); set it',
      '                         above half the nodes you start so two first views cannot form',
      '  --heartbeat-ms <ms>    heartbeat period (default 500)',
      '  --mdns                 discover peers on the LAN',
      '  --log-level <level>    structured logs on stderr (default warn)',
      '  --config <file.json>   the same settings as JSON (flags > env > file > defaults)'
    ].join('\n'),
    run: async (args, io) => {
      const { values } = parseStrict(args, START_FLAG_OPTIONS)
      const cfg = loadStartConfig(values)
      const { startNode } = await import('./start.ts')
      const node = await startNode(cfg, io.out)
      await new Promise<void>(resolve => {
        const stop = (): void => { resolve() }
        process.once('SIGINT', stop)
        process.once('SIGTERM', stop)
      })
      io.out('stopping: leaving the run')
      await node.stop()
      return 0
    }
  },
  status: {
    summary: 'show the view and health seen by a running node',
    usage: [
      'zeromesh status [--data-dir <dir> | --run <id>] [--json]',
      '',
      '  --data-dir <dir>   the node\'s data dir (default ~/.zeromesh/<run>)',
      '  --run <id>         run id, to find the default data dir',
      '  --json             print the raw status object'
    ].join('\n'),
    run: async (args, io) => {
      const { values } = parseStrict(args, { 'data-dir': { type: 'string' }, run: { type: 'string' }, json: { type: 'boolean' } })
      const dataDir = values['data-dir'] ?? (values.run !== undefined ? defaultDataDir(values.run) : undefined)
      if (dataDir === undefined) throw new UsageError('status needs --data-dir <dir> or --run <id>')
      const status = await fetchStatus(dataDir)
      io.out(values.json === true ? JSON.stringify(status, null, 2) : formatStatus(status))
      return 0
    }
  },
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
    if (err instanceof UsageError || err instanceof ConfigError) {
      io.err(`zeromesh: ${err.message}`)
      return 2
    }
    if (err instanceof ControlError || err instanceof ZeromeshError) {
      io.err(`zeromesh: ${err.message}`)
      return 1
    }
    const e = err as Error
    io.err(`zeromesh: ${e.name}: ${e.message}`)
    return 1
  }
}
