import { closeSync, openSync, readFileSync, unlinkSync, writeSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { threadId } from 'node:worker_threads'
import { RealClock } from '../../../core/index.ts'

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

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0)
    return true
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM'
  }
}

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
