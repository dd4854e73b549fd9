import { dirname } from 'node:path'
import { assembleFlat, checkCap, InvalidArgumentError } from '../core/index.ts'
import { writeFileDurable } from './disk.ts'

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

/** Largest safetensors JSON header we write (the format's readers refuse > 100 MB). */
export const MAX_SAFETENSORS_HEADER_BYTES = 100_000_000

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
  checkCap('safetensors header bytes', jb.length, MAX_SAFETENSORS_HEADER_BYTES)
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
