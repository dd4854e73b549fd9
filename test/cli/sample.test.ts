import test from 'ava'
import { execFile } from 'node:child_process'
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { promisify } from 'node:util'
import { Rng, shardRange } from '../../core/index.ts'
import { CpuBackend, Gpt, initGptParams } from '../../gpu/index.ts'
import { createTokenizer, trainingModel } from '../../node/index.ts'
import { diskDir, persistDiskState } from '../../node/disk-tier.ts'
import { encodeState, writeHfCheckpoint } from '../../snapshot/index.ts'
import { main } from '../../cli/main.ts'
import { SAMPLE_LIMITS } from '../../cli/sample/run.ts'

// `zeromesh sample`: the same seed gives the same text (two processes), temperature 0 is the
// argmax continuation (checked against forwards over exactly the tokens so far, no padding),
// bad flags exit 2 and unreadable models exit 1, each with one line naming the problem. A
// process costs seconds of start-up on a small machine: the cases that need no process run
// the same CLI entry (cli/main.ts) in this one.

const bin = fileURLToPath(new URL('../../bin/zeromesh.js', import.meta.url))
const execFileP = promisify(execFile)
const root = mkdtempSync(join(tmpdir(), 'zm-sample-'))
test.after.always(() => rmSync(root, { recursive: true, force: true }))

const config = trainingModel('mini', 256)
/** Weights with some structure (larger than the init's), so the logits are far from uniform. */
const flat = initGptParams(config, 4)
{
  const rng = Rng.fromSeed('sample-test')
  for (let i = 0; i < config.vocabSize * config.C; i++) flat[i] = flat[i]! + rng.normal() * 0.06
}
const hfDir = join(root, 'hf')
const ready = writeHfCheckpoint(hfDir, flat, config)

/** The CLI as a separate process. */
async function zmProcess(args: string[]): Promise<{ code: number; out: string; err: string }> {
  await ready
  try {
    const r = await execFileP(process.execPath, [bin, ...args], { encoding: 'utf8' })
    return { code: 0, out: r.stdout, err: r.stderr }
  } catch (e) {
    const x = e as { code: number; stdout: string; stderr: string }
    return { code: x.code, out: x.stdout, err: x.stderr }
  }
}

/** The CLI's entry in this process, its lines joined as a process would print them. */
async function zm(args: string[]): Promise<{ code: number; out: string; err: string }> {
  await ready
  const out: string[] = []
  const err: string[] = []
  const code = await main(args, { out: l => out.push(l), err: l => err.push(l) })
  return { code, out: out.map(l => `${l}\n`).join(''), err: err.map(l => `${l}\n`).join('') }
}

/** Greedy continuation computed by forwards over exactly the tokens so far (a new model per length). */
function greedy(prompt: string, tokens: number): string {
  const tok = createTokenizer('bytes')
  const seq = Array.from(tok.encode(prompt))
  const be = new CpuBackend()
  for (let i = 0; i < tokens; i++) {
    const T = Math.min(seq.length, config.maxT)
    const gpt = new Gpt(be, config, { B: 1, T, dtype: 'f32', seed: 0 })
    gpt.setParams(flat)
    gpt.forward(Int32Array.from(seq.slice(-T)), null)
    const logits = gpt.logitsAt(0, T - 1)
    gpt.dispose()
    let best = 0
    for (let v = 1; v < config.vocabSize; v++) if (logits[v]! > logits[best]!) best = v
    seq.push(best)
  }
  return Buffer.from(seq).toString('utf8')
}

test('--temperature 0 is the argmax continuation, whatever the seed', async t => {
  const a = await zm(['sample', '--from', hfDir, '--prompt', 'Hello', '--tokens', '12', '--temperature', '0', '--seed', '1', '--json'])
  t.is(a.code, 0, a.err)
  const b = await zm(['sample', '--from', hfDir, '--prompt', 'Hello', '--tokens', '12', '--temperature', '0', '--seed', '2', '--json'])
  const ja = JSON.parse(a.out) as { prompt: string; text: string; ids: number[]; promptIds: number[]; tokenizer: string }
  const jb = JSON.parse(b.out) as { ids: number[] }
  t.deepEqual(ja.ids, jb.ids)
  t.is(ja.tokenizer, 'bytes', 'a 256-id model defaults to the bytes tokenizer')
  t.deepEqual(ja.promptIds, [72, 101, 108, 108, 111])
  t.is(ja.ids.length, 12)
  const want = greedy('Hello', 12)
  t.deepEqual(Buffer.from(want, 'utf8').subarray(5), Buffer.from(ja.ids), 'the CLI pads after the last real token; the reference does not')
})

