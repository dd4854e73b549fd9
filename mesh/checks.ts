import { InvalidArgumentError, checkCap } from '../core/index.ts'
import { MESH_LIMITS } from './limits.ts'

/** Validates a topic or protocol name (non-empty, bounded, printable ASCII). */
export function checkName(kind: string, name: string): void {
  if (typeof name !== 'string' || name.length === 0 || name.length > MESH_LIMITS.maxNameBytes || !/^[\x21-\x7e]+$/.test(name)) {
    throw new InvalidArgumentError(`${kind} name must be 1-${MESH_LIMITS.maxNameBytes} printable ASCII characters, got ${JSON.stringify(name)?.slice(0, 80)}`)
  }
}

/** Caps a gossip payload. */
export function checkGossipSize(data: Uint8Array): void {
  checkCap('gossip message bytes', data.length, MESH_LIMITS.maxGossipBytes)
}

/** Caps one stream write. */
export function checkChunkSize(chunk: Uint8Array): void {
  checkWriteBytes(chunk.length)
}

/** Caps one stream write of `bytes` (a gathered write's parts together). */
export function checkWriteBytes(bytes: number): void {
  checkCap('stream write bytes', bytes, MESH_LIMITS.maxStreamChunkBytes)
}

/** Sets a key in a map about strangers, evicting the oldest entry beyond `cap` (maxTrackedPeers). */
export function remember<V>(map: Map<string, V>, key: string, value: V, cap: number = MESH_LIMITS.maxTrackedPeers): void {
  map.delete(key)
  map.set(key, value)
  if (map.size > cap) map.delete(map.keys().next().value!)
}
