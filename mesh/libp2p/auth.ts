import { createCipheriv, createDecipheriv, createHmac, hkdfSync, randomBytes, timingSafeEqual } from 'node:crypto'
import { z } from 'zod'
import { InvalidArgumentError } from '../../core/index.ts'
import { createEnvelopeCodec, zBytes } from '../../codec/index.ts'
import { AuthenticationError } from '../errors.ts'
import { MessageReader, u32le, writeMessage } from '../lp.ts'
import type { ByteStream, PeerId, PeerLabels } from '../peernet.ts'
import { describe } from './errors.ts'
import { isIpLiteral } from './reach.ts'

/**
 * Run isolation. The connection's encryption (TLS or noise) already proves each side's peer
 * id; on top of it both sides prove that they know the run secret with a challenge-response
 * bound to both peer ids, both fresh nonces, the run id and the role (so a proof cannot be
 * reflected or replayed):
 *
 *   dialer   -> listener : hello  { nonceD, labels, bulkPort?, bulkHost?, seen? }
 *   listener -> dialer   : proof  { nonceL, labels, HMAC(k, "listener" | run | idL | idD | nonceD | nonceL), bulkPort?, bulkHost?, seen? }
 *   dialer   -> listener : proof  { HMAC(k, "dialer" | run | idD | idL | nonceD | nonceL) }
 *   listener -> dialer   : ok
 *
 * k = HKDF-SHA256(secret, salt = run id, info = "zeromesh auth v1"). Gossip carries a second
 * key from the same secret (info "zeromesh gossip v1") to tag every message.
 *
 * Each message is a length-prefixed (lp.ts) envelope of at most AUTH_MAX_MESSAGE bytes on the
 * stream AUTH_PROTOCOL. bulkPort and bulkHost are where the sender's bulk channel (../bulk.ts)
 * listens; the two nonces also key that channel. `seen` is the IP the sender sees the other end
 * at on this connection (absent on a relayed one): the dialer says which address it dialled,
 * the listener where the connection came from, so each side learns whether a NAT stands
 * between them (reach.ts). The handshake runs on any ByteStream; the caller bounds
 * its time with the signal it passes.
 */
/** Bytes of each side's fresh nonce. */
export const AUTH_NONCE_BYTES = 32
/** The shortest run secret accepted. */
export const MIN_SECRET_BYTES = 16

/** The two keys a run secret yields: one for handshake proofs, one for gossip tags. */
export interface RunKeys {
  auth: Uint8Array
  gossip: Uint8Array
}

/** Derives the run's keys; refuses secrets shorter than 16 bytes. */
export function deriveRunKeys(runId: string, secret: Uint8Array): RunKeys {
  if (secret.length < MIN_SECRET_BYTES) throw new InvalidArgumentError(`the run secret must be at least ${MIN_SECRET_BYTES} bytes, got ${secret.length}`)
  const salt = new TextEncoder().encode(runId)
  return {
    auth: new Uint8Array(hkdfSync('sha256', secret, salt, 'zeromesh auth v1', 32)),
    gossip: new Uint8Array(hkdfSync('sha256', secret, salt, 'zeromesh gossip v1', 32))
  }
}

/** The proof one side sends: role, run, own id, other id and both nonces, in a fixed order. */
export function authProof(
  key: Uint8Array,
  role: 'dialer' | 'listener',
  runId: string,
  self: string,
  other: string,
  nonceD: Uint8Array,
  nonceL: Uint8Array
): Uint8Array {
  const h = createHmac('sha256', key)
  for (const part of [role, runId, self, other]) {
    const b = Buffer.from(part)
    h.update(u32le(b.length)).update(b)
  }
  h.update(nonceD).update(nonceL)
  return new Uint8Array(h.digest())
}

/** Constant-time comparison of two proofs. */
export function proofsEqual(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && timingSafeEqual(a, b)
}

/** Bytes a sealed gossip message adds to its data: a 12-byte nonce and a 16-byte GCM tag. */
export const GOSSIP_SEAL_BYTES = 28

/** The publisher and topic a sealed gossip message is bound to (GCM's additional data). */
function gossipAad(from: string, topic: string): Buffer {
  const parts = [from, topic].map(p => Buffer.from(p))
  return Buffer.concat(parts.flatMap(b => [Buffer.from(u32le(b.length)), b]))
}

