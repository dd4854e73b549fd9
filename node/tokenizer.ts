import { createRequire } from 'node:module'
import { InvalidArgumentError, checkCap } from '../core/index.ts'

/**
 * Tokenizers: text to token ids and back, one interface for the training data (node/data.ts)
 * and `zeromesh sample`.
 * - `bytes`: the UTF-8 bytes are the ids (vocabulary 256; nothing to train or ship).
 * - `gpt2`: GPT-2's byte-level BPE (vocabulary 50257, `<|endoftext|>` = 50256), with the
 *   merges of the npm package js-tiktoken (`js-tiktoken/ranks/gpt2`, MIT), loaded on first use
 *   from node_modules: nothing is downloaded at run time. `<|endoftext|>` in a text is the
 *   special token (documents in a data file are separated by it, as in GPT-2's data).
 */
export const TOKENIZERS = Object.freeze(['bytes', 'gpt2'] as const)
export type TokenizerName = (typeof TOKENIZERS)[number]

export interface Tokenizer {
  readonly name: TokenizerName
  /** Ids are in [0, vocabSize). */
  readonly vocabSize: number
  /** The end-of-text id, where the tokenizer has one. */
  readonly eot: number | undefined
  /** The ids of a string, or of UTF-8 bytes (`bytes` keeps them as they are, even when not valid UTF-8). */
  encode(text: string | Uint8Array): Uint16Array
  /** The text of ids (invalid UTF-8 becomes U+FFFD). */
  decode(ids: ArrayLike<number>): string
}

export const TOKENIZER_LIMITS = Object.freeze({
  /**
   * Largest text the BPE tokenizes (bytes; about 1 MB/s on one core): larger data is
   * tokenized once ahead of time into an llm.c `.bin` token file, which `--data` reads as is.
   */
  maxBpeTextBytes: 64 * 2 ** 20
})

const BYTES: Tokenizer = Object.freeze({
  name: 'bytes',
  vocabSize: 256,
  eot: undefined,
  encode(text: string | Uint8Array): Uint16Array {
    const bytes = typeof text === 'string' ? Buffer.from(text, 'utf8') : text
    const ids = new Uint16Array(bytes.length)
    ids.set(bytes)
    return ids
  },
  decode(ids: ArrayLike<number>): string {
    const bytes = new Uint8Array(ids.length)
    for (let i = 0; i < ids.length; i++) {
      const x = ids[i]!
      if (!Number.isInteger(x) || x < 0 || x > 255) throw new InvalidArgumentError(`bytes tokenizer: id ${x} is not a byte`)
      bytes[i] = x
    }
    return new TextDecoder().decode(bytes)
  }
})

interface TiktokenLike {
  encode(text: string, allowedSpecial?: string[] | 'all', disallowedSpecial?: string[] | 'all'): number[]
  decode(ids: number[]): string
}

let gpt2: Tokenizer | undefined

/** GPT-2's BPE, built once per process (about 0.4 s: the merge table is parsed on first use). */
function gpt2Tokenizer(): Tokenizer {
  if (gpt2 !== undefined) return gpt2
  const require = createRequire(import.meta.url)
  const { Tiktoken } = require('js-tiktoken/lite') as { Tiktoken: new (ranks: unknown) => TiktokenLike }
  const enc = new Tiktoken(require('js-tiktoken/ranks/gpt2'))
  const EOT = '<|endoftext|>'
  gpt2 = Object.freeze({
    name: 'gpt2',
    vocabSize: 50257,
    eot: 50256,
    encode(text: string | Uint8Array): Uint16Array {
      const bytes = typeof text === 'string' ? Buffer.byteLength(text) : text.length
      checkCap('text bytes to tokenize with the gpt2 BPE', bytes, TOKENIZER_LIMITS.maxBpeTextBytes)
      const s = typeof text === 'string' ? text : new TextDecoder().decode(text)
      return Uint16Array.from(enc.encode(s, [EOT], []))
    },
    decode(ids: ArrayLike<number>): string {
      return enc.decode(Array.from(ids))
    }
  })
  return gpt2
}

/** The tokenizer of a name. */
export function createTokenizer(name: TokenizerName): Tokenizer {
  if (name === 'bytes') return BYTES
  if (name === 'gpt2') return gpt2Tokenizer()
  throw new InvalidArgumentError(`unknown tokenizer '${String(name)}' (${TOKENIZERS.join(', ')})`)
}
