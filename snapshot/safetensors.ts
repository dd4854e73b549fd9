import { open, type FileHandle } from 'node:fs/promises'
import { dirname } from 'node:path'
import { bf16ToF32 } from '../codec/index.ts'
import { assembleFlat, checkCap, InvalidArgumentError, ZeromeshError, throwIfAborted } from '../core/index.ts'
import { writeFileDurable } from './disk.ts'
import { SAFETENSORS_LIMITS } from './limits.ts'

/**
 * Export: the full model from every rank's shard, as safetensors
 * (https://huggingface.co/docs/safetensors): u64 LE header length N, N bytes of JSON
 * `{ name: { dtype, shape, data_offsets: [begin, end] }, "__metadata__": { ... } }` (padded with
 * spaces so the data starts 8-byte aligned), then the tensors' bytes, little-endian, back to
 * back in layout order.
 *
 * The ranks' shards follow core's shard layout (`shardRange`: balanced, no padding) and
 * are joined with its {@link assembleFlat}.
 */
export interface TensorLayout {
  tensors: ReadonlyArray<{ name: string; offset: number; shape: readonly number[] }>
  /** Elements of the flat buffer. */
  length: number
}

function checkLayout(layout: TensorLayout): void {
  const seen = new Set<string>()
  for (const t of layout.tensors) {
    const n = t.shape.reduce((a, b) => a * b, 1)
    if (seen.has(t.name) || t.name === '__metadata__') throw new InvalidArgumentError(`tensor name '${t.name}' is repeated or reserved`)
    seen.add(t.name)
    if (t.offset < 0 || t.offset + n > layout.length)
      throw new InvalidArgumentError(`tensor '${t.name}' [${t.offset}, ${t.offset + n}) is outside the ${layout.length}-element buffer`)
  }
}

/** Largest safetensors JSON header we write or read ({@link SAFETENSORS_LIMITS}). */
export const MAX_SAFETENSORS_HEADER_BYTES = SAFETENSORS_LIMITS.maxHeaderBytes

/**
 * Encodes the named tensors of `flat` as safetensors parts (header, then one view per tensor,
 * so nothing is copied twice). Values are f32, written little-endian (the byte order of every
 * platform Node runs on is checked).
 */
export function encodeSafetensors(flat: Float32Array, layout: TensorLayout, metadata: Record<string, string> = {}): Uint8Array[] {
  if (flat.length !== layout.length) throw new InvalidArgumentError(`flat buffer has ${flat.length} elements, layout ${layout.length}`)
  if (new Uint8Array(new Uint16Array([1]).buffer)[0] !== 1) throw new InvalidArgumentError('big-endian hosts are not supported by the safetensors writer')
  checkLayout(layout)
  const header: Record<string, unknown> = {}
  if (Object.keys(metadata).length > 0) header['__metadata__'] = metadata
  let at = 0
  const parts: Uint8Array[] = []
  for (const t of layout.tensors) {
    const n = t.shape.reduce((a, b) => a * b, 1)
    header[t.name] = { dtype: 'F32', shape: [...t.shape], data_offsets: [at, at + 4 * n] }
    const v = flat.subarray(t.offset, t.offset + n)
    parts.push(new Uint8Array(v.buffer, v.byteOffset, v.byteLength))
    at += 4 * n
  }
  let json = JSON.stringify(header)
  json += ' '.repeat((8 - ((8 + Buffer.byteLength(json)) % 8)) % 8)
  const jb = new TextEncoder().encode(json)
  checkCap('safetensors header bytes', jb.length, SAFETENSORS_LIMITS.maxHeaderBytes)
  const head = new Uint8Array(8 + jb.length)
  new DataView(head.buffer).setBigUint64(0, BigInt(jb.length), true)
  head.set(jb, 8)
  return [head, ...parts]
}

/**
 * Assembles the full model from every rank's weight shard (rank order) and writes it to
 * `path` as safetensors, atomically. What `zeromesh export` calls.
 */
export async function exportSafetensors(
  path: string,
  shards: readonly Float32Array[],
  layout: TensorLayout,
  metadata: Record<string, string> = {}
): Promise<void> {
  const flat = assembleFlat(shards, layout.length)
  await writeFileDurable(path, encodeSafetensors(flat, layout, metadata), dirname(path))
}

/** A safetensors file that cannot be read as one: the message names the file and what is wrong. */
export class SafetensorsError extends ZeromeshError {
  static override name = 'SafetensorsError'
}

