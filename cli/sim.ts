import { writeFileSync } from 'node:fs'
import { z } from 'zod'
import { option, shapeOf } from '../node/index.ts'
import { usageText, type Command, type Io } from './command.ts'
import { UsageError, parseCommandLine, readOptions } from './flags.ts'
import { progressBar } from './progress.ts'

/** The options of `zeromesh sim` (besides the scenario file). */
export const SIM_OPTIONS = {
  seed: option(z.int().min(0).optional(), { arg: '<n>', help: "override the scenario's seed (a run is reproduced exactly by its seed)" }),
  nodes: option(z.int().min(1).optional(), { arg: '<n>', help: 'override the node count' }),
  report: option(z.string().min(1).optional(), { arg: '<file>', help: 'write the full report as JSON' }),
  svg: option(z.string().min(1).optional(), { arg: '<file>', help: 'write a timeline of node states, views and faults' }),
  html: option(z.string().min(1).optional(), {
    arg: '<file>',
    help: 'write the report as a web page (verdict and replay command, invariants, timeline, views, faults, traffic; or progress and recoveries of a training scenario)'
  }),
  quiet: option(z.boolean().default(false), { help: 'no progress bar' })
}
const simSchema = z.strictObject(shapeOf(SIM_OPTIONS))
type SimOptions = z.output<typeof simSchema>

/** The command that reproduces a run. */
function replayCommand(file: string, seed: number, o: SimOptions): string {
  return `npx zeromesh sim ${file} --seed ${seed}${o.nodes === undefined ? '' : ` --nodes ${o.nodes}`}`
}

/** The line that reproduces a failed run. */
function replay(file: string, seed: number, o: SimOptions): string {
  return `replay: ${replayCommand(file, seed, o)}`
}

/** Writes the report page and says where it is. */
function writeHtml(io: Io, file: string, html: string): void {
  writeFileSync(file, html)
  io.out(`report page: ${file}`)
}

/** A training scenario: the real trainer on every simulated node (see sim/train-run.ts); undefined when `file` is not one. */
async function runTraining(file: string, o: SimOptions, io: Io): Promise<number | undefined> {
  const { readTrainScenario, runTrainScenario, formatTrainReport, trainReportHtml } = await import('../sim/index.ts')
  const train = readTrainScenario(file)
  if (train === undefined) return undefined
  if (o.svg !== undefined) throw new UsageError('--svg draws membership timelines; training scenarios have no timeline yet')
  const bar = o.quiet ? undefined : progressBar(process.stderr, 'of the training steps')
  const r = await runTrainScenario(train, {
    ...(o.seed === undefined ? {} : { seed: o.seed }),
    ...(o.nodes === undefined ? {} : { nodes: o.nodes }),
    ...(bar === undefined ? {} : { progress: bar.update })
  })
  bar?.done()
  io.out(formatTrainReport(r))
  if (o.report !== undefined) writeFileSync(o.report, JSON.stringify(r, null, 2) + '\n')
  if (o.html !== undefined) writeHtml(io, o.html, trainReportHtml(r, replayCommand(file, r.seed, o)))
  if (!r.ok) io.out(replay(file, r.seed, o))
  return r.ok ? 0 : 1
}

/** A membership scenario on the simulator. */
async function runMembership(file: string, o: SimOptions, io: Io): Promise<number> {
  const { loadScenario, runScenario, formatReport, timelineSvg, membershipReportHtml } = await import('../sim/index.ts')
  const scenario = loadScenario(file)
  const bar = o.quiet ? undefined : progressBar(process.stderr)
  const report = await runScenario(scenario, {
    ...(o.seed === undefined ? {} : { seed: o.seed }),
    ...(o.nodes === undefined ? {} : { nodes: o.nodes }),
    ...(bar === undefined ? {} : { progress: bar.update })
  })
  bar?.done()
  io.out(formatReport(report))
  if (o.report !== undefined) writeFileSync(o.report, JSON.stringify(report, null, 2) + '\n')
  if (o.svg !== undefined) writeFileSync(o.svg, timelineSvg(report))
  if (o.html !== undefined) writeHtml(io, o.html, membershipReportHtml(report, replayCommand(file, report.seed, o)))
  if (!report.ok) io.out(replay(file, report.seed, o))
  return report.ok ? 0 : 1
}

/** `zeromesh sim`. */
export const simCommand: Command = {
  summary: 'run a failure scenario on the deterministic simulator',
  usage: () =>
    usageText('zeromesh sim <scenario.json> [flags]', [SIM_OPTIONS], {
      notes: [
        '<scenario.json> is a scenario file (see sim/scenarios/ for examples); with "workload": "train"',
        'the real trainer runs on every simulated node with a compute cost model.',
        'Exit status 0 when every assertion of the scenario holds, 1 when one fails.'
      ]
    }),
  run: async (args, io) => {
    const { values, positionals } = parseCommandLine(args, [SIM_OPTIONS], true)
    if (positionals.length !== 1) throw new UsageError('sim needs exactly one scenario file')
    const o = readOptions(SIM_OPTIONS, simSchema, values)
    const file = positionals[0]!
    return (await runTraining(file, o, io)) ?? (await runMembership(file, o, io))
  }
}
