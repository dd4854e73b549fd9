import { z } from 'zod'
import { ControlError, START_OPTIONS, defaultDataDir, fetchStatus, option, shapeOf } from '../node/index.ts'
import { usageText, type Command } from './command.ts'
import { UsageError, parseCommandLine, readOptions } from './flags.ts'
import { formatStatus } from './status-format.ts'

/** The options of `zeromesh status`. */
export const STATUS_OPTIONS = {
  dataDir: option(z.string().min(1).optional(), { arg: '<dir>', help: "the node's data dir", defaultText: '~/.zeromesh/<run>' }),
  run: option(START_OPTIONS.run.schema.optional(), { arg: '<id>', help: 'run id, to find the default data dir' }),
  json: option(z.boolean().default(false), { help: 'print the raw status object' })
}
const statusSchema = z.strictObject(shapeOf(STATUS_OPTIONS))

/** `zeromesh status`. */
export const statusCommand: Command = {
  summary: 'show the view and health seen by a running node',
  usage: () => usageText('zeromesh status [--data-dir <dir> | --run <id>] [--json]', [STATUS_OPTIONS]),
  run: async (args, io) => {
    const { values } = parseCommandLine(args, [STATUS_OPTIONS])
    const o = readOptions(STATUS_OPTIONS, statusSchema, values)
    const dataDir = o.dataDir ?? (o.run !== undefined ? defaultDataDir(o.run) : undefined)
    if (dataDir === undefined) throw new UsageError('status needs --data-dir <dir> or --run <id>')
    const status = await fetchStatus(dataDir)
    if (o.json) {
      io.out(JSON.stringify(status, null, 2))
      return 0
    }
    let text: string
    try {
      text = formatStatus(status as Parameters<typeof formatStatus>[0])
    } catch (err) {
      // A status of another shape (another version of zeromesh, or not zeromesh at all).
      throw new ControlError(`the node at ${dataDir} answered a status this zeromesh cannot read (${(err as Error).message}); --json prints it as it came`)
    }
    io.out(text)
    return 0
  }
}
