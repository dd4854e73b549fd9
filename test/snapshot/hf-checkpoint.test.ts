import test from 'ava'
import { execFileSync, spawnSync } from 'node:child_process'
import { mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, truncateSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { Rng, shardRange } from '../../core/index.ts'
import { CpuBackend, Gpt, gptLayout, hfGpt2Tensors, initGptParams, toHfGpt2, type GptConfig } from '../../gpu/index.ts'
import { batchFor, trainingModel, type TrainConfig } from '../../node/index.ts'
import { diskDir, persistDiskState } from '../../node/disk-tier.ts'
import {
  CHECKPOINT_LIMITS,
  SAFETENSORS_LIMITS,
  encodeState,
  loadGptCheckpoint,
  openSafetensors,
  readCheckpointInfo,
  writeHfCheckpoint
} from '../../snapshot/index.ts'
import { main } from '../../cli/main.ts'
import { base, corpus, ok, trainMesh } from '../helpers/train-mesh.ts'

// HF GPT-2 checkpoints in and out: `zeromesh export --format hf`, read back by our loader
// (bit-identical), by an independent numpy reader and forward pass (test/helpers/hf_gpt2.py;
// the logits agree with ours), and as `--init-from` of a run (step 0's weights are the file's).
// Malformed and oversized files are typed errors naming the file.

const root = mkdtempSync(join(tmpdir(), 'zm-hf-'))
test.after.always(() => rmSync(root, { recursive: true, force: true }))
let dirs = 0
const fresh = (): string => {
  const d = join(root, `case-${dirs++}`)
  mkdirSync(d)
  return d
}

const config = trainingModel('mini', 256)
const layout = gptLayout(config)

/** Trained-looking weights: the seed's init plus noise of `std` on every element (wte's padding rows stay zero). */
function weights(seed: string, std = 0.01): Float32Array {
  const flat = initGptParams(config, 11)
  const rng = Rng.fromSeed(seed)
  for (let i = 0; i < flat.length; i++) flat[i] = flat[i]! + rng.normal() * std
  // wte's padding rows are zero in a real run (never a target, never an input): keep them so.
  flat.fill(0, config.vocabSize * config.C, config.paddedVocabSize * config.C)
  return flat
}

async function cli(argv: string[]): Promise<{ code: number; out: string[]; err: string[] }> {
  const out: string[] = []
  const err: string[] = []
  const code = await main(argv, { out: l => out.push(l), err: l => err.push(l) })
  return { code, out, err }
}

/** Node dirs holding the disk-tier files of a 3-rank run at `step`. */
async function runDirs(flat: Float32Array, step: number): Promise<string[]> {
  const nodes = [fresh(), fresh(), fresh()]
  for (let r = 0; r < 3; r++) {
    const { start, length } = shardRange(flat.length, 3, r)
    const w = flat.slice(start, start + length)
    const sealed = encodeState({ rank: r, worldSize: 3, epoch: 1, step, dataCursor: step, weights: w, adamM: w, adamV: w, rng: new Uint8Array(0) })
    await persistDiskState(diskDir(nodes[r]!), step, sealed)
  }
  return nodes
}

const same = (a: Float32Array, b: Float32Array): boolean =>
  Buffer.compare(Buffer.from(a.buffer, a.byteOffset, a.byteLength), Buffer.from(b.buffer, b.byteOffset, b.byteLength)) === 0

/** Our logits (CPU reference backend) of `ids` under `flat`: [T][V]. */
function ourLogits(cfg: GptConfig, flat: Float32Array, ids: number[]): Float32Array[] {
  const be = new CpuBackend()
  const gpt = new Gpt(be, cfg, { B: 1, T: ids.length, dtype: 'f32', seed: 0 })
  gpt.setParams(flat)
  gpt.forward(Int32Array.from(ids), null)
  const rows = ids.map((_, t) => gpt.logitsAt(0, t))
  gpt.dispose()
  return rows
}

const python = ((): { ok: true } | { ok: false; reason: string } => {
  const r = spawnSync('python3', ['-c', 'import numpy'], { encoding: 'utf8' })
  if (r.error !== undefined) return { ok: false, reason: `python3 is not available (${r.error.message})` }
  if (r.status !== 0) return { ok: false, reason: 'numpy is not importable by python3 (apt-get install python3-numpy)' }
  return { ok: true }
})()
const helper = fileURLToPath(new URL('../helpers/hf_gpt2.py', import.meta.url))

test('export --format hf writes GPT2LMHeadModel tensors and config.json; our loader reads back the exact weights', async t => {
  const flat = weights('hf-export')
  const nodes = await runDirs(flat, 20)
  const out = join(fresh(), 'gpt2-hf')
  const r = await cli(['export', '--format', 'hf', '--out', out, ...nodes.flatMap(d => ['--data-dir', d])])
  t.is(r.code, 0, r.err.join('\n'))
  t.regex(r.out.at(-1)!, /^exported step 20 of mini \(3 ranks\): 28 tensors, .* \(HF GPT-2: model\.safetensors, config\.json\)$/)
  const cfg = JSON.parse(readFileSync(join(out, 'config.json'), 'utf8')) as Record<string, unknown>
  t.like(cfg, {
    model_type: 'gpt2',
    architectures: ['GPT2LMHeadModel'],
    vocab_size: 256,
    n_positions: 64,
    n_ctx: 64,
    n_embd: 64,
    n_layer: 2,
    n_head: 4,
    activation_function: 'gelu_new',
    layer_norm_epsilon: 1e-5,
    tie_word_embeddings: true
  })
  t.is(cfg['eos_token_id'], null, "a byte vocabulary has no GPT-2 special ids (transformers' default, 50256, is outside it)")
  t.is(cfg['bos_token_id'], null)
  const info = await readCheckpointInfo(out)
  t.is(info.format, 'hf')
  t.deepEqual(info.config, config)
  t.is(info.metadata['format'], 'pt', 'transformers wants format pt in the metadata')
  const back = await loadGptCheckpoint(out)
  t.true(same(back.flat, flat), 'the HF export reads back bit-identically (transposes and padding undone)')
  // The file's own layout: HF names, Conv1D weights [in, out].
  const hf = toHfGpt2(flat, config)
  const names = hf.tensors.map(x => x.name)
  t.true(names.includes('transformer.h.1.attn.c_attn.weight'))
  t.deepEqual(hf.tensors.find(x => x.name === 'transformer.h.0.mlp.c_fc.weight')!.shape, [64, 256])
  t.deepEqual(hf.tensors.find(x => x.name === 'transformer.wte.weight')!.shape, [256, 64])
})

const numpyTest = python.ok ? test : test.skip
const skipNote = python.ok ? '' : ` [skipped: ${python.reason}]`
numpyTest(`an independent numpy GPT-2 (test/helpers/hf_gpt2.py) computes our logits from the HF export${skipNote}`, async t => {
  // Larger than an init's, so the logits spread over several units and every layer matters.
  const flat = weights('hf-logits', 0.15)
  const dir = join(fresh(), 'hf')
  await writeHfCheckpoint(dir, flat, config)
  const ids = [84, 104, 101, 32, 113, 117, 105, 99, 107]
  const theirs = JSON.parse(execFileSync('python3', [helper, dir, ids.join(',')], { encoding: 'utf8' })) as { logits: number[][]; vocab_size: number }
  const ours = ourLogits(config, flat, ids)
  t.is(theirs.vocab_size, 256)
  let worst = 0
  let scale = 0
  for (let p = 0; p < ids.length; p++) {
    for (let v = 0; v < 256; v++) {
      worst = Math.max(worst, Math.abs(ours[p]![v]! - theirs.logits[p]![v]!))
      scale = Math.max(scale, Math.abs(theirs.logits[p]![v]!))
    }
  }
  t.log(`max |ours - numpy| = ${worst.toExponential(2)} over logits up to ${scale.toFixed(3)}`)
  t.true(worst <= 1e-4 * Math.max(1, scale), `max abs difference ${worst} (scale ${scale})`)
})

/** A safetensors file written by hand (independent of our writer): tensors of any dtype. */
function handWritten(path: string, tensors: Array<{ name: string; dtype: string; shape: number[]; bytes: Uint8Array }>, meta?: Record<string, string>): void {
  const header: Record<string, unknown> = meta === undefined ? {} : { __metadata__: meta }
  let at = 0
  for (const x of tensors) {
    header[x.name] = { dtype: x.dtype, shape: x.shape, data_offsets: [at, at + x.bytes.length] }
    at += x.bytes.length
  }
  const json = Buffer.from(JSON.stringify(header))
  const len = Buffer.alloc(8)
  len.writeBigUInt64LE(BigInt(json.length))
  writeFileSync(path, Buffer.concat([len, json, ...tensors.map(x => Buffer.from(x.bytes))]))
}

/** The HF tensors of `flat` as hand-written entries in `dtype` (F16 and BF16 round to nearest even). */
function hfEntries(
  flat: Float32Array,
  dtype: 'F32' | 'F16' | 'BF16',
  prefix = true
): Array<{ name: string; dtype: string; shape: number[]; bytes: Uint8Array }> {
  const hf = toHfGpt2(flat, config)
  return hf.tensors.map(x => {
    const n = x.shape.reduce((a, b) => a * b, 1)
    const v = hf.flat.subarray(x.offset, x.offset + n)
    const bytes = Buffer.alloc(n * (dtype === 'F32' ? 4 : 2))
    for (let i = 0; i < n; i++) {
      if (dtype === 'F32') bytes.writeFloatLE(v[i]!, 4 * i)
      else if (dtype === 'BF16') bytes.writeUInt16LE(toBf16(v[i]!), 2 * i)
      else bytes.writeUInt16LE(toF16(v[i]!), 2 * i)
    }
    return { name: prefix ? x.name : x.name.replace(/^transformer\./, ''), dtype, shape: x.shape, bytes }
  })
}

function toBf16(x: number): number {
  const b = Buffer.alloc(4)
  b.writeFloatLE(x)
  const u = b.readUInt32LE()
  return ((u + 0x7fff + ((u >>> 16) & 1)) >>> 16) & 0xffff
}

/** f32 to f16 for normal, small values (what these weights are), rounding to nearest. */
function toF16(x: number): number {
  const sign = x < 0 ? 0x8000 : 0
  const a = Math.abs(x)
  if (a === 0) return sign
  let e = Math.floor(Math.log2(a))
  if (e < -14) return sign | Math.round(a / 2 ** -24)
  let m = Math.round((a / 2 ** e - 1) * 1024)
  if (m === 1024) {
    m = 0
    e++
  }
  return sign | ((e + 15) << 10) | m
}

const writeConfig = (dir: string, extra: Record<string, unknown> = {}): void =>
  writeFileSync(join(dir, 'config.json'), JSON.stringify({ model_type: 'gpt2', vocab_size: 256, n_positions: 64, n_embd: 64, n_layer: 2, n_head: 4, ...extra }))

test('HF files as transformers saves them: names without transformer., F16 and BF16, attention buffers and a tied lm_head', async t => {
  const flat = weights('hf-variants')
  for (const dtype of ['F32', 'F16', 'BF16'] as const) {
    const dir = fresh()
    writeConfig(dir)
    const entries = hfEntries(flat, dtype, dtype !== 'F32')
    const wte = entries.find(e => e.name.endsWith('wte.weight'))!
    handWritten(
      join(dir, 'model.safetensors'),
      [
        ...entries,
        { name: `${dtype === 'F32' ? 'transformer.' : ''}h.0.attn.bias`, dtype: 'F32', shape: [1, 1, 64, 64], bytes: new Uint8Array(64 * 64 * 4) },
        { name: 'h.1.attn.masked_bias', dtype: 'F32', shape: [], bytes: new Uint8Array(4) },
        { ...wte, name: 'lm_head.weight' }
      ],
      { format: 'pt' }
    )
    const { flat: got } = await loadGptCheckpoint(dir)
    // F32 exact; F16 rounds to 11 significant bits, BF16 to 8: half a unit in the last place.
    const rel = dtype === 'F32' ? 0 : dtype === 'F16' ? 2 ** -11 : 2 ** -8
    let worst = 0
    for (let i = 0; i < flat.length; i++) worst = Math.max(worst, Math.abs(got[i]! - flat[i]!) - rel * Math.abs(flat[i]!) - 2 ** -25)
    t.true(worst <= 0, `${dtype}: off by ${worst} beyond half an ulp`)
    if (dtype === 'F32') t.true(same(got, flat))
    t.is(
      got.subarray(config.vocabSize * config.C, config.paddedVocabSize * config.C).some(x => x !== 0),
      false,
      `${dtype}: padding rows are zero`
    )
  }
})

test('a checkpoint that does not fit is refused naming the file and what is wrong', async t => {
  const flat = weights('hf-bad')
  const cases: Array<{ what: string; make: (dir: string) => void; message: RegExp; name?: string }> = [
    { what: 'no config.json', make: d => handWritten(join(d, 'model.safetensors'), hfEntries(flat, 'F32')), message: /has no config\.json beside it/ },
    {
      what: 'shape against config.json',
      make: d => {
        writeConfig(d, { n_positions: 32 })
        handWritten(join(d, 'model.safetensors'), hfEntries(flat, 'F32'))
      },
      message: /transformer\.wpe\.weight is \[64, 64\], but .*config\.json makes it \[32, 64\]/
    },
    {
      what: 'a missing tensor',
      make: d => {
        writeConfig(d)
        handWritten(
          join(d, 'model.safetensors'),
          hfEntries(flat, 'F32').filter(e => e.name !== 'transformer.h.1.ln_2.bias')
        )
      },
      message: /lacks transformer\.h\.1\.ln_2\.bias/
    },
    {
      what: 'an untied head',
      make: d => {
        writeConfig(d)
        const e = hfEntries(flat, 'F32')
        handWritten(join(d, 'model.safetensors'), [...e, { name: 'lm_head.weight', dtype: 'F32', shape: [256, 64], bytes: new Uint8Array(256 * 64 * 4) }])
      },
      message: /lm_head\.weight differs from wte/
    },
    {
      what: 'another activation',
      make: d => {
        writeConfig(d, { activation_function: 'relu' })
        handWritten(join(d, 'model.safetensors'), hfEntries(flat, 'F32'))
      },
      message: /config\.json: activation_function "relu"/
    },
    {
      what: 'an integer tensor',
      make: d => {
        writeConfig(d)
        const e = hfEntries(flat, 'F32')
        e[1] = { ...e[1]!, dtype: 'I32' }
        handWritten(join(d, 'model.safetensors'), e)
      },
      message: /transformer\.wpe\.weight is I32/
    },
    {
      what: 'a header that is not JSON',
      make: d => {
        writeConfig(d)
        const len = Buffer.alloc(8)
        len.writeBigUInt64LE(5n)
        writeFileSync(join(d, 'model.safetensors'), Buffer.concat([len, Buffer.from('{"a":')]))
      },
      message: /model\.safetensors is not a valid safetensors file: the header is not JSON/,
      name: 'SafetensorsError'
    },
    {
      what: 'a truncated file',
      make: d => {
        writeConfig(d)
        handWritten(join(d, 'model.safetensors'), hfEntries(flat, 'F32'))
        const p = join(d, 'model.safetensors')
        const whole = readFileSync(p)
        writeFileSync(p, whole.subarray(0, whole.length - 100))
      },
      message: /data_offsets .* are not a range inside the/,
      name: 'SafetensorsError'
    }
  ]
  for (const c of cases) {
    const dir = fresh()
    c.make(dir)
    const err = await t.throwsAsync(loadGptCheckpoint(dir), { message: c.message }, c.what)
    t.is(err?.name, c.name ?? 'CheckpointError', c.what)
    t.true(err?.message.includes(dir) ?? false, `${c.what}: names the file`)
  }
})

test('safetensors caps: the header length, tensor count, dimensions and tensor size are checked before allocating', async t => {
  const dir = fresh()
  writeConfig(dir)
  const big = join(dir, 'model.safetensors')
  const len = Buffer.alloc(8)
  len.writeBigUInt64LE(BigInt(SAFETENSORS_LIMITS.maxHeaderBytes + 1))
  writeFileSync(big, Buffer.concat([len, Buffer.from('{}')]))
  const e1 = await t.throwsAsync(loadGptCheckpoint(dir), { name: 'LimitExceededError' })
  t.regex(e1!.message, new RegExp(`${big}: safetensors header bytes ${SAFETENSORS_LIMITS.maxHeaderBytes + 1} exceeds the cap`))
  // One tensor more than the cap, each of zero bytes.
  const header: Record<string, unknown> = {}
  for (let i = 0; i <= SAFETENSORS_LIMITS.maxTensors; i++) header[`t${i}`] = { dtype: 'F32', shape: [0], data_offsets: [0, 0] }
  const json = Buffer.from(JSON.stringify(header))
  len.writeBigUInt64LE(BigInt(json.length))
  writeFileSync(big, Buffer.concat([len, json]))
  const e2 = await t.throwsAsync(loadGptCheckpoint(dir), { name: 'LimitExceededError' })
  t.regex(e2!.message, /safetensors tensors 65537 exceeds the cap of 65536/)
  // Too many dimensions is a malformed header.
  handWritten(big, [{ name: 'x', dtype: 'F32', shape: [1, 1, 1, 1, 1, 1, 1, 1, 1], bytes: new Uint8Array(4) }])
  await t.throwsAsync(openSafetensors(big), { name: 'SafetensorsError', message: /shape \[1,1,1,1,1,1,1,1,1\] is not a list of at most 8/ })
  // A tensor past maxTensorElements (a sparse file: its bytes are never allocated) is refused when read.
  const n = SAFETENSORS_LIMITS.maxTensorElements + 1
  const hj = Buffer.from(JSON.stringify({ huge: { dtype: 'BF16', shape: [n], data_offsets: [0, 2 * n] } }))
  len.writeBigUInt64LE(BigInt(hj.length))
  writeFileSync(big, Buffer.concat([len, hj]))
  truncateSync(big, statSync(big).size + 2 * n)
  const st = await openSafetensors(big)
  try {
    await t.throwsAsync(st.readF32('huge'), { name: 'LimitExceededError', message: /elements of tensor huge 2147483649 exceeds the cap of 2147483648/ })
  } finally {
    await st.close()
  }
})

test('checkpoint caps: config.json size and the parameter count, checked before the weights are allocated', async t => {
  const dir = fresh()
  handWritten(join(dir, 'model.safetensors'), [{ name: 'x', dtype: 'F32', shape: [1], bytes: new Uint8Array(4) }])
  writeConfig(dir, { n_embd: 8192, n_head: 64, n_layer: 4000 })
  const e1 = await t.throwsAsync(readCheckpointInfo(dir), { name: 'LimitExceededError' })
  t.regex(e1!.message, new RegExp(`model\\.safetensors: model parameters \\d+ exceeds the cap of ${CHECKPOINT_LIMITS.maxParameters}`))
  writeFileSync(join(dir, 'config.json'), `{"model_type": "gpt2", "pad": "${'x'.repeat(CHECKPOINT_LIMITS.maxConfigBytes)}"}`)
  await t.throwsAsync(readCheckpointInfo(dir), { name: 'LimitExceededError', message: /config\.json: bytes \d+ exceeds the cap of 1048576/ })
})

test('--init-from an HF export: step 0 is the file, bit for bit, and the run trains from it', async t => {
  const model = trainingModel('mini', 256)
  const flat = weights('hf-init')
  const nodes = await runDirs(flat, 10)
  const dir = join(fresh(), 'ckpt')
  t.is((await cli(['export', '--format', 'hf', '--out', dir, ...nodes.flatMap(d => ['--data-dir', d])])).code, 0)
  const cfg: TrainConfig = { ...base, model, worldSize: 1, steps: 4, initFrom: dir }
  const run = ok(await trainMesh(1, cfg))
  const st = run.statuses[0]!
  t.is(st.role, 'done')
  // The reference: the file's weights trained as one full replica on the same batches.
  const be = new CpuBackend()
  const ref = new Gpt(be, model, { B: cfg.B, T: cfg.T, dtype: 'f32', seed: cfg.seed })
  ref.setParams(flat)
  const train = corpus().train
  const losses: number[] = []
  for (let s = 0; s < cfg.steps; s++) {
    const batch = batchFor(train, cfg.seed, s, 0, cfg.B, cfg.T)
    ref.zeroGrad()
    losses.push(ref.forward(batch.inputs, batch.targets))
    ref.backward()
    ref.update({ lr: cfg.lr, step: s + 1, beta1: 0.9, beta2: 0.95, eps: 1e-8, weightDecay: cfg.weightDecay, gradScale: 1 })
  }
  t.true(same(run.params, ref.getParams()), 'final weights are those of the reference started from the file')
  t.false(same(run.params, flat), 'it trained')
  t.true(losses.at(-1)! < losses[0]!, `loss ${losses[0]} -> ${losses.at(-1)}`)
  ref.dispose()
  // A checkpoint of another shape is refused at once.
  const other = { ...cfg, model: { ...model, nLayer: 3 } }
  const bad = await trainMesh(1, other)
  t.regex(bad.errors[0]?.message ?? '', /initial weights \(--init-from\).*another model shape than expected: nLayer 2 \(want 3\)/)
  t.is(hfGpt2Tensors(model).length, 4 + 12 * model.nLayer)
  t.is(layout.length, gptLayout(model).length)
})
