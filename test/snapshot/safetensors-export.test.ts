import test from 'ava'
import { mkdtemp, readFile, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { GPT_PRESETS, gptLayout, initGptParams } from '../../gpu/index.ts'
import { assembleFlat, shardRange } from '../../core/index.ts'
import { exportSafetensors } from '../../snapshot/index.ts'

// An independent safetensors reader, written from the format description only:
// u64 LE header length N, N bytes of UTF-8 JSON, then the byte buffer the offsets point into.
function readSafetensors(file: Uint8Array): {
  meta: Record<string, string> | undefined
  tensors: Map<string, { dtype: string; shape: number[]; data: Float32Array }>
} {
  const n = Number(new DataView(file.buffer, file.byteOffset, 8).getBigUint64(0, true))
  if (8 + n > file.length) throw new Error('header runs past the file')
  const header = JSON.parse(new TextDecoder().decode(file.subarray(8, 8 + n))) as Record<string, any>
  const base = 8 + n
  if (base % 8 !== 0) throw new Error('data is not 8-byte aligned')
  const tensors = new Map<string, { dtype: string; shape: number[]; data: Float32Array }>()
  let covered = 0
  const ranges: Array<[number, number]> = []
  for (const [name, info] of Object.entries(header)) {
    if (name === '__metadata__') continue
    const [b, e] = info.data_offsets as [number, number]
    const count = (info.shape as number[]).reduce((x, y) => x * y, 1)
    if (info.dtype !== 'F32' || e - b !== 4 * count || base + e > file.length) throw new Error(`bad entry ${name}`)
    const copy = file.slice(base + b, base + e)
    const data = new Float32Array(count)
    const dv = new DataView(copy.buffer)
    for (let i = 0; i < count; i++) data[i] = dv.getFloat32(4 * i, true)
    tensors.set(name, { dtype: info.dtype, shape: info.shape, data })
    ranges.push([b, e])
    covered += e - b
  }
  ranges.sort((x, y) => x[0] - y[0])
  for (let i = 1; i < ranges.length; i++) if (ranges[i]![0] < ranges[i - 1]![1]) throw new Error('overlapping tensors')
  if (covered !== file.length - base) throw new Error('data buffer has bytes no tensor owns')
  return { meta: header['__metadata__'], tensors }
}

test('export: shards of every rank assemble into safetensors that an independent reader matches (unequal shards)', async t => {
  const config = GPT_PRESETS.tiny
  const layout = gptLayout(config)
  const flat = initGptParams(config, 7)
  const P = 5
  t.not(layout.length % P, 0, 'the test wants shards of unequal length')
  const shards = Array.from({ length: P }, (_, r) => {
    const s = shardRange(layout.length, P, r)
    return flat.slice(s.start, s.start + s.length)
  })
  t.not(shards[0]!.length, shards[P - 1]!.length)
  t.deepEqual(assembleFlat(shards, layout.length), flat)
  const dir = await mkdtemp(join(tmpdir(), 'zm-st-'))
  try {
    const path = join(dir, 'model.safetensors')
    await exportSafetensors(path, shards, layout, { format: 'pt', step: '42' })
    const read = readSafetensors(new Uint8Array(await readFile(path)))
    t.deepEqual(read.meta, { format: 'pt', step: '42' })
    t.is(read.tensors.size, layout.tensors.length)
    for (const info of layout.tensors) {
      const got = read.tensors.get(info.name)!
      t.deepEqual(got.shape, [...info.shape], info.name)
      t.deepEqual(got.data, flat.subarray(info.offset, info.offset + info.length), info.name)
    }
  } finally {
    await rm(dir, { recursive: true, force: true })
  }
})

test('export refuses shards of the wrong length', t => {
  const layout = gptLayout(GPT_PRESETS.tiny)
  const shards = [new Float32Array(10), new Float32Array(10)]
  t.throws(() => assembleFlat(shards, layout.length), { name: 'InvalidArgumentError' })
})
