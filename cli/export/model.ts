import { statSync } from 'node:fs'
import { dirname, resolve } from 'node:path'
import { VERSION, ZeromeshError, checkCap, shardRange, throwIfAborted } from '../../core/index.ts'
import { gptLayout, type GptConfig, type GptLayout } from '../../gpu/index.ts'
import { CheckpointError, encodeSafetensors, launchName, sameLaunch, writeFileDurable, writeHfCheckpoint, type RankState } from '../../snapshot/index.ts'
import {
  TRAIN_MODELS,
  diskDir,
  diskSteps,
  loadDiskState,
  sameRun,
  runModelConfig,
  trainingModel,
  type TokenizerName,
  type TrainModelName
} from '../../node/index.ts'

/**
 * `zeromesh export`: the full model of a run as safetensors, from the trainer's disk tier.
 *
 * Each training node's data dir holds `train/step-<step>.zms` files, each one rank's sealed
 * state (its slice of the flat f32 master weights; see node/disk-tier.ts). Given the data dirs
 * of the run's nodes (their union must hold every rank), this picks the newest step (or
 * `step`) for which every rank 0..P-1 of one world size P is present, checks each slice against
 * the ZeRO split the trainer used (`shardRange(N, P, r)`, N the chosen model's parameter
 * count), joins them into the flat buffer ({@link assembleModel}), and writes it with the GPT
 * layout's tensor names, or as an HF GPT-2 checkpoint (`format: 'hf'`: snapshot/checkpoint.ts).
 * Every file read is verified (checksum, header, lengths) before use; anything missing,
 * inconsistent or damaged is an {@link ExportError} that says what and where.
 */

/** Caps of `zeromesh export` (docs/LIMITS.md). */
export const EXPORT_LIMITS = Object.freeze({
  /** `--data-dir` values (one per node; ranks are at most the schema's 1024 world size). */
  maxDataDirs: 1024
})

/** The export cannot be made from what the data dirs hold. One line on the CLI, exit 1. */
export class ExportError extends ZeromeshError {
  static override name = 'ExportError'
}

/** Where a run's model is on disk and what it is: what {@link assembleModel} reads. */
export interface AssembleOptions {
  /** Data dirs of the run's nodes, or their `train/` folders. */
  dataDirs: readonly string[]
  /** The model shape the run trained (`--model`). */
  model: TrainModelName
  /** The training data (`--data`), for the vocabulary size; the default corpus when absent. */
  data?: string
  /** The run's `--tokenizer` (the vocabulary of text data). Default bytes. */
  tokenizer?: TokenizerName
  /** The run's `--init-from`: the model shape is the checkpoint's. */
  initFrom?: string
  /** This step instead of the newest complete one. */
  step?: number
  /** The fraction of the state files read so far, on a model of at least {@link PROGRESS_MIN_BYTES}. */
  onProgress?: (fraction: number) => void
  signal?: AbortSignal
}

export interface ExportOptions extends AssembleOptions {
  /** The file to write (`zeromesh`), or the directory (`hf`); written atomically (temp file, fsync, rename). */
  out: string
  /** `zeromesh` (default): our layout's names in one file; `hf`: transformers' GPT-2 (model.safetensors + config.json). */
  format?: 'zeromesh' | 'hf'
}

/** A run's full model, assembled from its ranks' disk tier files. */
export interface AssembledModel {
  config: GptConfig
  layout: GptLayout
  /** The flat f32 weights (gpu/gpt.ts layout). */
  flat: Float32Array
  step: number
  worldSize: number
  /** `--model`'s name, or the `--init-from` checkpoint. */
  model: string
  /** Newer steps passed over because ranks were missing (newest first), e.g. "step 20 lacks rank 1 of 3". */
  skipped: string[]
}

/** State files of a step at least this large (bytes) report progress. */
export const PROGRESS_MIN_BYTES = 64 * 2 ** 20

export interface ExportResult {
  path: string
  format: 'zeromesh' | 'hf'
  step: number
  worldSize: number
  model: string
  tensors: number
  parameters: number
  /** Size of the written file. */
  bytes: number
  /** Newer steps passed over because ranks were missing (newest first), e.g. "step 20 lacks rank 1 of 3". */
  skipped: string[]
}

/** One state file found: where, and its step (from the name; the contents are checked on load). */
interface Found {
  dir: string
  step: number
}

