import test from 'ava'
import { mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { Rng, shardRange } from '../../core/index.ts'
import { gptLayout } from '../../gpu/index.ts'
import { encodeState } from '../../snapshot/index.ts'
import { main } from '../../cli/main.ts'
import { diskDir, persistDiskState } from '../../node/disk-tier.ts'
import { EXPORT_LIMITS, exportModel } from '../../cli/export/model.ts'
import { trainingModel } from '../../node/index.ts'
import { runIdentity } from '../../node/train/config.ts'

const root = mkdtempSync(join(tmpdir(), 'zm-export-'))
test.after.always(() => rmSync(root, { recursive: true, force: true }))

// A small text corpus: byte tokens, vocabulary 256 (like the default corpus), read fast.
const dataFile = join(root, 'corpus.txt')
writeFileSync(dataFile, 'the quick brown fox jumps over the lazy dog. '.repeat(64))
const layout = gptLayout(trainingModel('mini', 256))
const N = layout.length

let dirCount = 0
const freshDir = (): string => {
  const d = join(root, `case-${dirCount++}`)
  mkdirSync(d)
  return d
}

/** The full flat weights of `step` (distinct per step and element). */
function flatOf(step: number, n = N): Float32Array {
  const rng = Rng.fromSeed(`export-test/${step}`)
  const out = new Float32Array(n)
  for (let i = 0; i < n; i++) out[i] = rng.normal() * 0.02 + i * 1e-7
  return out
}

/** Writes rank r's disk-tier file of `step` (its shardRange slice of `flat`) into node dir `dir`. */
async function writeRank(
  dir: string,
  step: number,
  r: number,
  P: number,
  flat = flatOf(step),
  fileStep = step,
  identity?: Uint8Array,
  nonce?: Uint8Array
): Promise<string> {
  const { start, length } = shardRange(flat.length, P, r)
  const weights = flat.slice(start, start + length)
  const sealed = encodeState({
    rank: r,
    worldSize: P,
    epoch: 3,
    step,
    dataCursor: step,
    weights,
    adamM: weights.map(x => x / 2),
    adamV: weights.map(x => x * x),
    rng: new Uint8Array(0),
    ...(identity === undefined ? {} : { identity }),
    ...(nonce === undefined ? {} : { nonce })
  })
  return await persistDiskState(diskDir(dir), fileStep, sealed)
}

/** Three node dirs, one rank each, holding `steps`. */
async function threeNodes(steps: number[]): Promise<string[]> {
  const dirs = [freshDir(), freshDir(), freshDir()]
  for (const step of steps) for (let r = 0; r < 3; r++) await writeRank(dirs[r]!, step, r, 3)
  return dirs
}

/** An independent minimal safetensors reader: u64 header length, JSON header, raw LE data. */
function readSafetensors(path: string): { meta: Record<string, string>; tensors: Map<string, { shape: number[]; data: Float32Array }>; order: string[] } {
  const bytes = readFileSync(path)
  const n = Number(bytes.readBigUInt64LE(0))
  const header = JSON.parse(bytes.subarray(8, 8 + n).toString('utf8')) as Record<string, { dtype: string; shape: number[]; data_offsets: [number, number] }>
  const base = 8 + n
  const tensors = new Map<string, { shape: number[]; data: Float32Array }>()
  const order: string[] = []
  let expectAt = 0
  for (const [name, t] of Object.entries(header)) {
    if (name === '__metadata__') continue
    if (t.dtype !== 'F32') throw new Error(`${name}: dtype ${t.dtype}`)
    const [a, b] = t.data_offsets
    if (a !== expectAt) throw new Error(`${name}: data not contiguous (${a} != ${expectAt})`)
    expectAt = b
    const count = t.shape.reduce((x, y) => x * y, 1)
    if (b - a !== 4 * count) throw new Error(`${name}: ${b - a} bytes for ${count} elements`)
    const data = new Float32Array(count)
    for (let i = 0; i < count; i++) data[i] = bytes.readFloatLE(base + a + 4 * i)
    tensors.set(name, { shape: t.shape, data })
    order.push(name)
  }
  if (base + expectAt !== bytes.length) throw new Error(`file has ${bytes.length - base - expectAt} trailing bytes`)
  return { meta: (header['__metadata__'] ?? {}) as unknown as Record<string, string>, tensors, order }
}

async function cli(argv: string[]): Promise<{ code: number; out: string[]; err: string[] }> {
  const out: string[] = []
  const err: string[] = []
  const code = await main(argv, { out: l => out.push(l), err: l => err.push(l) })
  return { code, out, err }
}

test('export joins a 3-rank split from three data dirs into safetensors with the GPT layout', async t => {
  const dirs = await threeNodes([5, 10])
  const out = join(root, 'model.safetensors')
  const r = await cli(['export', '--out', out, '--data', dataFile, ...dirs.flatMap(d => ['--data-dir', d])])
  t.is(r.code, 0, r.err.join('\n'))
  t.is(r.out.length, 1)
  t.regex(
    r.out[0]!,
    new RegExp(`^exported step 10 of mini \\(3 ranks\\): ${layout.tensors.length} tensors, ${N.toLocaleString('en-US')} parameters, [\\d,]+ bytes to ${out}$`)
  )
  const st = readSafetensors(out)
  t.deepEqual(
    st.order,
    layout.tensors.map(x => x.name)
  )
  const want = flatOf(10)
  for (const x of layout.tensors) {
    const got = st.tensors.get(x.name)!
    t.deepEqual(got.shape, [...x.shape], x.name)
    t.deepEqual(got.data, want.subarray(x.offset, x.offset + x.length), x.name)
  }
  t.is(st.meta['step'], '10')
  t.is(st.meta['world_size'], '3')
  t.is(st.meta['model'], 'mini')
  t.is(st.meta['vocab_size'], '256')
  // No temp file is left beside the output.
  t.deepEqual(
    readdirSync(root).filter(n => n.startsWith('model.safetensors')),
    ['model.safetensors']
  )

  // --step picks an older one; a data dir's train/ folder works as well as the data dir.
  const res = await exportModel({ out, dataDirs: dirs.map(d => diskDir(d)), model: 'mini', data: dataFile, step: 5 })
  t.is(res.step, 5)
  t.deepEqual(readSafetensors(out).tensors.get('wte')!.data, flatOf(5).subarray(0, layout.tensors[0]!.length))
})

test('a missing rank is named; a newer incomplete step falls back to the newest complete one', async t => {
  const dirs = await threeNodes([4])
  const out = join(root, 'partial.safetensors')
  // Only two of the three nodes: rank 2 is nowhere.
  await t.throwsAsync(exportModel({ out, dataDirs: dirs.slice(0, 2), model: 'mini', data: dataFile }), {
    name: 'ExportError',
    message: /no step has the state of every rank: step 4 lacks rank 2 of 3 .*every node's --data-dir/
  })
  // Ranks 0 and 1 reached step 8, rank 2 only step 4 (mixed steps): step 4 is exported, with a note.
  await writeRank(dirs[0]!, 8, 0, 3)
  await writeRank(dirs[1]!, 8, 1, 3)
  const r = await cli(['export', '--out', out, '--data', dataFile, ...dirs.flatMap(d => ['--data-dir', d])])
  t.is(r.code, 0, r.err.join('\n'))
  t.deepEqual(r.out[0], 'note: step 8 lacks rank 2 of 3; exporting an older step')
  t.regex(r.out[1]!, /^exported step 4 of mini/)
  // Asking for the incomplete step is an error, not a fallback.
  const s8 = await cli(['export', '--out', out, '--data', dataFile, '--step', '8', ...dirs.flatMap(d => ['--data-dir', d])])
  t.is(s8.code, 1)
  t.is(s8.err.length, 1)
  t.regex(s8.err[0]!, /^zeromesh: no step has the state of every rank: step 8 lacks rank 2 of 3/)
  const s9 = await cli(['export', '--out', out, '--data', dataFile, '--step', '9', ...dirs.flatMap(d => ['--data-dir', d])])
  t.regex(s9.err[0]!, /no state files of step 9; the data dirs hold steps 8, 4/)
})

test('a corrupt state file is a one-line error naming it', async t => {
  const dirs = await threeNodes([6])
  const file = join(diskDir(dirs[1]!), readdirSync(diskDir(dirs[1]!))[0]!)
  const bytes = readFileSync(file)
  bytes[bytes.length - 100]! ^= 0x40
  writeFileSync(file, bytes)
  const r = await cli(['export', '--out', join(root, 'c.safetensors'), '--data', dataFile, ...dirs.flatMap(d => ['--data-dir', d])])
  t.is(r.code, 1)
  t.is(r.err.length, 1)
  t.regex(
    r.err[0]!,
    new RegExp(`^zeromesh: the state of step 6 in ${diskDir(dirs[1]!)} is damaged: ${diskDir(dirs[1]!)}/step-0+6\\.zms: snapshot state checksum mismatch$`)
  )
  // Truncated: the header no longer adds up.
  writeFileSync(file, bytes.subarray(0, 100))
  await t.throwsAsync(exportModel({ out: join(root, 'c.safetensors'), dataDirs: dirs, model: 'mini', data: dataFile }), {
    name: 'ExportError',
    message: /is damaged: .*step-0+6\.zms: bad snapshot state: header describes/
  })
})

test('inconsistent files: a renamed step, mixed world sizes, two different copies of a rank', async t => {
  const out = join(root, 'x.safetensors')
  // A file named step 12 that holds step 11.
  const renamed = await threeNodes([])
  await writeRank(renamed[0]!, 11, 0, 3, flatOf(11), 12)
  await t.throwsAsync(exportModel({ out, dataDirs: renamed, model: 'mini', data: dataFile }), {
    name: 'ExportError',
    message: /state of step 12 in .* is a file of step 11/
  })
  // Step 7 from a 3-rank run and from a 2-rank run (a run that shrank, and a stale dir).
  const mixed = await threeNodes([7])
  const stale = freshDir()
  await writeRank(stale, 7, 1, 2)
  await t.throwsAsync(exportModel({ out, dataDirs: [...mixed, stale], model: 'mini', data: dataFile }), {
    name: 'ExportError',
    message: /step 7 mixes world sizes: 3 in .*, 2 in .*stale data dirs/
  })
  // The same rank in two dirs: identical copies are fine, different ones are not.
  const dup = freshDir()
  await writeRank(dup, 7, 1, 3)
  t.is((await exportModel({ out, dataDirs: [...mixed, dup], model: 'mini', data: dataFile })).step, 7)
  const other = freshDir()
  await writeRank(other, 7, 1, 3, flatOf(99))
  await t.throwsAsync(exportModel({ out, dataDirs: [...mixed, other], model: 'mini', data: dataFile }), {
    name: 'ExportError',
    message: /rank 1 of step 7 differs between/
  })
})

test('weights of another model size are refused with a --model hint', async t => {
  const small = gptLayout(trainingModel('small', 256)).length
  const dirs = [freshDir(), freshDir()]
  const flat = flatOf(3, small)
  for (let r = 0; r < 2; r++) await writeRank(dirs[r]!, 3, r, 2, flat)
  const r = await cli(['export', '--out', join(root, 'm.safetensors'), '--data', dataFile, ...dirs.flatMap(d => ['--data-dir', d])])
  t.is(r.code, 1)
  t.regex(r.err[0]!, /rank 0 of 2 holds \d+ parameters, but this model's split gives it \d+ \(--model small fits it\)/)
  const ok = await cli(['export', '--out', join(root, 'm.safetensors'), '--data', dataFile, '--model', 'small', ...dirs.flatMap(d => ['--data-dir', d])])
  t.is(ok.code, 0, ok.err.join('\n'))
})

test('no files, a missing dir, bad flags and too many data dirs', async t => {
  const empty = freshDir()
  const out = join(root, 'e.safetensors')
  const none = await cli(['export', '--out', out, '--data-dir', empty])
  t.is(none.code, 1)
  t.regex(none.err[0]!, /no disk-tier state files \(train\/step-\*\.zms\) in .*--disk-every/)
  const gone = await cli(['export', '--out', out, '--data-dir', join(root, 'nope')])
  t.regex(gone.err[0]!, /data dir .*nope does not exist/)
  const noDir = await cli(['export', '--out', join(root, 'nope', 'x.safetensors'), '--data-dir', empty])
  t.regex(noDir.err[0]!, /cannot write .*: .*nope is not a directory/)
  for (const argv of [
    ['export', '--data-dir', empty],
    ['export', '--out', out],
    ['export', '--out', out, '--data-dir', empty, '--step', '-1'],
    ['export', '--out', out, '--data-dir', empty, '--model', 'huge'],
    ['export', '--out', out, '--data-dir', empty, '--bogus']
  ]) {
    const r = await cli(argv)
    t.is(r.code, 2, argv.join(' '))
    t.is(r.err.length, 1)
  }
  const many = Array.from({ length: EXPORT_LIMITS.maxDataDirs + 1 }, () => empty)
  const over = await cli(['export', '--out', out, ...many.flatMap(d => ['--data-dir', d])])
  t.is(over.code, 2)
  t.regex(over.err[0]!, /at most 1024 --data-dir, got 1025/)
  await t.throwsAsync(exportModel({ out, dataDirs: many, model: 'mini' }), { name: 'LimitExceededError' })
})

test('a state file of another run with the same shapes (same run id, another seed) is refused, not mixed in', async t => {
  const out = join(root, 'mixed-runs.safetensors')
  const settings = { model: trainingModel('mini', 256), B: 4, T: 64, lr: 3e-3, weightDecay: 0.1, zeroPP: false, dtype: 'f32' as const }
  const ours = runIdentity('r1', { ...settings, seed: 1 })
  const theirs = runIdentity('r1', { ...settings, seed: 2 })
  t.notDeepEqual(ours, theirs)
  t.deepEqual(runIdentity('r1', { ...settings, seed: 1 }), ours, 'the identity is a function of the settings')
  const a = freshDir()
  const b = freshDir()
  await writeRank(a, 5, 0, 2, flatOf(5), 5, ours)
  await writeRank(b, 5, 1, 2, flatOf(6), 5, theirs)
  await t.throwsAsync(exportModel({ out, dataDirs: [a, b], model: 'mini', data: dataFile }), {
    name: 'ExportError',
    message: /step 5 mixes runs: the states in .* and .* belong to different runs/
  })
  const c = freshDir()
  await writeRank(c, 5, 1, 2, flatOf(5), 5, ours)
  t.is((await exportModel({ out, dataDirs: [a, c], model: 'mini', data: dataFile })).step, 5, 'the same run exports')
})

test('a state file of another launch of the same run (same run id and settings, started twice) is refused, not mixed in', async t => {
  const out = join(root, 'mixed-launches.safetensors')
  const settings = { model: trainingModel('mini', 256), B: 4, T: 64, lr: 3e-3, weightDecay: 0.1, zeroPP: false, dtype: 'f32' as const, seed: 1 }
  const id = runIdentity('r1', settings)
  const first = new Uint8Array(16).fill(1)
  const second = new Uint8Array(16).fill(2)
  const a = freshDir()
  const b = freshDir()
  await writeRank(a, 5, 0, 2, flatOf(5), 5, id, first)
  await writeRank(b, 5, 1, 2, flatOf(6), 5, id, second)
  await t.throwsAsync(exportModel({ out, dataDirs: [a, b], model: 'mini', data: dataFile }), {
    name: 'ExportError',
    message: /step 5 mixes launches of one run: .* \(launch 01010101 and 02020202\)/
  })
  const c = freshDir()
  await writeRank(c, 5, 1, 2, flatOf(5), 5, id, first)
  t.is((await exportModel({ out, dataDirs: [a, c], model: 'mini', data: dataFile })).step, 5, 'one launch exports')
})
