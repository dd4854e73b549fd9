import { spawn, type ChildProcess } from 'node:child_process'
import { writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { parseNodeEvent } from '../../node/events.ts'
import { waitFor } from '../helpers/wait.ts'

export const BIN = fileURLToPath(new URL('../../bin/zeromesh.js', import.meta.url))

export interface Proc {
  child: ChildProcess
  out: string[]
  exited: Promise<number | null>
}

/** Spawns `zeromesh <args>` on this Node; collects stdout lines. */
export function zeromesh(args: string[]): Proc {
  const child = spawn(process.execPath, [BIN, ...args], { stdio: ['ignore', 'pipe', 'pipe'] })
  const out: string[] = []
  let buf = ''
  child.stdout!.on('data', (c: Buffer) => {
    buf += c.toString()
    const lines = buf.split('\n')
    buf = lines.pop()!
    out.push(...lines)
  })
  child.stderr!.on('data', (c: Buffer) =>
    out.push(
      ...c
        .toString()
        .split('\n')
        .filter(l => l.length > 0)
        .map(l => `[stderr] ${l}`)
    )
  )
  const exited = new Promise<number | null>(resolve => child.on('exit', code => resolve(code)))
  return { child, out, exited }
}

/** A local mesh of `zeromesh start` processes on loopback (the chaos and probe tests). */
export interface LocalMesh {
  procs: Proc[]
  /** Each node's data dir. */
  dirs: string[]
  /** The first node's loopback multiaddr. */
  addr: string
  /** Starts node i again (same data dir and flags), bootstrapped from node 0; replaces procs[i]. */
  restart(i: number): Proc
}

/**
 * Starts `n` nodes of run `run` under `root` (a secret file there too): node 0 first, the
 * others bootstrapped from its loopback address. `extra(i)` adds node i's own flags (training,
 * snapshot code). Resolves once every process is spawned and node 0 reported its address.
 */
export async function startLocalMesh(root: string, run: string, n: number, o: { heartbeatMs: number; extra: (i: number) => string[] }): Promise<LocalMesh> {
  const secretFile = join(root, 'secret')
  writeFileSync(secretFile, `${run} test secret, long enough\n`)
  const dirs = Array.from({ length: n }, (_, i) => join(root, `node${i}`))
  const args = (i: number, bootstrap: string[]): string[] => [
    'start',
    '--run',
    run,
    '--secret-file',
    secretFile,
    '--listen',
    '/ip4/127.0.0.1/tcp/0',
    '--data-dir',
    dirs[i]!,
    '--host',
    `h${i}`,
    '--expect',
    String(n),
    '--heartbeat-ms',
    String(o.heartbeatMs),
    '--events',
    'jsonl',
    ...o.extra(i),
    ...bootstrap.flatMap(b => ['--bootstrap', b])
  ]
  const procs: Proc[] = [zeromesh(args(0, []))]
  const addr = await waitFor('the first node to report its address', 15_000, () =>
    procs[0]!.out
      .map(parseNodeEvent)
      .flatMap(r => (r.ok && r.event.type === 'started' ? r.event.multiaddrs : []))
      .find(a => a.startsWith('/ip4/127.0.0.1/'))
  ).catch((err: unknown) => {
    // The caller never gets the process to stop.
    procs[0]!.child.kill('SIGKILL')
    throw err
  })
  for (let i = 1; i < n; i++) procs.push(zeromesh(args(i, [addr])))
  return {
    procs,
    dirs,
    addr,
    restart(i) {
      procs[i] = zeromesh(args(i, [addr]))
      return procs[i]
    }
  }
}

/** `zeromesh start` flags of a training node of a world of `worldSize` that trains until stopped. */
export const trainUntilStopped = (worldSize: number, snapshot: string): string[] => [
  '--train',
  '--world-size',
  String(worldSize),
  '--steps',
  '100000',
  '--batch',
  '2',
  '--seq',
  '32',
  '--snapshot',
  snapshot
]
