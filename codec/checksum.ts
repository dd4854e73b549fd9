import { xxh64 } from '@node-rs/xxhash'

/**
 * Integrity checksum for frames, fragments and snapshots: xxHash64 (seed 0) from the native
 * `@node-rs/xxhash` addon. Chosen by measurement (bench/codec.ts, docs/PERFORMANCE.md): about
 * 9-10 GB/s on 1-4 MiB buffers here, versus ~3.4 GB/s for SSE4.2 crc32c and ~1.5 GB/s for
 * SHA-256. It detects accidental corruption; it is not a MAC (authentication is the
 * transport's job).
 */
export function checksum64(bytes: Uint8Array): bigint {
  return xxh64(bytes)
}

/** Writes a 64-bit checksum little-endian at `offset`. */
export function writeChecksum(view: DataView, offset: number, sum: bigint): void {
  view.setBigUint64(offset, sum, true)
}

/** Reads a 64-bit little-endian checksum at `offset`. */
export function readChecksum(view: DataView, offset: number): bigint {
  return view.getBigUint64(offset, true)
}
