import { z } from 'zod'
import { createEnvelopeCodec, zBytes } from '../codec/index.ts'
import { snapshotError, SnapshotErrorCode } from './errors.ts'
import { SNAPSHOT_LIMITS } from './limits.ts'

/**
 * A manifest: one complete stripe, gossiped by its owner once all k + m holders acknowledged
 * their fragments. Recovery and swarm transfer read holders and fragment digests from it;
 * holders use it to learn that a version is complete (and, across all ranks of the view, the
 * recovery point). Only the owner may publish its manifests.
 */
export interface Manifest {
  owner: string
  rank: number
  epoch: number
  version: number
  k: number
  m: number
  stateBytes: number
  stateChecksum: bigint
  /** Holder of fragment i. */
  holders: string[]
  /** Digest (fragment.ts fragmentDigest) of fragment i. */
  digests: bigint[]
}

export const MANIFEST_TOPIC = 'snapshot/manifest'

const u64 = z.number().int().min(0).max(Number.MAX_SAFE_INTEGER)
const peer = z.string().min(1).max(SNAPSHOT_LIMITS.maxPeerIdBytes)

const codec = createEnvelopeCodec({
  manifest: z.strictObject({
    owner: peer,
    rank: z.number().int().min(0).max(0xffffffff),
    epoch: u64,
    version: u64,
    k: z.number().int().min(1).max(254),
    m: z.number().int().min(1).max(254),
    stateBytes: z.number().int().min(1).max(SNAPSHOT_LIMITS.maxStateBytes),
    stateChecksum: zBytes(8),
    holders: z.array(peer).max(255),
    digests: z.array(zBytes(8)).max(255)
  })
})

const toBytes = (x: bigint): Uint8Array => {
  const b = new Uint8Array(8)
  new DataView(b.buffer).setBigUint64(0, x, true)
  return b
}
const fromBytes = (b: Uint8Array): bigint => new DataView(b.buffer, b.byteOffset, b.length).getBigUint64(0, true)

export function encodeManifest(m: Manifest): Uint8Array {
  return codec.encode('manifest', { ...m, stateChecksum: toBytes(m.stateChecksum), digests: m.digests.map(toBytes) })
}

/**
 * Decodes a manifest (envelope checks: size cap, structure, strict schema) and its cross-field
 * rules: k + m <= 255, one holder and one 8-byte digest per fragment, distinct holders, owner
 * not among them. Throws a ProtocolError.
 */
export function decodeManifest(bytes: Uint8Array): Manifest {
  const { payload: p } = codec.decode(bytes)
  const bad = (why: string): never => {
    throw snapshotError(SnapshotErrorCode.REQUEST_MALFORMED, `bad manifest: ${why}`)
  }
  if (p.k + p.m > 255) bad(`k + m = ${p.k + p.m} is over 255`)
  if (p.holders.length !== p.k + p.m || p.digests.length !== p.k + p.m)
    bad(`${p.holders.length} holders and ${p.digests.length} digests for ${p.k + p.m} fragments`)
  if (new Set(p.holders).size !== p.holders.length || p.holders.includes(p.owner)) bad('holders must be distinct and exclude the owner')
  if (p.stateChecksum.length !== 8 || p.digests.some(d => d.length !== 8)) bad('checksums must be 8 bytes')
  return { ...p, stateChecksum: fromBytes(p.stateChecksum), digests: p.digests.map(fromBytes) }
}
