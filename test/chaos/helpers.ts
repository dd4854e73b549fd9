import { spawn, type ChildProcess } from 'node:child_process'
import { fileURLToPath } from 'node:url'

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