/**
 * Seals a gossip message: AES-256-GCM under the run's gossip key, a random nonce, the publisher
 * and the topic as additional data. Only members (who hold the secret) can read it, and
 * {@link openGossip} fails for a message altered, forged, or replayed under another publisher
 * or topic. Layout: nonce (12) | ciphertext | tag (16).
 */
export function sealGossip(key: Uint8Array, from: string, topic: string, data: Uint8Array): Uint8Array {
  const nonce = randomBytes(12)
  const c = createCipheriv('aes-256-gcm', key, nonce)
  c.setAAD(gossipAad(from, topic))
  const body = Buffer.concat([c.update(data), c.final()])
  const out = new Uint8Array(GOSSIP_SEAL_BYTES + data.length)
  out.set(nonce)
  out.set(body, 12)
  out.set(c.getAuthTag(), 12 + body.length)
  return out
}

/** Opens a message {@link sealGossip} made; undefined when it is not the run's, or was altered. */
export function openGossip(key: Uint8Array, from: string, topic: string, sealed: Uint8Array): Uint8Array | undefined {
  if (sealed.length < GOSSIP_SEAL_BYTES) return undefined
  try {
    const d = createDecipheriv('aes-256-gcm', key, sealed.subarray(0, 12))
    d.setAAD(gossipAad(from, topic))
    d.setAuthTag(sealed.subarray(sealed.length - 16))
    return new Uint8Array(Buffer.concat([d.update(sealed.subarray(12, sealed.length - 16)), d.final()]))
  } catch {
    return undefined
  }
}

/** The gossipsub topic name of a run's topic: a keyed hash, so the run id and topic names are not on the wire. */
export function gossipTopicName(key: Uint8Array, topic: string): string {
  return `/zeromesh/${createHmac('sha256', key).update(`topic\n${topic}`).digest('hex').slice(0, 32)}`
}

/** The stream protocol the handshake runs on, right after a connection opens. */
export const AUTH_PROTOCOL = '/zeromesh/auth/1.0.0'
/** Cap on one handshake message. */
const AUTH_MAX_MESSAGE = 1024

/** Placement labels as a peer states them (in its handshake, and in a PeerNet's init). */
export const labelsSchema = z.strictObject({ zone: z.string().min(1).max(64), host: z.string().min(1).max(253), trains: z.boolean().optional() })
const zIp = z.string().max(45).refine(isIpLiteral, 'not an IP address')
const authCodec = createEnvelopeCodec(
  {
    hello: z.strictObject({
      nonce: zBytes(AUTH_NONCE_BYTES),
      labels: labelsSchema,
      bulkPort: z.int().min(1).max(65535).optional(),
      bulkHost: zIp.optional(),
      seen: zIp.optional()
    }),
    proof: z.strictObject({
      nonce: zBytes(AUTH_NONCE_BYTES).optional(),
      labels: labelsSchema.optional(),
      proof: zBytes(64),
      bulkPort: z.int().min(1).max(65535).optional(),
      bulkHost: zIp.optional(),
      seen: zIp.optional()
    }),
    ok: z.strictObject({})
  },
  { maxBytes: AUTH_MAX_MESSAGE }
)

/** One side's part in a handshake on `stream`, whose `remote` is the other side's id. */
export interface HandshakeInit {
  /** The run's auth key (deriveRunKeys). */
  authKey: Uint8Array
  runId: string
  self: PeerId
  labels: PeerLabels
  /** Our bulk channel's port, offered to the peer; absent without one. */
  bulkPort: number | undefined
  /** The IP our bulk channel listens on (absent: the one the connection reached). */
  bulkHost?: string | undefined
  /** The IP we see the peer at on this connection (absent on a relayed one). */
  seen?: string | undefined
}

/** What a completed handshake tells about the peer. */
export interface HandshakeResult {
  labels: PeerLabels
  /** The peer's bulk channel port, if it offered one. */
  bulkPort: number | undefined
  /** The IP the peer's bulk channel listens on, if it said. */
  bulkHost: string | undefined
  /** The IP the peer sees us at on this connection, if it said. */
  seen: string | undefined
  nonceD: Uint8Array
  nonceL: Uint8Array
}

/**
 * The dialer's side. Resolves once the listener accepted our proof; throws
 * AuthenticationError (or the stream's error) otherwise, having aborted the stream.
 */
