import { mkdir, readFile, stat } from 'node:fs/promises'
import { dirname, join, resolve } from 'node:path'
import { InvalidArgumentError, ZeromeshError, checkCap, throwIfAborted } from '../core/index.ts'
import {
  fromHfGpt2,
  gptLayout,
  hfGpt2Config,
  hfGpt2Tensors,
  parseHfGpt2Config,
  toHfGpt2,
  validateGptConfig,
  type GptConfig,
  type HfGpt2Tensor
} from '../gpu/index.ts'
import { writeFileDurable } from './disk.ts'
import { CHECKPOINT_LIMITS } from './limits.ts'
import { encodeSafetensors, openSafetensors, type SafetensorsReader } from './safetensors.ts'

/**
 * GPT checkpoints on disk, in and out of the mesh:
 * - **HF**: a directory with `model.safetensors` and `config.json` in the layout of
 *   transformers' `GPT2LMHeadModel` (gpu/gpt-hf.ts), what `zeromesh export --format hf` writes
 *   and what `--init-from` and `zeromesh sample --from` read. Tensor names are accepted with
 *   and without the `transformer.` prefix; the attention buffers (`attn.bias`,
 *   `attn.masked_bias`) are ignored, and so is `lm_head.weight` when it equals wte. F32, F16
 *   and BF16 tensors are read (widened to f32).
 * - **zeromesh**: one safetensors file in our flat layout's names with the shape in its
 *   `__metadata__` (`format: zeromesh`), what `zeromesh export` writes by default.
 * Every shape is checked against the model's before any tensor is read: a mismatch, a missing
 * or unexpected tensor is a {@link CheckpointError} naming the file.
 */

/** A checkpoint that cannot be used: one line naming the file (exit 1 on the CLI). */
export class CheckpointError extends ZeromeshError {
  static override name = 'CheckpointError'
}

/** The weights file of an HF checkpoint directory. */
export const HF_WEIGHTS_FILE = 'model.safetensors'
/** The model config of an HF checkpoint directory. */
export const HF_CONFIG_FILE = 'config.json'

/** What a checkpoint is: its format, model shape and files. */
export interface CheckpointInfo {
  format: 'hf' | 'zeromesh'
  config: GptConfig
  /** The safetensors file. */
  weights: string
  /** config.json (HF). */
  configFile?: string
  /** The safetensors `__metadata__`. */
  metadata: Readonly<Record<string, string>>
}

/**
 * A checkpoint's model shape, read from config.json or the export's metadata, with every
 * tensor's name, shape and dtype checked against it; no weights are read.
 */
export async function readCheckpointInfo(path: string, opts: { signal?: AbortSignal } = {}): Promise<CheckpointInfo> {
  const st = await openCheckpoint(path, opts)
  await st.reader.close()
  return st.info
}

/**
 * Loads a checkpoint as our flat f32 parameters (wte padded to Vp with zero rows). With
 * `expect`, the checkpoint's shape must be that one.
 */
export async function loadGptCheckpoint(
  path: string,
  opts: { signal?: AbortSignal; expect?: GptConfig } = {}
): Promise<{ info: CheckpointInfo; flat: Float32Array }> {
  const { info, reader, plan } = await openCheckpoint(path, opts)
  try {
    if (opts.expect !== undefined) checkSameShape(info, opts.expect)
    return { info, flat: await readPlanned(info, reader, plan, opts.signal) }
  } finally {
    await reader.close()
  }
}

function checkSameShape(info: CheckpointInfo, want: GptConfig): void {
  const keys = ['vocabSize', 'paddedVocabSize', 'maxT', 'nLayer', 'nHead', 'C'] as const
  const diff = keys.filter(k => info.config[k] !== want[k])
  if (diff.length > 0) {
    throw new CheckpointError(
      `${info.weights} holds another model shape than expected: ${diff.map(k => `${k} ${info.config[k]} (want ${want[k]})`).join(', ')}`
    )
  }
}

