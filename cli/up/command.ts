import { z } from 'zod'
import { START_OPTIONS, checkDataFile, option, shapeOf } from '../../node/index.ts'
import { usageText, type Command } from '../command.ts'
import { parseCommandLine, readOptions } from '../flags.ts'
import { barOf } from '../progress.ts'

/** The options of `zeromesh up`; those it passes on to its workers are the node's own. */
export const UP_OPTIONS = {
  nodes: option(z.int().min(1).max(64).default(4), { arg: '<n>', help: 'training ranks, one process each' }),
  spares: option(z.int().min(0).max(16).default(1), { arg: '<n>', help: 'extra processes that stand by to replace a rank' }),
  device: START_OPTIONS.device,
  steps: option(z.int().min(1).max(10_000_000).default(100), { arg: '<n>', help: 'steps to train' }),
  killAt: option(z.int().min(1).optional(), { arg: '<step>', help: 'SIGKILL a training worker once the run reaches this step (below --steps)' }),
  model: START_OPTIONS.model,
  data: START_OPTIONS.data,
  tokenizer: START_OPTIONS.tokenizer,
  initFrom: START_OPTIONS.initFrom,
  zeropp: option(START_OPTIONS.zeropp.schema, { help: 'ZeRO++ instead of flat ZeRO-3' }),
  optimizer: START_OPTIONS.optimizer,
  zo: START_OPTIONS.zo,
  zoEps: START_OPTIONS.zoEps,
  offload: START_OPTIONS.offload,
  offloadThreads: START_OPTIONS.offloadThreads,
  deviceMemory: START_OPTIONS.deviceMemory,
  outerEvery: option(START_OPTIONS.outerEvery.schema, {
    arg: '<H>',
    help: "DiLoCo: the workers' two zones (they alternate) train apart and average every H steps",
    defaultText: 'off'
  }),
  streaming: START_OPTIONS.streaming,
  snapshot: option(START_OPTIONS.snapshot.schema.unwrap().optional(), {
    arg: '<k+m|off>',
    help: 'erasure-coded snapshot of every rank: k data and m parity fragments',
    defaultText: '2+1; 1+1 for 3 processes, off for fewer'
  }),
  snapshotEvery: option(START_OPTIONS.snapshotEvery.schema.unwrap().optional(), {
    arg: '<n>',
    help: 'erasure-coded snapshots every n steps instead of every step',
    defaultText: '1'
  }),
  batch: START_OPTIONS.batch,
  seq: START_OPTIONS.seq,
  seed: START_OPTIONS.seed,
  lr: START_OPTIONS.lr,
  timeout: option(
    z
      .int()
      .min(1)
      .max(7 * 86400)
      .default(1800),
    { arg: '<s>', help: 'give up after this many seconds' }
  ),
  keep: option(z.boolean().default(false), { help: 'keep the run directory with the worker logs' }),
  dashboard: option(z.boolean().default(false), {
    help: "every worker serves its live dashboard on a free loopback port; prints the first one's URL (--kill-at spares that worker)"
  })
}

const upSchema = z.strictObject(shapeOf(UP_OPTIONS)).superRefine((c, ctx) => {
  if (c.killAt !== undefined && c.killAt >= c.steps)
    ctx.addIssue({ code: 'custom', path: ['killAt'], message: `must be an integer in [1, ${c.steps - 1}], got '${c.killAt}'` })
  if (c.outerEvery !== undefined && c.nodes % 2 !== 0)
    ctx.addIssue({ code: 'custom', path: ['outerEvery'], message: `needs an even --nodes (two zone groups of equal size), got ${c.nodes}` })
  if (c.streaming && c.outerEvery === undefined) ctx.addIssue({ code: 'custom', path: ['streaming'], message: 'needs --outer-every' })
  if (c.offload === 'cpu' && c.zo) ctx.addIssue({ code: 'custom', path: ['offload'], message: 'a --zo run keeps no optimizer state to offload' })
  if (c.offloadThreads !== undefined && c.offload !== 'cpu') ctx.addIssue({ code: 'custom', path: ['offloadThreads'], message: 'needs --offload cpu' })
})

/** `zeromesh up`. */
export const upCommand: Command = {
  summary: 'train on a local mesh of worker processes (the main job): progress, and node loss with --kill-at',
  usage: () => usageText('zeromesh up [--nodes 4] [--spares 1] [--device cpu|cuda] [--steps N] [--kill-at STEP] [flags]', [UP_OPTIONS]),
  run: async (args, io) => {
    const { values } = parseCommandLine(args, [UP_OPTIONS])
    const o = readOptions(UP_OPTIONS, upSchema, values)
    // A bad --data is one line before any worker starts (and before a run directory exists).
    if (o.data !== undefined) checkDataFile(o.data)
    const { up } = await import('./run.ts')
    const tty = process.stderr.isTTY === true
    return await up({
      nodes: o.nodes,
      spares: o.spares,
      device: o.device,
      steps: o.steps,
      killAt: o.killAt,
      ...(o.snapshot === undefined ? {} : { snapshot: o.snapshot }),
      ...(o.snapshotEvery === undefined ? {} : { snapshotEvery: o.snapshotEvery }),
      model: o.model,
      data: o.data,
      tokenizer: o.tokenizer,
      ...(o.initFrom === undefined ? {} : { initFrom: o.initFrom }),
      zeropp: o.zeropp,
      optimizer: o.optimizer,
      ...(o.zo ? { zo: { eps: o.zoEps } } : {}),
      ...(o.offload === 'cpu' ? { offload: o.offloadThreads === undefined ? {} : { threads: o.offloadThreads } } : {}),
      ...(o.deviceMemory === undefined ? {} : { deviceMemory: o.deviceMemory }),
      ...(o.outerEvery === undefined ? {} : { outer: { every: o.outerEvery, streaming: o.streaming } }),
      seed: o.seed,
      ...(o.lr === undefined ? {} : { lr: o.lr }),
      batch: o.batch,
      seq: o.seq,
      timeoutMs: o.timeout * 1000,
      keep: o.keep,
      dashboard: o.dashboard,
      out: io.out,
      // On a terminal: a bar over the steps in front of the line, rewritten in place.
      ...(tty
        ? {
            progress: (l: string, done: number) => process.stderr.write(`\r${barOf(done, 20)} ${l.padEnd(100)}`)
          }
        : {})
    })
  }
}
