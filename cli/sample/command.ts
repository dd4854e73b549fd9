import { z } from 'zod'
import { START_OPTIONS, option, shapeOf } from '../../node/index.ts'
import { usageText, type Command } from '../command.ts'
import { EXPORT_OPTIONS } from '../export/command.ts'
import { parseCommandLine, readOptions } from '../flags.ts'
import { SAMPLE_LIMITS } from './run.ts'

/** The options of `zeromesh sample`. */
export const SAMPLE_OPTIONS = {
  from: option(z.string().min(1).optional(), {
    arg: '<file|dir>',
    help: 'the model: a zeromesh export (.safetensors) or an HF GPT-2 checkpoint (a dir with model.safetensors and config.json)',
    defaultText: 'the run in --data-dir'
  }),
  dataDir: option(EXPORT_OPTIONS.dataDir.schema.optional(), {
    arg: '<dir>',
    help: "instead of --from: a training node's data dir (repeat for every node), assembled as `zeromesh export` does"
  }),
  model: EXPORT_OPTIONS.model,
  data: EXPORT_OPTIONS.data,
  initFrom: EXPORT_OPTIONS.initFrom,
  step: EXPORT_OPTIONS.step,
  prompt: option(z.string().min(1).max(SAMPLE_LIMITS.maxPromptChars).default('The'), { arg: '<text>', help: 'the text to continue' }),
  tokens: option(z.int().min(0).max(SAMPLE_LIMITS.maxTokens).default(64), { arg: '<n>', help: 'tokens to generate' }),
  temperature: option(z.number().min(0).max(100).default(0.8), { arg: '<x>', help: 'softmax temperature; 0 takes the most likely token' }),
  topK: option(z.int().min(0).max(SAMPLE_LIMITS.maxTopK).default(0), { arg: '<k>', help: 'draw among the k most likely tokens (0: all)' }),
  seed: option(z.int().min(0).default(1), { arg: '<n>', help: 'seed of the draws: the same seed gives the same text' }),
  device: START_OPTIONS.device,
  tokenizer: option(START_OPTIONS.tokenizer.schema.unwrap().optional(), {
    arg: '<bytes|gpt2>',
    help: "the model's tokenizer",
    defaultText: "gpt2 for a model of GPT-2's vocabulary, else bytes"
  }),
  json: option(z.boolean().default(false), { help: 'print one JSON object (prompt, text, token ids) instead of the text' })
}
const sampleSchema = z.strictObject(shapeOf(SAMPLE_OPTIONS)).superRefine((c, ctx) => {
  if ((c.from === undefined) === (c.dataDir === undefined))
    ctx.addIssue({ code: 'custom', path: ['from'], message: 'or --data-dir is needed: one of them, not both' })
})

/** `zeromesh sample`. */
export const sampleCommand: Command = {
  summary: 'generate text from a model: an export, an HF GPT-2 checkpoint, or a run on disk',
  usage: () =>
    usageText('zeromesh sample (--from <file|dir> | --data-dir <dir>...) [--prompt <text>] [--tokens 64] [flags]', [SAMPLE_OPTIONS], {
      notes: [
        'Prints the prompt and its continuation. With the same model, flags and --seed the text is',
        'the same on one device. Exit status 1 when the model cannot be read, 2 for bad flags.'
      ]
    }),
  run: async (args, io) => {
    const { values } = parseCommandLine(args, [SAMPLE_OPTIONS])
    const o = readOptions(SAMPLE_OPTIONS, sampleSchema, values)
    const { sample } = await import('./run.ts')
    const r = await sample({
      source:
        o.from !== undefined
          ? { from: o.from }
          : {
              dataDirs: o.dataDir!,
              model: o.model,
              ...(o.data === undefined ? {} : { data: o.data }),
              ...(o.tokenizer === undefined ? {} : { tokenizer: o.tokenizer }),
              ...(o.initFrom === undefined ? {} : { initFrom: o.initFrom }),
              ...(o.step === undefined ? {} : { step: o.step })
            },
      prompt: o.prompt,
      tokens: o.tokens,
      temperature: o.temperature,
      topK: o.topK,
      seed: o.seed,
      device: o.device,
      ...(o.tokenizer === undefined ? {} : { tokenizer: o.tokenizer })
    })
    if (o.json) {
      io.out(
        JSON.stringify({
          model: r.model,
          tokenizer: r.tokenizer,
          seed: o.seed,
          temperature: o.temperature,
          topK: o.topK,
          prompt: r.prompt,
          text: r.text,
          promptIds: r.promptIds,
          ids: r.ids
        })
      )
    } else {
      io.out(r.prompt + r.text)
    }
    return 0
  }
}