/** The files of `path` (a checkpoint directory or its safetensors file), opened and checked. */
async function openCheckpoint(path: string, opts: { signal?: AbortSignal }): Promise<{ info: CheckpointInfo; reader: SafetensorsReader; plan: Plan }> {
  throwIfAborted(opts.signal)
  const given = resolve(path)
  const isDir = await stat(given).then(
    s => s.isDirectory(),
    err => {
      throw new CheckpointError(`cannot read checkpoint ${given}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`, {}, { cause: err })
    }
  )
  const weights = isDir ? join(given, HF_WEIGHTS_FILE) : given
  const dir = isDir ? given : dirname(given)
  if (isDir && !(await exists(weights))) {
    const sharded = await exists(join(given, `${HF_WEIGHTS_FILE}.index.json`))
    throw new CheckpointError(
      sharded
        ? `${given} holds a sharded checkpoint (model.safetensors.index.json); only one model.safetensors is read`
        : `${given} has no ${HF_WEIGHTS_FILE} (an HF GPT-2 checkpoint directory holds model.safetensors and config.json)`
    )
  }
  const reader = await openSafetensors(weights, opts)
  try {
    if (reader.metadata['format'] === 'zeromesh') {
      const info: CheckpointInfo = { format: 'zeromesh', config: zeromeshShape(reader), weights, metadata: reader.metadata }
      return { info, reader, plan: planTensors(info, reader) }
    }
    const configFile = join(dir, HF_CONFIG_FILE)
    if (!(await exists(configFile))) {
      throw new CheckpointError(`${weights} is not a zeromesh export and has no ${HF_CONFIG_FILE} beside it: an HF GPT-2 checkpoint needs ${configFile}`)
    }
    const config = await readHfConfig(configFile)
    checkCap(`${weights}: model parameters`, gptLayout(config).length, CHECKPOINT_LIMITS.maxParameters)
    const info: CheckpointInfo = { format: 'hf', config, weights, configFile, metadata: reader.metadata }
    return { info, reader, plan: planTensors(info, reader) }
  } catch (err) {
    await reader.close()
    throw err
  }
}

async function readHfConfig(file: string): Promise<GptConfig> {
  const size = (await stat(file)).size
  checkCap(`${file}: bytes`, size, CHECKPOINT_LIMITS.maxConfigBytes)
  let json: unknown
  try {
    json = JSON.parse(await readFile(file, 'utf8'))
  } catch (err) {
    throw new CheckpointError(`${file} is not JSON: ${(err as Error).message}`)
  }
  try {
    return parseHfGpt2Config(json)
  } catch (err) {
    if (err instanceof InvalidArgumentError) throw new CheckpointError(`${file}: ${err.message.replace(/^config\.json: /, '')}`)
    throw err
  }
}

/** The shape a zeromesh export records in its metadata. */
function zeromeshShape(reader: SafetensorsReader): GptConfig {
  const m = reader.metadata
  const num = (key: string): number => {
    const v = Number(m[key])
    if (m[key] === undefined || !Number.isSafeInteger(v) || v < 1)
      throw new CheckpointError(`${reader.path}: metadata ${key} is ${JSON.stringify(m[key])}, not a positive integer`)
    return v
  }
  const config: GptConfig = {
    vocabSize: num('vocab_size'),
    paddedVocabSize: num('padded_vocab_size'),
    maxT: num('max_t'),
    nLayer: num('n_layer'),
    nHead: num('n_head'),
    C: num('n_embd')
  }
  try {
    validateGptConfig(config)
  } catch (err) {
    throw new CheckpointError(`${reader.path}: ${(err as Error).message}`)
  }
  checkCap(`${reader.path}: model parameters`, gptLayout(config).length, CHECKPOINT_LIMITS.maxParameters)
  return config
}

/** Tensors of HF GPT-2 files that are buffers or the tied head, not parameters. */
const IGNORED = /(^|\.)attn\.(bias|masked_bias)$/

/** Where each tensor of our layout is in the file: the file's name and, for HF, the layout spec. */
type Plan = Array<{ name: string; spec: HfGpt2Tensor | undefined; ours: string }>