/** One tensor a safetensors header declares; `begin`/`end` are byte offsets into the data after the header. */
export interface SafetensorsTensor {
  name: string
  dtype: string
  shape: number[]
  begin: number
  end: number
}

/** An open safetensors file: its header, checked, and the tensors read on demand as f32. */
export interface SafetensorsReader {
  readonly path: string
  readonly metadata: Readonly<Record<string, string>>
  /** Every tensor the header declares, by name (whatever its dtype). */
  readonly tensors: ReadonlyMap<string, SafetensorsTensor>
  /** The values of an F32, F16 or BF16 tensor as f32 (F16 and BF16 widen exactly). */
  readF32(name: string, opts?: { signal?: AbortSignal }): Promise<Float32Array>
  close(): Promise<void>
}

/** Bytes per element of the dtypes the format defines (others are listed but never read). */
const DTYPE_BYTES: Readonly<Record<string, number>> = Object.freeze({
  F64: 8,
  F32: 4,
  F16: 2,
  BF16: 2,
  I64: 8,
  U64: 8,
  I32: 4,
  U32: 4,
  I16: 2,
  U16: 2,
  I8: 1,
  U8: 1,
  BOOL: 1,
  F8_E4M3: 1,
  F8_E5M2: 1
})

/**
 * Opens a safetensors file and checks its header before anything else is read: the header
 * length against {@link SAFETENSORS_LIMITS} and the file (before the header is allocated), the
 * JSON, the tensor count and dimensions, each tensor's byte range against its dtype and shape
 * and the data section, and that no two ranges overlap. A malformed file is a
 * {@link SafetensorsError} and a file past a cap a LimitExceededError, both naming the file.
 */
export async function openSafetensors(path: string, opts: { signal?: AbortSignal } = {}): Promise<SafetensorsReader> {
  throwIfAborted(opts.signal)
  if (new Uint8Array(new Uint16Array([1]).buffer)[0] !== 1) throw new InvalidArgumentError('big-endian hosts are not supported by the safetensors reader')
  let fh: FileHandle
  try {
    fh = await open(path, 'r')
  } catch (err) {
    throw new SafetensorsError(`cannot read ${path}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`, { path }, { cause: err })
  }
  try {
    const header = await readHeader(fh, path)
    let closed = false
    return {
      path,
      metadata: header.metadata,
      tensors: header.tensors,
      async readF32(name, o = {}) {
        if (closed) throw new InvalidArgumentError(`${path} is closed`)
        const t = header.tensors.get(name)
        if (t === undefined) throw new SafetensorsError(`${path} has no tensor ${name}`, { path })
        throwIfAborted(o.signal)
        return readTensor(fh, path, header.dataStart, t)
      },
      async close() {
        if (closed) return
        closed = true
        await fh.close()
      }
    }
  } catch (err) {
    await fh.close()
    throw err
  }
}

async function readHeader(
  fh: FileHandle,
  path: string
): Promise<{ metadata: Record<string, string>; tensors: Map<string, SafetensorsTensor>; dataStart: number }> {
  const bad = (why: string): SafetensorsError => new SafetensorsError(`${path} is not a valid safetensors file: ${why}`, { path })
  const size = (await fh.stat()).size
  if (size < 8) throw bad(`${size} bytes, shorter than the 8-byte header length`)
  const n = Number((await readExactly(fh, 8, 0, path)).readBigUInt64LE(0))
  checkCap(`${path}: safetensors header bytes`, n, SAFETENSORS_LIMITS.maxHeaderBytes)
  if (8 + n > size) throw bad(`the header length ${n} runs past the end of the ${size}-byte file`)
  let json: unknown
  try {
    json = JSON.parse((await readExactly(fh, n, 8, path)).toString('utf8'))
  } catch (err) {
    throw bad(`the header is not JSON (${(err as Error).message})`)
  }
  if (typeof json !== 'object' || json === null || Array.isArray(json)) throw bad('the header is not a JSON object')
  const entries = Object.entries(json as Record<string, unknown>)
  checkCap(`${path}: safetensors tensors`, entries.length - (Object.hasOwn(json, '__metadata__') ? 1 : 0), SAFETENSORS_LIMITS.maxTensors)
  const dataStart = 8 + n
  const dataBytes = size - dataStart
  const metadata: Record<string, string> = {}
  const tensors = new Map<string, SafetensorsTensor>()
  for (const [name, info] of entries) {
    if (name === '__metadata__') {
      if (typeof info !== 'object' || info === null || Array.isArray(info)) throw bad('__metadata__ is not an object')
      for (const [k, v] of Object.entries(info)) {
        if (typeof v !== 'string') throw bad(`__metadata__.${k} is not a string`)
        metadata[k] = v
      }
      continue
    }
    tensors.set(name, parseEntry(name, info, dataBytes, bad))
  }
  const ranges = [...tensors.values()].filter(t => t.end > t.begin).sort((a, b) => a.begin - b.begin)
  for (let i = 1; i < ranges.length; i++) {
    if (ranges[i]!.begin < ranges[i - 1]!.end) throw bad(`tensors ${ranges[i - 1]!.name} and ${ranges[i]!.name} overlap`)
  }
  return { metadata, tensors, dataStart }
}

