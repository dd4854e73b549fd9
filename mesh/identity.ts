import { mkdirSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import { generateKeyPair, privateKeyFromProtobuf, privateKeyToProtobuf } from '@libp2p/crypto/keys'
import type { PrivateKey } from '@libp2p/interface'
import { writeFileDurableSync, ZeromeshError } from '../core/index.ts'

/** The node's identity key file could not be read or written. */
export class IdentityError extends ZeromeshError {
  static override name = 'IdentityError'
}

export const IDENTITY_FILE = 'identity.key'

/**
 * Loads the node's Ed25519 identity from `<dataDir>/identity.key`, creating it (mode 0600,
 * written durably: core/files.ts writeFileDurableSync) on first start. The key never comes from config,
 * so copying a config file to another machine does not clone a peer id.
 */
export async function loadOrCreateIdentity(dataDir: string): Promise<PrivateKey> {
  const file = join(dataDir, IDENTITY_FILE)
  let bytes: Uint8Array | undefined
  try {
    bytes = readFileSync(file)
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw new IdentityError(`cannot read ${file}: ${(err as Error).message}`)
  }
  if (bytes !== undefined) {
    try {
      return privateKeyFromProtobuf(bytes)
    } catch (err) {
      throw new IdentityError(`${file} is not a libp2p private key (${(err as Error).message}); move it away to create a new identity`)
    }
  }
  const key = await generateKeyPair('Ed25519')
  try {
    mkdirSync(dataDir, { recursive: true, mode: 0o700 })
    writeFileDurableSync(file, privateKeyToProtobuf(key))
  } catch (err) {
    throw new IdentityError(`cannot write ${file}: ${(err as Error).message}`)
  }
  return key
}
