import { z } from 'zod'
import { START_OPTIONS, option, shapeOf } from '../../node/index.ts'
import { usageText, type Command } from '../command.ts'
import { parseCommandLine, readOptions } from '../flags.ts'
import { progressBar } from '../progress.ts'
import { EXPORT_LIMITS, exportModel, formatExport } from './model.ts'

/** The options of `zeromesh export`. */
export const EXPORT_OPTIONS = {
  out: option(z.string().min(1), {
    arg: '<file|dir>',
    help: 'the safetensors file to write, or with --format hf the directory (replaced atomically)',
    required: 'export needs --out <file.safetensors> (a directory with --format hf)'
  }),
  format: option(z.enum(['zeromesh', 'hf']).default('zeromesh'), {
    arg: '<zeromesh|hf>',
    help: "zeromesh: one file in the GPT layout's names; hf: model.safetensors + config.json of transformers' GPT2LMHeadModel"
  }),
  dataDir: option(z.array(z.string().min(1)).min(1).max(EXPORT_LIMITS.maxDataDirs), {
    arg: '<dir>',
    help: "a training node's data dir (or its train/ folder); repeat until every rank is covered: each node writes only the ranks it held",
    required: 'export needs --data-dir <dir> (repeat it for every training node)'
  }),
  model: option(START_OPTIONS.model.schema, { arg: '<name>', help: 'what the run trained' }),
  data: option(START_OPTIONS.data.schema, { arg: '<file>', help: "the run's --data, for the vocabulary", defaultText: 'the Brown Corpus' }),
  tokenizer: option(START_OPTIONS.tokenizer.schema, { arg: '<bytes|gpt2>', help: "the run's --tokenizer, for the vocabulary" }),
  initFrom: option(START_OPTIONS.initFrom.schema, { arg: '<dir|file>', help: "the run's --init-from, for the model shape", defaultText: 'none: --model' }),
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
        'size and model shape in __metadata__. --format hf writes <dir>/model.safetensors and',
        "<dir>/config.json in the layout of transformers' GPT2LMHeadModel (real vocabulary, Conv1D",
        'weights transposed, head tied to wte): from_pretrained(<dir>) loads it, and so do',
        '--init-from and zeromesh sample --from. Exit status 1 when the dirs lack a rank or a file',
        'is damaged, 2 for bad flags.'
      ]
    }),
  run: async (args, io) => {
    const { values } = parseCommandLine(args, [EXPORT_OPTIONS])
    const o = readOptions(EXPORT_OPTIONS, exportSchema, values)
    const bar = progressBar(process.stderr, 'of the state files read')
    const result = await exportModel({
      out: o.out,
      format: o.format,
      dataDirs: o.dataDir,
      model: o.model,
      tokenizer: o.tokenizer,
      ...(o.initFrom === undefined ? {} : { initFrom: o.initFrom }),
      ...(o.data === undefined ? {} : { data: o.data }),
      ...(o.step === undefined ? {} : { step: o.step }),
      onProgress: f => {
        bar.update(f)
        if (f >= 1) bar.done()
      }
    })
    for (const line of formatExport(result)) io.out(line)
    return 0
  }
}