/** Reads the disk tiers and assembles the newest complete step (or `step`). */
export async function assembleModel(opts: AssembleOptions): Promise<AssembledModel> {
  if (opts.dataDirs.length === 0) throw new ExportError('export needs at least one --data-dir')
  checkCap('export data dirs', opts.dataDirs.length, EXPORT_LIMITS.maxDataDirs)
  const found: Found[] = []
  for (const given of opts.dataDirs) {
    throwIfAborted(opts.signal)
    const dir = resolve(given)
    if (!isDir(dir)) throw new ExportError(`data dir ${dir} does not exist`)
    // A node's data dir, or its train/ folder itself.
    let tier = diskDir(dir)
    let steps = await diskSteps(tier)
    if (steps.length === 0) {
      steps = await diskSteps(dir)
      tier = dir
    }
    for (const step of steps) found.push({ dir: tier, step })
  }
  if (found.length === 0) {
    throw new ExportError(
      `no disk-tier state files (train/step-*.zms) in ${opts.dataDirs.map(d => resolve(d)).join(', ')}; training nodes write them every --disk-every steps`
    )
  }
  const steps = [...new Set(found.map(f => f.step))].sort((a, b) => b - a)
  if (opts.step !== undefined && !steps.includes(opts.step)) {
    throw new ExportError(`no state files of step ${opts.step}; the data dirs hold step${steps.length === 1 ? '' : 's'} ${steps.join(', ')}`)
  }
  // The layout before any state is read: it bounds what is kept (every slice is checked against it).
  let config: GptConfig
  try {
    config = await runModelConfig({ model: opts.model, data: opts.data, tokenizer: opts.tokenizer ?? 'bytes', initFrom: opts.initFrom })
  } catch (err) {
    if (err instanceof CheckpointError || (err as Error).name === 'SafetensorsError') throw new ExportError(`--init-from: ${(err as Error).message}`)
    throw err
  }
  const layout = gptLayout(config)
  const skipped: string[] = []
  for (const step of opts.step !== undefined ? [opts.step] : steps) {
    const got = await loadStep(
      found.filter(f => f.step === step),
      step,
      layout,
      config.vocabSize,
      opts
    )
    if (got.missing.length > 0) {
      skipped.push(`step ${step} lacks rank${got.missing.length === 1 ? '' : 's'} ${list(got.missing)} of ${got.worldSize}`)
      continue
    }
    return { config, layout, flat: got.flat, step, worldSize: got.worldSize, model: opts.initFrom ?? opts.model, skipped }
  }
  const hint = " (each rank is written by the node that held it: pass every node's --data-dir)"
  throw new ExportError(`no step has the state of every rank: ${skipped.join('; ')}${hint}`)
}

/** Reads the disk tiers, assembles the newest complete step and writes it (one safetensors file, or an HF checkpoint dir). */
export async function exportModel(opts: ExportOptions): Promise<ExportResult> {
  const format = opts.format ?? 'zeromesh'
  const out = resolve(opts.out)
  const outDir = dirname(out)
  if (!isDir(outDir)) throw new ExportError(`cannot write ${out}: ${outDir} is not a directory`)
  if (format === 'hf' && !isDir(out) && existsPath(out)) throw new ExportError(`cannot write ${out}: it is a file; --format hf writes a directory`)
  const m = await assembleModel(opts)
  const { config, layout } = m
  const common: Record<string, string> = {
    producer: `zeromesh ${VERSION}`,
    model: m.model,
    step: String(m.step),
    world_size: String(m.worldSize),
    data: opts.data ?? 'Brown Corpus',
    tokenizer: opts.tokenizer ?? 'bytes'
  }
  const written = (tensors: number, bytes: number): ExportResult => ({
    path: out,
    format,
    step: m.step,
    worldSize: m.worldSize,
    model: m.model,
    tensors,
    parameters: layout.length,
    bytes,
    skipped: m.skipped
  })
  try {
    if (format === 'hf') {
      const w = await writeHfCheckpoint(out, m.flat, config, common)
      return written(w.tensors, w.bytes)
    }
    const metadata: Record<string, string> = {
      format: 'zeromesh',
      ...common,
      vocab_size: String(config.vocabSize),
      padded_vocab_size: String(config.paddedVocabSize),
      n_layer: String(config.nLayer),
      n_head: String(config.nHead),
      n_embd: String(config.C),
      max_t: String(config.maxT)
    }
    const parts = encodeSafetensors(
      m.flat,
      {
        length: layout.length,
        tensors: layout.tensors.map(t => ({ name: t.name, offset: t.offset, shape: t.shape }))
      },
      metadata
    )
    await writeFileDurable(out, parts, outDir)
    return written(
      layout.tensors.length,
      parts.reduce((a, p) => a + p.length, 0)
    )
  } catch (err) {
    if (err instanceof CheckpointError) throw new ExportError(err.message)
    throw new ExportError(`cannot write ${out}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`)
  }
}

/**
 * Loads every file of `step` into one flat buffer. All must agree on the world size; each
 * rank's slice must have the length the trainer's split gives it, and a rank found twice must
 * hold the same values.
 */
