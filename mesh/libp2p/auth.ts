import { createHmac, hkdfSync, timingSafeEqual } from 'node:crypto'
import { InvalidArgumentError } from '../../core/index.ts'

/**
 * Run isolation. Noise already proves each side's peer id; on top of it both sides prove that
 * they know the run secret with a challenge-response bound to both peer ids, both fresh
 * nonces, the run id and the role (so a proof cannot be reflected or replayed):
 *
 *   dialer   -> listener : hello  { nonceD, labels }
 *   listener -> dialer   : proof  { nonceL, labels, HMAC(k, "listener" | run | idL | idD | nonceD | nonceL) }
 *   dialer   -> listener : proof  { HMAC(k, "dialer" | run | idD | idL | nonceD | nonceL) }
 *   listener -> dialer   : ok
 *
 * k = HKDF-SHA256(secret, salt = run id, info = "zeromesh auth v1"). Gossip carries a second
 * key from the same secret (info "zeromesh gossip v1") to tag every message.
 */
export const AUTH_NONCE_BYTES = 32
export const MIN_SECRET_BYTES = 16

export interface RunKeys {
  auth: Uint8Array
  gossip: Uint8Array
}

/** Derives the run's keys; refuses secrets shorter than 16 bytes. */
export function deriveRunKeys (runId: string, secret: Uint8Array): RunKeys {
  if (secret.length < MIN_SECRET_BYTES) throw new InvalidArgumentError(`the run secret must be at least ${MIN_SECRET_BYTES} bytes, got ${secret.length}`)
  const salt = new TextEncoder().encode(runId)
  return {
    auth: new Uint8Array(hkdfSync('sha256', secret, salt, 'zeromesh auth v1', 32)),
    gossip: new Uint8Array(hkdfSync('sha256', secret, salt, 'zeromesh gossip v1', 32))
  }
}

/** The proof one side sends: role, run, own id, other id and both nonces, in a fixed order. */
export function authProof (key: Uint8Array, role: 'dialer' | 'listener', runId: string, self: string, other: string, nonceD: Uint8Array, nonceL: Uint8Array): Uint8Array {
  const h = createHmac('sha256', key)
  for (const part of [role, runId, self, other]) {
    const b = Buffer.from(part)
    h.update(lenPrefix(b.length)).update(b)
  }
  h.update(nonceD).update(nonceL)
  return new Uint8Array(h.digest())
}

/** Constant-time comparison of two proofs. */
export function proofsEqual (a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && timingSafeEqual(a, b)
}

/** Tag for a gossip message: binds the secret to the publisher, the topic and the bytes. */
export function gossipTag (key: Uint8Array, from: string, topic: string, data: Uint8Array): Uint8Array {
  const h = createHmac('sha256', key)
  for (const part of [from, topic]) {
    const b = Buffer.from(part)
    h.update(lenPrefix(b.length)).update(b)
  }
  return new Uint8Array(h.update(data).digest())
}

function lenPrefix (n: number): Uint8Array {
  const b = new Uint8Array(4)
  new DataView(b.buffer).setUint32(0, n, true)
  return b
}