function parseEntry(name: string, info: unknown, dataBytes: number, bad: (why: string) => SafetensorsError): SafetensorsTensor {
  if (typeof info !== 'object' || info === null) throw bad(`the entry of ${name} is not an object`)
  const { dtype, shape, data_offsets: off } = info as { dtype?: unknown; shape?: unknown; data_offsets?: unknown }
  if (typeof dtype !== 'string') throw bad(`${name} has no dtype`)
  if (!Array.isArray(shape) || shape.length > SAFETENSORS_LIMITS.maxDims || !shape.every(d => Number.isSafeInteger(d) && d >= 0))
    throw bad(`${name}: shape ${JSON.stringify(shape)} is not a list of at most ${SAFETENSORS_LIMITS.maxDims} non-negative integers`)
  if (!Array.isArray(off) || off.length !== 2 || !off.every(x => Number.isSafeInteger(x) && x >= 0) || off[0] > off[1] || off[1] > dataBytes)
    throw bad(`${name}: data_offsets ${JSON.stringify(off)} are not a range inside the ${dataBytes}-byte data section`)
  const elements = (shape as number[]).reduce((a, b) => a * b, 1)
  const width = DTYPE_BYTES[dtype]
  if (width !== undefined && off[1] - off[0] !== elements * width)
    throw bad(`${name}: ${off[1] - off[0]} bytes, but ${dtype} [${(shape as number[]).join(', ')}] needs ${elements * width}`)
  return { name, dtype, shape: shape as number[], begin: off[0] as number, end: off[1] as number }
}

async function readTensor(fh: FileHandle, path: string, dataStart: number, t: SafetensorsTensor): Promise<Float32Array> {
  if (t.dtype !== 'F32' && t.dtype !== 'F16' && t.dtype !== 'BF16')
    throw new SafetensorsError(`${path}: tensor ${t.name} is ${t.dtype}; only F32, F16 and BF16 are read`, { path })
  const n = t.shape.reduce((a, b) => a * b, 1)
  checkCap(`${path}: elements of tensor ${t.name}`, n, SAFETENSORS_LIMITS.maxTensorElements)
  const bytes = new Uint8Array(new ArrayBuffer(t.end - t.begin))
  await readInto(fh, bytes, dataStart + t.begin, path)
  if (t.dtype === 'F32') return new Float32Array(bytes.buffer, 0, n)
  const half = new Uint16Array(bytes.buffer, 0, n)
  const out = new Float32Array(n)
  if (t.dtype === 'BF16') for (let i = 0; i < n; i++) out[i] = bf16ToF32(half[i]!)
  else for (let i = 0; i < n; i++) out[i] = f16ToF32(half[i]!)
  return out
}

/** IEEE 754 binary16 to a number (exact: every f16 value is an f32 value). */
export function f16ToF32(h: number): number {
  const sign = h & 0x8000 ? -1 : 1
  const exp = (h >>> 10) & 0x1f
  const frac = h & 0x3ff
  if (exp === 0) return sign * frac * 2 ** -24
  if (exp === 31) return frac === 0 ? sign * Infinity : NaN
  return sign * (1 + frac / 1024) * 2 ** (exp - 15)
}

async function readExactly(fh: FileHandle, n: number, position: number, path: string): Promise<Buffer> {
  const buf = Buffer.alloc(n)
  await readInto(fh, buf, position, path)
  return buf
}

async function readInto(fh: FileHandle, dst: Uint8Array, position: number, path: string): Promise<void> {
  let at = 0
  while (at < dst.length) {
    const { bytesRead } = await fh.read(dst, at, dst.length - at, position + at)
    if (bytesRead === 0) throw new SafetensorsError(`${path} ended while reading ${dst.length} bytes at ${position} (it changed while being read?)`, { path })
    at += bytesRead
  }
}
