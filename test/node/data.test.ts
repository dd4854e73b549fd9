import test from 'ava'
import { mkdtempSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { batchFor, loadCorpus, untag } from '../../node/data.ts'

test('the default corpus is the Brown Corpus as plain text, byte tokens, 95/5 split', t => {
  const c = loadCorpus()
  t.regex(c.source, /Brown Corpus \(500 samples\)/)
  t.is(c.vocabSize, 256)
  const total = c.train.length + c.val.length
  t.true(total > 5_000_000, `${total} tokens`)
  t.is(c.train.length, Math.floor(total * 0.95))
  const head = Buffer.from(c.train.subarray(0, 60)).toString('latin1')
  t.is(head, 'The Fulton County Grand Jury said Friday an investigation of')
  t.false(Buffer.from(c.train.subarray(0, 100_000)).toString('latin1').includes('/nn'), 'tags are stripped')
})

test('untag strips POS tags and normalises the corpus quotes', t => {
  t.is(untag("\n\n\tThe/at jury/nn said/vbd ``/`` no/at ''/'' ./.\n"), 'The jury said " no " .')
  t.is(untag('1/2/cd'), '1/2', 'only the last slash separates the tag')
})

test('batches are a pure function of (seed, step, rank), targets are the next tokens', t => {
  const tokens = new Uint16Array(5000).map((_, i) => i % 251)
  const a = batchFor(tokens, 7, 3, 1, 4, 16)
  const b = batchFor(tokens, 7, 3, 1, 4, 16)
  t.deepEqual(a, b)
  t.notDeepEqual(batchFor(tokens, 7, 3, 2, 4, 16).inputs, a.inputs, 'another rank sees other data')
  t.notDeepEqual(batchFor(tokens, 7, 4, 1, 4, 16).inputs, a.inputs, 'another step sees other data')
  for (let i = 0; i < a.inputs.length; i++) {
    if (i % 16 !== 15) t.is(a.targets[i], a.inputs[i + 1])
    t.is(a.targets[i], (a.inputs[i]! + 1) % 251)
  }
  t.throws(() => batchFor(new Uint16Array(10), 1, 0, 0, 1, 16), { name: 'DataError' })
  t.throws(() => batchFor(tokens, 1, 0, 0, 0, 16), { name: 'InvalidArgumentError' })
})

test('--data reads text as bytes and llm.c token files; malformed files are DataErrors', t => {
  const dir = mkdtempSync(join(tmpdir(), 'zm-data-'))
  const text = join(dir, 'mine.txt')
  writeFileSync(text, 'hello world '.repeat(200))
  const c = loadCorpus(text)
  t.is(c.vocabSize, 256)
  t.is(Buffer.from(c.train.subarray(0, 11)).toString(), 'hello world')

  const tokens = Array.from({ length: 2000 }, (_, i) => (i * 37) % 50257)
  const header = Buffer.alloc(1024)
  header.writeInt32LE(20240520, 0)
  header.writeInt32LE(1, 4)
  header.writeInt32LE(tokens.length, 8)
  const body = Buffer.alloc(tokens.length * 2)
  tokens.forEach((v, i) => body.writeUInt16LE(v, 2 * i))
  const bin = join(dir, 'tok.bin')
  writeFileSync(bin, Buffer.concat([header, body]))
  const g = loadCorpus(bin)
  t.is(g.vocabSize, 50257)
  t.deepEqual(Array.from(g.train.subarray(0, 5)), tokens.slice(0, 5))

  const short = join(dir, 'short.bin')
  writeFileSync(short, Buffer.concat([header, body.subarray(0, 100)]))
  t.throws(() => loadCorpus(short), { name: 'DataError', message: /header says 2000 tokens/ })
  const notllmc = join(dir, 'x.bin')
  writeFileSync(notllmc, Buffer.alloc(2048))
  t.throws(() => loadCorpus(notllmc), { name: 'DataError', message: /not an llm.c token file/ })
  t.throws(() => loadCorpus(join(dir, 'missing.txt')), { name: 'DataError', message: /ENOENT/ })
  const tiny = join(dir, 'tiny.txt')
  writeFileSync(tiny, 'too small')
  t.throws(() => loadCorpus(tiny), { name: 'DataError', message: /at least 1024/ })
})
