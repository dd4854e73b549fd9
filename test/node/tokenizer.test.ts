import test from 'ava'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { TOKENIZER_LIMITS, corpusVocabSize, createTokenizer, loadCorpus } from '../../node/index.ts'

// GPT-2's ids for these strings, as GPT-2's own encoder gives them (tiktoken's `gpt2`,
// transformers' GPT2TokenizerFast): a regression check of the packaged merges.
const KNOWN: Array<[string, number[]]> = [
  ['Hello world', [15496, 995]],
  [' The quick brown fox', [383, 2068, 7586, 21831]],
  ['<|endoftext|>', [50256]]
]

test('gpt2: known GPT-2 ids, and decode(encode(x)) is x', t => {
  const tok = createTokenizer('gpt2')
  t.is(tok.vocabSize, 50257)
  t.is(tok.eot, 50256)
  for (const [text, ids] of KNOWN) t.deepEqual(Array.from(tok.encode(text)), ids, text)
  for (const text of ['héllo 日本語 🙂', "It's 3.14 — isn't it?\n\n  indented", 'a<|endoftext|>b', '']) {
    t.is(tok.decode(tok.encode(text)), text, JSON.stringify(text))
    t.deepEqual(tok.encode(Buffer.from(text, 'utf8')), tok.encode(text), 'bytes in, the same ids')
  }
  t.is(createTokenizer('gpt2'), tok, 'built once per process')
})

test('bytes: the UTF-8 bytes are the ids, invalid UTF-8 included; ids over 255 are refused', t => {
  const tok = createTokenizer('bytes')
  t.deepEqual(Array.from(tok.encode('hé')), [104, 195, 169])
  t.deepEqual(Array.from(tok.encode(new Uint8Array([0xff, 0x00]))), [255, 0])
  t.is(tok.decode(tok.encode('héllo 日本')), 'héllo 日本')
  t.throws(() => tok.decode([300]), { name: 'InvalidArgumentError' })
})

test('--tokenizer gpt2 on text data: GPT-2 ids, vocabulary 50257; a text over the BPE cap is a DataError', t => {
  const dir = mkdtempSync(join(tmpdir(), 'zm-tok-'))
  try {
    const file = join(dir, 'corpus.txt')
    writeFileSync(file, 'Hello world. '.repeat(600))
    const bytes = loadCorpus(file)
    const bpe = loadCorpus(file, 'gpt2')
    t.is(bytes.vocabSize, 256)
    t.is(bpe.vocabSize, 50257)
    t.deepEqual(Array.from(bpe.train.subarray(0, 2)), [15496, 995])
    t.true(bpe.train.length + bpe.val.length < bytes.train.length / 3, 'BPE packs the text into fewer tokens')
    t.regex(bpe.source, /gpt2 tokens$/)
    t.is(corpusVocabSize(file, 'gpt2'), 50257)
    t.is(corpusVocabSize('x.bin', 'bytes'), 50257)
    t.is(corpusVocabSize(undefined), 256)
    const big = join(dir, 'big.txt')
    writeFileSync(big, Buffer.alloc(TOKENIZER_LIMITS.maxBpeTextBytes + 1, 0x61))
    t.throws(() => loadCorpus(big, 'gpt2'), { name: 'DataError', message: /big\.txt has \d+ bytes, more than the \d+ that --tokenizer gpt2 tokenizes/ })
  } finally {
    rmSync(dir, { recursive: true, force: true })
  }
})
