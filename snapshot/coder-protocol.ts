import type { AssembleReport, SnapshotFragment } from './fragment.ts'

/**
 * The messages between the thread coder (coder-threads.ts) and its threads (coder-worker.ts).
 * State bytes travel as views of a SharedArrayBuffer (read, and for `seal` written, in place);
 * results travel as transferred ArrayBuffers. Nothing is copied by the message channel.
 */
export type CoderRequest =
  | { id: number; op: 'seal'; state: Uint8Array }
  | { id: number; op: 'segment'; state: Uint8Array; offset: number; size: number; k: number; m: number }
  | { id: number; op: 'assemble'; frags: SnapshotFragment[]; k: number; m: number }

/** An error crossing the thread boundary as data; the caller rebuilds the typed error. */
export type WireError =
  | { kind: 'too-few'; k: number; m: number; present: number[]; missing: number[]; corrupt: number[] }
  | { kind: 'protocol'; code: string; message: string; details: Record<string, unknown>; action: 'ignore' | 'reject' }
  | { kind: 'other'; name: string; message: string }

export type CoderReply =
  | { id: number; ok: true; op: 'seal'; checksum: bigint }
  | { id: number; ok: true; op: 'segment'; frames: Uint8Array[] }
  | { id: number; ok: true; op: 'assemble'; state: Uint8Array; report: AssembleReport }
  | { id: number; ok: false; error: WireError }
