import { z } from 'zod'
import { START_OPTIONS, option, shapeOf } from '../../node/index.ts'
import { usageText, type Command } from '../command.ts'
import { parseCommandLine, readOptions } from '../flags.ts'
import { EXPORT_LIMITS, exportModel, formatExport } from './model.ts'

/** The options of `zeromesh export`. */
export const EXPORT_OPTIONS = {
  out: option(z.string().min(1), {
    arg: '<file>',
    help: 'the safetensors file to write (replaced atomically)',
    required: 'export needs --out <file.safetensors>'
  }),
  dataDir: option(z.array(z.string().min(1)).min(1).max(EXPORT_LIMITS.maxDataDirs), {
    arg: '<dir>',
    help: "a training node's data dir (or its train/ folder); repeat until every rank is covered: each node writes only the ranks it held",
    required: 'export needs --data-dir <dir> (repeat it for every training node)'
  }),
  model: option(START_OPTIONS.model.schema, { arg: '<name>', help: 'what the run trained' }),
  data: option(START_OPTIONS.data.schema, { arg: '<file>', help: "the run's --data, for the vocabulary", defaultText: 'the Brown Corpus' }),
  step: option(z.int().min(0).optional(), { arg: '<n>', help: 'export this step', defaultText: 'the newest step every rank has' })
}
const exportSchema = z.strictObject(shapeOf(EXPORT_OPTIONS))

/** `zeromesh export`. */
export const exportCommand: Command = {
  summary: "write the trained model as safetensors, from the training nodes' disk tiers",
  usage: () =>
    usageText('zeromesh export --out <file.safetensors> --data-dir <dir> [--data-dir <dir>]... [flags]', [EXPORT_OPTIONS], {
      notes: [
        'Reads <data dir>/train/step-*.zms (written every --disk-every steps by `zeromesh start',
        "--train`), verifies every file, joins the ranks' weight shards and writes F32 tensors",
        'named as in the GPT layout (wte, wpe, h.<layer>.<tensor>, lnfw, lnfb) with the step, world',
        'size and model shape in __metadata__. Exit status 1 when the dirs lack a rank or a file',
        'is damaged, 2 for bad flags.'
      ]
    }),
  run: async (args, io) => {
    const { values } = parseCommandLine(args, [EXPORT_OPTIONS])
    const o = readOptions(EXPORT_OPTIONS, exportSchema, values)
    const result = await exportModel({
      out: o.out,
      dataDirs: o.dataDir,
      model: o.model,
      ...(o.data === undefined ? {} : { data: o.data }),
      ...(o.step === undefined ? {} : { step: o.step })
    })
    for (const line of formatExport(result)) io.out(line)
    return 0
  }
}