/** Checks every tensor's name and shape against the model (no values read); the file's name of each. */
function planTensors(info: CheckpointInfo, reader: SafetensorsReader): Plan {
  const file = info.weights
  if (info.format === 'zeromesh') {
    const layout = gptLayout(info.config)
    const want = new Set(layout.tensors.map(t => t.name))
    const extra = [...reader.tensors.keys()].filter(n => !want.has(n))
    if (extra.length > 0) throw new CheckpointError(`${file} holds tensors this model has not: ${extra.slice(0, 5).join(', ')}`)
    return layout.tensors.map(t => {
      const got = reader.tensors.get(t.name)
      if (got === undefined) throw new CheckpointError(`${file} lacks ${t.name}`)
      if (got.shape.join(',') !== t.shape.join(','))
        throw new CheckpointError(`${file}: ${t.name} is [${got.shape.join(', ')}], its metadata makes it [${t.shape.join(', ')}]`)
      checkDtype(reader, t.name)
      return { name: t.name, spec: undefined, ours: t.name }
    })
  }
  // Names without the `transformer.` prefix (saved from GPT2Model) are the same tensors.
  const byName = new Map<string, string>()
  for (const name of reader.tensors.keys()) {
    if (IGNORED.test(name) || name === 'lm_head.weight') continue
    const full = name.startsWith('transformer.') ? name : `transformer.${name}`
    if (byName.has(full)) throw new CheckpointError(`${file} holds ${full} twice (with and without the transformer. prefix)`)
    byName.set(full, name)
  }
  const specs = hfGpt2Tensors(info.config)
  const known = new Set(specs.map(s => s.hf))
  const extra = [...byName.keys()].filter(n => !known.has(n))
  if (extra.length > 0)
    throw new CheckpointError(`${file} holds tensors a GPT-2 of its config.json has not: ${extra.slice(0, 5).join(', ')}${extra.length > 5 ? ', ...' : ''}`)
  const plan = specs.map(s => {
    const name = byName.get(s.hf)
    if (name === undefined) throw new CheckpointError(`${file} lacks ${s.hf}`)
    const t = reader.tensors.get(name)!
    if (t.shape.join(',') !== s.shape.join(','))
      throw new CheckpointError(`${file}: ${name} is [${t.shape.join(', ')}], but ${info.configFile ?? 'the config'} makes it [${s.shape.join(', ')}]`)
    checkDtype(reader, name)
    return { name, spec: s, ours: s.ours }
  })
  const head = reader.tensors.get('lm_head.weight')
  if (head !== undefined && head.shape.join(',') !== [info.config.vocabSize, info.config.C].join(','))
    throw new CheckpointError(
      `${file}: lm_head.weight is [${head.shape.join(', ')}]; only a head tied to wte [${info.config.vocabSize}, ${info.config.C}] is supported`
    )
  if (head !== undefined) checkDtype(reader, 'lm_head.weight')
  return plan
}

function checkDtype(reader: SafetensorsReader, name: string): void {
  const dtype = reader.tensors.get(name)!.dtype
  if (dtype !== 'F32' && dtype !== 'F16' && dtype !== 'BF16') throw new CheckpointError(`${reader.path}: ${name} is ${dtype}; F32, F16 or BF16 are read`)
}

/** Reads the planned tensors into our flat layout. */
async function readPlanned(info: CheckpointInfo, reader: SafetensorsReader, plan: Plan, signal?: AbortSignal): Promise<Float32Array> {
  if (info.format === 'zeromesh') {
    const layout = gptLayout(info.config)
    const flat = new Float32Array(layout.length)
    for (const t of layout.tensors) {
      throwIfAborted(signal)
      flat.set(await reader.readF32(t.name), t.offset)
    }
    return flat
  }
  const values = new Map<string, Float32Array>()
  for (const p of plan) {
    throwIfAborted(signal)
    values.set(p.ours, await reader.readF32(p.name))
  }
  if (reader.tensors.has('lm_head.weight')) {
    const wte = values.get('wte')!
    const lm = await reader.readF32('lm_head.weight')
    if (!lm.every((x, i) => Object.is(x, wte[i])))
      throw new CheckpointError(`${info.weights}: lm_head.weight differs from wte; only a head tied to wte is supported`)
  }
  return fromHfGpt2(info.config, s => values.get(s.ours)!)
}

/**
 * Writes `flat` (our layout of `config`) as an HF GPT-2 checkpoint: `dir/model.safetensors`
 * (F32, `__metadata__` format `pt` plus `metadata`) and `dir/config.json`, each atomically
 * (temp file, fsync, rename). `dir` is created when its parent exists.
 */
export async function writeHfCheckpoint(
  dir: string,
  flat: Float32Array,
  config: GptConfig,
  metadata: Record<string, string> = {}
): Promise<{ weights: string; configFile: string; bytes: number; tensors: number }> {
  const out = resolve(dir)
  try {
    await mkdir(out, { recursive: false })
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EEXIST')
      throw new CheckpointError(`cannot create ${out}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`)
  }
  if (!(await stat(out)).isDirectory())
    throw new CheckpointError(`${out} is not a directory (--format hf writes ${HF_WEIGHTS_FILE} and ${HF_CONFIG_FILE} into one)`)
  const hf = toHfGpt2(flat, config)
  const parts = encodeSafetensors(hf.flat, { length: hf.length, tensors: hf.tensors }, { format: 'pt', ...metadata })
  const weights = join(out, HF_WEIGHTS_FILE)
  const configFile = join(out, HF_CONFIG_FILE)
  await writeFileDurable(weights, parts, out)
  const json = new TextEncoder().encode(`${JSON.stringify(hfGpt2Config(config), null, 2)}\n`)
  await writeFileDurable(configFile, json, out)
  return { weights, configFile, bytes: parts.reduce((a, p) => a + p.length, 0) + json.length, tensors: hf.tensors.length }
}

async function exists(p: string): Promise<boolean> {
  return stat(p).then(
    () => true,
    () => false
  )
}