async function loadStep(
  files: readonly Found[],
  step: number,
  layout: GptLayout,
  vocabSize: number,
  opts: { signal?: AbortSignal; onProgress?: (fraction: number) => void }
): Promise<{ worldSize: number; flat: Float32Array; missing: number[] }> {
  const { signal } = opts
  const flat = new Float32Array(layout.length)
  // Progress only where reading takes a while: a model of PROGRESS_MIN_BYTES of f32 weights.
  const progress = layout.length * 4 >= PROGRESS_MIN_BYTES ? opts.onProgress : undefined
  let read = 0
  let world: { P: number; dir: string; identity: Uint8Array | undefined; nonce: Uint8Array | undefined } | undefined
  let from: Array<string | undefined> = []
  for (const f of files) {
    throwIfAborted(signal)
    const where = `the state of step ${step} in ${f.dir}`
    let state: RankState | undefined
    try {
      state = await loadDiskState(f.dir, step)
    } catch (err) {
      throw new ExportError(`${where} is damaged: ${(err as Error).message}`)
    }
    if (state === undefined) throw new ExportError(`${where} disappeared while it was read`)
    if (state.step !== step) throw new ExportError(`${where} is a file of step ${state.step}: it was renamed or copied over`)
    if (world === undefined) {
      world = { P: state.worldSize, dir: f.dir, identity: state.identity, nonce: state.nonce }
      from = new Array<string | undefined>(state.worldSize).fill(undefined)
    } else if (world.identity !== undefined && !sameRun(state, world.identity)) {
      throw new ExportError(
        `step ${step} mixes runs: the states in ${world.dir} and ${f.dir} belong to different runs (run id, model, seed or training settings differ); leave out the other run's data dir`
      )
    } else if (world.nonce !== undefined && state.nonce !== undefined && !sameLaunch(world.nonce, state.nonce)) {
      throw new ExportError(
        `step ${step} mixes launches of one run: the states in ${world.dir} and ${f.dir} have the same run id and settings but were started separately (launch ${launchName(world.nonce)} and ${launchName(state.nonce)}); leave out the other launch's data dir`
      )
    } else if (state.worldSize !== world.P) {
      throw new ExportError(
        `step ${step} mixes world sizes: ${world.P} in ${world.dir}, ${state.worldSize} in ${f.dir} (the run changed size; leave out the stale data dirs or pick another --step)`
      )
    }
    const range = shardRange(layout.length, state.worldSize, state.rank)
    if (state.weights.length !== range.length) {
      throw new ExportError(
        `${where}: rank ${state.rank} of ${state.worldSize} holds ${state.weights.length} parameters, but this model's split gives it ${range.length}${suggestModel(state, vocabSize)}`
      )
    }
    progress?.(++read / files.length)
    const slot = flat.subarray(range.start, range.start + range.length)
    const prev = from[state.rank]
    if (prev !== undefined) {
      if (!sameBits(slot, state.weights)) throw new ExportError(`rank ${state.rank} of step ${step} differs between ${prev} and ${f.dir}`)
      continue
    }
    slot.set(state.weights)
    from[state.rank] = f.dir
  }
  const missing = from.map((d, r) => (d === undefined ? r : -1)).filter(r => r >= 0)
  return { worldSize: world?.P ?? 0, flat, missing }
}

/** Which `--model` the slice fits with this vocabulary, as a hint; a generic one when none does. */
function suggestModel(state: RankState, vocabSize: number): string {
  for (const name of TRAIN_MODELS) {
    const n = gptLayout(trainingModel(name, vocabSize)).length
    if (shardRange(n, state.worldSize, state.rank).length === state.weights.length) return ` (--model ${name} fits it)`
  }
  return ' (pass the --model and --data the run trained with)'
}

function sameBits(a: Float32Array, b: Float32Array): boolean {
  if (a.length !== b.length) return false
  const x = new Uint32Array(a.buffer, a.byteOffset, a.length)
  const y = new Uint32Array(b.buffer, b.byteOffset, b.length)
  for (let i = 0; i < x.length; i++) if (x[i] !== y[i]) return false
  return true
}

function existsPath(p: string): boolean {
  try {
    statSync(p)
    return true
  } catch {
    return false
  }
}

function isDir(p: string): boolean {
  try {
    return statSync(p).isDirectory()
  } catch {
    return false
  }
}

/** "0, 2 and 5", shortened past a dozen. */
function list(xs: readonly number[]): string {
  const shown = xs.length > 12 ? [...xs.slice(0, 12).map(String), `${xs.length - 12} more`] : xs.map(String)
  return shown.length === 1 ? shown[0]! : `${shown.slice(0, -1).join(', ')} and ${shown.at(-1)!}`
}

/** The lines `zeromesh export` prints: a note per newer incomplete step, then the summary. */
export function formatExport(r: ExportResult): string[] {
  return [
    ...r.skipped.map(s => `note: ${s}; exporting an older step`),
    `exported step ${r.step} of ${r.model} (${r.worldSize} rank${r.worldSize === 1 ? '' : 's'}): ${r.tensors} tensors, ${r.parameters.toLocaleString('en-US')} parameters, ${r.bytes.toLocaleString('en-US')} bytes to ${r.path}${r.format === 'hf' ? ' (HF GPT-2: model.safetensors, config.json)' : ''}`
  ]
}
