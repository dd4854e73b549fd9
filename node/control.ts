import { createServer, request, type Server } from 'node:http'
import { existsSync, unlinkSync } from 'node:fs'
import { join } from 'node:path'
import { ZeromeshError } from '../core/index.ts'

/**
 * The local control socket of a running node: `<data dir>/zeromesh.sock`, HTTP over a Unix
 * socket (only users who can open the data dir can talk to it). `zeromesh status` and
 * `zeromesh up` read GET /status from it.
 */
export const CONTROL_SOCKET = 'zeromesh.sock'
const MAX_RESPONSE_BYTES = 4 * 1024 * 1024

export class ControlError extends ZeromeshError {
  static override name = 'ControlError'
}

/** Serves `status()` as JSON on the node's control socket. Refuses to start if another node answers there. */
export async function serveControl(dataDir: string, status: () => unknown): Promise<Server> {
  const path = join(dataDir, CONTROL_SOCKET)
  if (existsSync(path)) {
    const alive = await fetchStatus(dataDir).then(
      () => true,
      () => false
    )
    if (alive) throw new ControlError(`another zeromesh node is already running with data dir ${dataDir}`)
    unlinkSync(path)
  }
  const server = createServer((req, res) => {
    if (req.method === 'GET' && req.url === '/status') {
      res.writeHead(200, { 'content-type': 'application/json' })
      res.end(JSON.stringify(status()))
      return
    }
    res.writeHead(404).end()
  })
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject)
    server.listen(path, () => {
      server.off('error', reject)
      resolve()
    })
  })
  return server
}

/** Reads a running node's status from its control socket. */
export function fetchStatus(dataDir: string, timeoutMs = 3000): Promise<unknown> {
  const path = join(dataDir, CONTROL_SOCKET)
  return new Promise((resolve, reject) => {
    const req = request({ socketPath: path, path: '/status', method: 'GET', timeout: timeoutMs }, res => {
      const parts: Buffer[] = []
      let size = 0
      res.on('data', (c: Buffer) => {
        size += c.length
        if (size > MAX_RESPONSE_BYTES) req.destroy(new ControlError('status response too large'))
        else parts.push(c)
      })
      res.on('end', () => {
        try {
          resolve(JSON.parse(Buffer.concat(parts).toString('utf8')))
        } catch (err) {
          reject(new ControlError(`bad status response: ${(err as Error).message}`))
        }
      })
    })
    req.on('timeout', () => req.destroy(new ControlError(`no answer on ${path} within ${timeoutMs} ms`)))
    req.on('error', err => {
      const code = (err as NodeJS.ErrnoException).code
      reject(
        code === 'ENOENT' || code === 'ECONNREFUSED'
          ? new ControlError(`no zeromesh node is running with data dir ${dataDir} (nothing answers on ${path})`)
          : err
      )
    })
    req.end()
  })
}