export async function authenticateAsDialer(s: ByteStream, init: HandshakeInit, signal: AbortSignal): Promise<HandshakeResult> {
  const reader = new MessageReader(s, AUTH_MAX_MESSAGE)
  try {
    // Nonces come from the OS CSPRNG on purpose: a seeded Rng would make them predictable.
    const nonceD = new Uint8Array(randomBytes(AUTH_NONCE_BYTES))
    await writeMessage(s, authCodec.encode('hello', { nonce: nonceD, labels: init.labels, ...bulkPortField(init) }), { signal })
    const reply = authCodec.decode(await required(reader.next(), signal))
    if (reply.type !== 'proof' || reply.payload.nonce?.length !== AUTH_NONCE_BYTES || reply.payload.labels === undefined)
      throw new AuthenticationError('malformed proof')
    const nonceL = reply.payload.nonce
    const expect = authProof(init.authKey, 'listener', init.runId, s.remote, init.self, nonceD, nonceL)
    if (!proofsEqual(expect, reply.payload.proof)) throw new AuthenticationError('the listener does not know the run secret')
    await writeMessage(s, authCodec.encode('proof', { proof: authProof(init.authKey, 'dialer', init.runId, init.self, s.remote, nonceD, nonceL) }), { signal })
    const ok = authCodec.decode(await required(reader.next(), signal))
    if (ok.type !== 'ok') throw new AuthenticationError('the listener did not accept our proof')
    await s.end()
    const p = reply.payload
    return { labels: p.labels!, bulkPort: p.bulkPort, bulkHost: p.bulkHost, seen: p.seen, nonceD, nonceL }
  } catch (err) {
    s.abort()
    throw err
  }
}

/**
 * The listener's side. Resolves once the dialer proved itself and we answered ok; otherwise
 * aborts the stream and throws AuthenticationError saying how far the handshake got.
 */
export async function authenticateAsListener(s: ByteStream, init: HandshakeInit, signal: AbortSignal): Promise<HandshakeResult> {
  const reader = new MessageReader(s, AUTH_MAX_MESSAGE)
  let stage = 'waiting for its hello'
  try {
    const hello = authCodec.decode(await required(reader.next(), signal))
    if (hello.type !== 'hello' || hello.payload.nonce.length !== AUTH_NONCE_BYTES) throw new AuthenticationError('malformed hello')
    const nonceD = hello.payload.nonce
    const nonceL = new Uint8Array(randomBytes(AUTH_NONCE_BYTES))
    const proof = authProof(init.authKey, 'listener', init.runId, init.self, s.remote, nonceD, nonceL)
    await writeMessage(s, authCodec.encode('proof', { nonce: nonceL, labels: init.labels, proof, ...bulkPortField(init) }), { signal })
    // A dialer without the secret finds our proof invalid and hangs up here.
    stage = 'after our proof: it does not share the run secret, or it hung up'
    const reply = authCodec.decode(await required(reader.next(), signal))
    if (reply.type !== 'proof') throw new AuthenticationError('malformed proof')
    const expect = authProof(init.authKey, 'dialer', init.runId, s.remote, init.self, nonceD, nonceL)
    if (!proofsEqual(expect, reply.payload.proof)) throw new AuthenticationError('the dialer does not know the run secret')
    await writeMessage(s, authCodec.encode('ok', {}), { signal })
    await s.end()
    const p = hello.payload
    return { labels: p.labels, bulkPort: p.bulkPort, bulkHost: p.bulkHost, seen: p.seen, nonceD, nonceL }
  } catch (err) {
    s.abort()
    throw err instanceof AuthenticationError ? err : new AuthenticationError(`handshake failed ${stage} (${describe(err)})`)
  }
}

/** The optional fields as the envelope carries them: absent, never undefined. */
function bulkPortField(init: HandshakeInit): { bulkPort?: number; bulkHost?: string; seen?: string } {
  return {
    ...(init.bulkPort === undefined ? {} : { bulkPort: init.bulkPort }),
    ...(init.bulkHost === undefined ? {} : { bulkHost: init.bulkHost }),
    ...(init.seen === undefined ? {} : { seen: init.seen })
  }
}

/** The next handshake message; AuthenticationError on a clean end or when `signal` fires. */
async function required(p: Promise<Uint8Array | undefined>, signal: AbortSignal): Promise<Uint8Array> {
  const msg = await Promise.race([
    p,
    new Promise<never>((_, reject) => {
      if (signal.aborted) reject(new AuthenticationError('authentication timed out'))
      signal.addEventListener('abort', () => reject(new AuthenticationError('authentication timed out')), { once: true })
    })
  ])
  if (msg === undefined) throw new AuthenticationError('the peer closed the handshake')
  return msg
}