test('the same --seed gives the same text, another seed another; the text starts with the prompt', async t => {
  const args = ['sample', '--from', hfDir, '--prompt', 'The', '--tokens', '40', '--temperature', '1', '--top-k', '20']
  const [x, y, z] = await Promise.all([zmProcess([...args, '--seed', '7']), zmProcess([...args, '--seed', '7']), zm([...args, '--seed', '8'])])
  t.is(x.code, 0, x.err)
  t.is(x.out, y.out)
  t.not(x.out, z.out)
  t.true(x.out.startsWith('The'))
  t.is(x.err, '')
})

test('--data-dir: the run on disk, assembled as export does', async t => {
  const node = join(root, 'node0')
  mkdirSync(node)
  const { start, length } = shardRange(flat.length, 1, 0)
  const w = flat.slice(start, start + length)
  await persistDiskState(
    diskDir(node),
    30,
    encodeState({ rank: 0, worldSize: 1, epoch: 1, step: 30, dataCursor: 30, weights: w, adamM: w, adamV: w, rng: new Uint8Array(0) })
  )
  const fromDisk = await zm(['sample', '--data-dir', node, '--prompt', 'Hello', '--tokens', '12', '--temperature', '0', '--json'])
  t.is(fromDisk.code, 0, fromDisk.err)
  const j = JSON.parse(fromDisk.out) as { model: string; text: string }
  t.is(j.model, 'step 30 of mini')
  t.is('Hello' + j.text, greedy('Hello', 12))
})

test('bad flags exit 2, an unreadable or unfitting model exits 1: one line each, naming the problem', async t => {
  const usage: Array<[string[], RegExp]> = [
    [['sample', '--prompt', 'x'], /--from or --data-dir is needed/],
    [['sample', '--from', hfDir, '--tokens', '5000'], /--tokens must be an integer in \[0, 4096\]/],
    [['sample', '--from', hfDir, '--temperature=-1'], /--temperature .*>=0/],
    [['sample', '--from', hfDir, '--tokenizer', 'klingon'], /--tokenizer must be bytes or gpt2, got 'klingon'/],
    [['sample', '--from', hfDir, '--bogus'], /bogus/],
    [['sample', '--from', hfDir, '--prompt', 'x'.repeat(SAMPLE_LIMITS.maxPromptChars + 1)], /--prompt Too big: expected string to have <=65536 characters/],
    [['sample', '--from', hfDir, '--top-k', String(SAMPLE_LIMITS.maxTopK + 1)], /--top-k must be an integer in \[0, 1048576\]/]
  ]
  const missing = join(root, 'nope', 'model.safetensors')
  const corrupt = join(root, 'corrupt.safetensors')
  writeFileSync(corrupt, Buffer.from('this is not a safetensors file at all'))
  const failures: Array<[string[], RegExp]> = [
    [['sample', '--from', missing], new RegExp(`cannot read checkpoint ${missing}: ENOENT`)],
    [['sample', '--from', corrupt], new RegExp(`${corrupt}( is not a valid safetensors file|: safetensors header bytes)`)],
    [['sample', '--from', hfDir, '--tokenizer', 'gpt2'], /--tokenizer gpt2 has 50257 ids but the model's vocabulary is 256/]
  ]
  // One of each kind as a process (exit codes are the process's), the rest in this one.
  const results = await Promise.all([...usage, ...failures].map(([argv], i) => (i === 0 || i === usage.length ? zmProcess(argv) : zm(argv))))
  results.forEach((r, i) => {
    const [argv, message] = [...usage, ...failures][i]!
    t.is(r.code, i < usage.length ? 2 : 1, argv.join(' '))
    const lines = r.err.trimEnd().split('\n')
    t.is(lines.length, 1, r.err)
    t.regex(lines[0]!, /^zeromesh: /)
    t.regex(lines[0]!, message, argv.join(' '))
    t.is(r.out, '')
  })
})
