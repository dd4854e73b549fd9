import { spawn, type ChildProcess } from 'node:child_process'
import { fileURLToPath } from 'node:url'

export const BIN = fileURLToPath(new URL('../../bin/zeromesh.js', import.meta.url))

export interface Proc { child: ChildProcess, out: string[], exited: Promise<number | null> }

/** Spawns `zeromesh <args>` on this Node; collects stdout lines. */
export function zeromesh (args: string[]): Proc {
  const child = spawn(process.execPath, [BIN, ...args], { stdio: ['ignore', 'pipe', 'pipe'] })
  const out: string[] = []
  let buf = ''
  child.stdout!.on('data', (c: Buffer) => {
    buf += c.toString()
    const lines = buf.split('\n')
    buf = lines.pop()!
    out.push(...lines)
  })
  child.stderr!.on('data', (c: Buffer) => out.push(...c.toString().split('\n').filter(l => l.length > 0).map(l => `[stderr] ${l}`)))
  const exited = new Promise<number | null>(resolve => child.on('exit', code => resolve(code)))
  return { child, out, exited }
}

/** Polls `cond` every 100 ms until it returns a value other than undefined, or throws after `ms`. */
export async function waitFor<T> (what: string, ms: number, cond: () => Promise<T | undefined> | T | undefined): Promise<T> {
  const deadline = performance.now() + ms
  for (;;) {
    const v = await cond()
    if (v !== undefined) return v
    if (performance.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}`)
    await new Promise(resolve => setTimeout(resolve, 100))
  }
}
