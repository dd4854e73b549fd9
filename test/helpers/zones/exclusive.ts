import { closeSync, openSync, readFileSync, unlinkSync, writeSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { threadId } from 'node:worker_threads'
import test, { type ExecutionContext } from 'ava'
import { RealClock } from '../../../core/index.ts'
import { alive } from './commands.ts'

/**
 * One namespace scenario at a time across test files: ava runs two files at once on this 2-core
 * machine (worker threads of one process, or processes), and two multi-node scenarios side by
 * side (the zone cut, the NAT runs: five node processes each) starve each other's heartbeats
 * until the failure detector suspects live nodes. `exclusive(fn)` runs `fn` holding a lock file
 * in the temp directory (created with O_EXCL; it names its holder's pid, and a lock whose pid is
 * gone is taken over), waiting for a holder elsewhere to finish.
 */
const LOCK = join(tmpdir(), 'zeromesh-namespace-scenario.lock')
const clock = new RealClock()

function tryLock(): boolean {
  try {
    const fd = openSync(LOCK, 'wx')
    writeSync(fd, `${process.pid} ${threadId}\n`)
    closeSync(fd)
    return true
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err
    const pid = Number(readFileSync(LOCK, 'utf8').split(' ')[0])
    if (Number.isInteger(pid) && pid > 0 && !alive(pid)) unlinkSync(LOCK)
    return false
  }
}

export async function exclusive<T>(fn: () => Promise<T>): Promise<T> {
  while (!tryLock()) await clock.sleep(250)
  try {
    return await fn()
  } finally {
    unlinkSync(LOCK)
  }
}

/**
 * Registers a test that builds namespaces, run under {@link exclusive}, or a skipped one naming
 * why it cannot (`reason`: the machine cannot host namespaces). `flaky`: a scenario that exposes
 * a known failure of the product (docs/LIMITS.md) runs only with ZEROMESH_ZONES_FLAKY=1, so CI
 * stays a verdict on what works.
 */
export function namespaceTest(reason: string | undefined, title: string, fn: (t: ExecutionContext) => Promise<void>, flaky?: string): void {
  const why = reason ?? (flaky !== undefined && process.env['ZEROMESH_ZONES_FLAKY'] !== '1' ? `${flaky}; ZEROMESH_ZONES_FLAKY=1 runs it` : undefined)
  if (why !== undefined) {
    test.skip(`${title} [skipped: ${why}]`, () => {})
    return
  }
  test.serial(title, t => exclusive(() => fn(t)))
}
