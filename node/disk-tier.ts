import { readdir, unlink } from 'node:fs/promises'
import { mkdirSync } from 'node:fs'
import { join } from 'node:path'
import { persistState, loadState, type RankState } from '../snapshot/index.ts'

/**
 * The trainer's disk tier: every `every` committed steps a rank writes its own state (the
 * sealed snapshot bytes: master shard, AdamW moments, step, rank, world size; checksummed) to
 * `<data dir>/train/step-<step>.zms` with write-temp, fsync, rename. The newest
 * {@link DISK_KEEP} files stay, so a crash while writing the newest leaves the one before.
 * It is the way back when more ranks are lost at once than the erasure code tolerates, or
 * the whole mesh goes down: `zeromesh start --train --resume` and `zeromesh export` read it.
 */
export const DISK_DIR = 'train'
export const DISK_KEEP = 2

const NAME = /^step-(\d{8})\.zms$/

export const diskDir = (dataDir: string): string => join(dataDir, DISK_DIR)
const fileName = (step: number): string => `step-${String(step).padStart(8, '0')}.zms`

/** Steps with a state file in `dir`, newest first (names only; contents are checked on load). */
export async function diskSteps(dir: string): Promise<number[]> {
  let names: string[]
  try {
    names = await readdir(dir)
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return []
    throw err
  }
  return names
    .map(n => NAME.exec(n)?.[1])
    .filter(x => x !== undefined)
    .map(Number)
    .sort((a, b) => b - a)
}

/** Persists a sealed state durably and prunes all but the newest DISK_KEEP files. */
export async function persistDiskState(dir: string, step: number, sealed: Uint8Array): Promise<string> {
  mkdirSync(dir, { recursive: true, mode: 0o700 })
  const path = await persistState(dir, sealed, { name: fileName(step) })
  for (const old of (await diskSteps(dir)).slice(DISK_KEEP)) await unlink(join(dir, fileName(old))).catch(() => {})
  return path
}

/**
 * Loads and verifies the state of `step` (checksum, header, lengths; a damaged file is a typed
 * error, never a partial state). Undefined when there is no such file.
 */
export async function loadDiskState(dir: string, step: number): Promise<RankState | undefined> {
  return (await loadState(dir, { name: fileName(step) }))?.state
}

/** The path of the disk tier file of `step` in `dir`. */
export function diskFile(dir: string, step: number): string {
  return join(dir, fileName(step))
}

/**
 * Whether a state belongs to the run `identity` names. A state written before run identities
 * existed (none in it) is taken: nothing says it is foreign.
 */
export function sameRun(st: Pick<RankState, 'identity'>, identity: Uint8Array | undefined): boolean {
  if (identity === undefined || st.identity === undefined) return true
  return Buffer.from(st.identity).equals(Buffer.from(identity))
}
