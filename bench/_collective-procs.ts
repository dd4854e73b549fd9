// Starts P collective worker processes (bench/_collective-worker.ts): real libp2p nodes on
// loopback; used by test/chaos/collective-processes.test.ts and bench/collective.ts.
import { spawn } from 'node:child_process'
import { mkdtempSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'

export interface WorkerResult { rank: number, ring: number[], allGather: string, reduceScatter: string, allReduce: string, allGatherMBps: number, reduceScatterMBps: number }

const worker = fileURLToPath(new URL('./_collective-worker.ts', import.meta.url))


/** Starts P worker processes (real libp2p nodes on loopback) and collects their JSON results. */
export async function runWorkers (P: number, elements: number, rounds: number, seed: number): Promise<WorkerResult[]> {
  const dir = mkdtempSync(join(tmpdir(), 'zm-cp-'))
  const secret = join(dir, 'secret')
  writeFileSync(secret, 'a collective secret of enough length')
  const start = (i: number, bootstrap?: string): { addr: Promise<string>, result: Promise<WorkerResult> } => {
    const p = spawn(process.execPath, [worker, String(i), String(P), secret, join(dir, `w${i}`), String(elements), String(rounds), String(seed), ...(bootstrap === undefined ? [] : [bootstrap])], { stdio: ['ignore', 'pipe', 'inherit'] })
    let out = ''
    let onAddr!: (a: string) => void
    const addr = new Promise<string>(resolve => { onAddr = resolve })
    const result = new Promise<WorkerResult>((resolve, reject) => {
      p.stdout.on('data', (d: Buffer) => {
        out += d.toString()
        const a = /^ADDR (\S+)$/m.exec(out)
        if (a !== null) onAddr(a[1]!)
        const j = out.split('\n').find(l => l.startsWith('{'))
        if (j !== undefined) resolve(JSON.parse(j) as WorkerResult)
      })
      p.once('exit', code => reject(new Error(`worker ${i} exited with ${code}: ${out.slice(-500)}`)))
    })
    return { addr, result }
  }
  const first = start(0)
  const addr = await first.addr
  const rest = Array.from({ length: P - 1 }, (_, i) => start(i + 1, addr))
  return await Promise.all([first.result, ...rest.map(r => r.result)])
}

