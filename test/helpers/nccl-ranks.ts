// Runs NCCL ranks as processes, one GPU each (./nccl-rank-worker.ts), relaying rank 0's unique
// id to the others' stdin. For bench/nccl.ts and any test that wants two real ranks; needs a
// host with at least `nranks` GPUs, which {@link ncclRanksUnavailable} checks first.
import { spawn, type ChildProcess } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import { loadCuda } from '../../gpu/cuda/ffi.ts'
import { loadNccl } from '../../gpu/cuda/nccl.ts'

const workerPath = fileURLToPath(new URL('./nccl-rank-worker.ts', import.meta.url))

/** Why `nranks` GPU ranks cannot run here (no driver, too few devices, no NCCL), or undefined when they can. */
export function ncclRanksUnavailable(nranks: number): string | undefined {
  try {
    const libs = loadCuda()
    const rc = libs.cu.cuInit(0) as number
    if (rc !== 0) return `cuInit failed (${rc})`
    const count = [0]
    if ((libs.cu.cuDeviceGetCount(count) as number) !== 0) return 'cuDeviceGetCount failed'
    if (count[0]! < nranks) return `${nranks} ranks need ${nranks} GPUs; cuDeviceGetCount() = ${count[0]}`
  } catch (err) {
    return (err as Error).message
  }
  const { reason } = loadNccl()
  return reason
}

export interface RankLine {
  rank: number
  [key: string]: unknown
}

/**
 * Starts `nranks` workers (rank r on device r), passes rank 0's id to the others, and calls
 * `onLine` with every JSON line they print. Resolves when all exited cleanly; rejects on the
 * first failure or after `timeoutMs`, killing every worker still running.
 */
export async function runNcclRanks(nranks: number, sizes: readonly number[], onLine: (l: RankLine) => void, timeoutMs = 300_000): Promise<void> {
  const children: ChildProcess[] = []
  const timer = setTimeout(() => stop(new Error(`ranks did not finish within ${timeoutMs} ms`)), timeoutMs)
  let stop: (err: Error) => void = () => {}
  const failed = new Promise<never>((_, reject) => {
    stop = err => {
      for (const c of children) if (c.exitCode === null) c.kill('SIGKILL')
      reject(err)
    }
  })
  const relay = (line: RankLine): void => {
    if (typeof line['id'] === 'string') for (const c of children.slice(1)) c.stdin!.end(`${JSON.stringify({ id: line['id'] })}\n`)
    if (typeof line['error'] === 'string') stop(new Error(`rank ${line.rank}: ${line['error']}`))
    onLine(line)
  }
  for (let r = 0; r < nranks; r++) children.push(startRank(r, nranks, sizes, relay))
  try {
    await Promise.race([failed, Promise.all(children.map(exited))])
  } finally {
    clearTimeout(timer)
    for (const c of children) if (c.exitCode === null) c.kill('SIGKILL')
  }
}

function startRank(rank: number, nranks: number, sizes: readonly number[], onLine: (l: RankLine) => void): ChildProcess {
  const child = spawn(process.execPath, [workerPath, String(rank), String(nranks), sizes.join(',')], {
    stdio: ['pipe', 'pipe', 'inherit'],
    env: { ...process.env, ZEROMESH_CUDA_DEVICE: String(rank) }
  })
  let buf = ''
  child.stdout!.on('data', (d: Buffer) => {
    buf += d.toString()
    const lines = buf.split('\n')
    buf = lines.pop()!
    for (const l of lines) if (l.startsWith('{')) onLine(JSON.parse(l) as RankLine)
  })
  return child
}

function exited(child: ChildProcess): Promise<void> {
  return new Promise((resolve, reject) => {
    child.once('exit', (code, signal) => (code === 0 ? resolve() : reject(new Error(`rank exited with code ${code}, signal ${signal}`))))
  })
}
