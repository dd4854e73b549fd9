import { spawn } from 'node:child_process'
import { createServer, connect } from 'node:net'
import { fileURLToPath } from 'node:url'
import { ZonesError } from './errors.ts'
import type { ZoneHost, Zones } from './topology.ts'

/**
 * A bulk TCP transfer between two hosts of a topology, to measure what a path carries. Run as
 * a script inside a namespace: `transfer.ts server <ip> <port>` prints `listening`, then one
 * JSON line `{ bytes, seconds }` (first byte to end of stream) and exits; `transfer.ts client
 * <ip> <port> <bytes>` sends that many bytes and closes.
 */

const PORT = 5201

/** What the receiver measured. */
export interface Transfer {
  bytes: number
  seconds: number
  bitsPerS: number
}

/** Sends `bytes` from `from` to `to` over TCP and returns the rate the receiver saw. */
export async function tcpTransfer(zones: Zones, from: ZoneHost, to: ZoneHost, bytes: number, opts: { signal?: AbortSignal } = {}): Promise<Transfer> {
  const script = fileURLToPath(import.meta.url)
  // Generous: a quarter of the uplink rate on a loaded machine, plus start-up.
  const limitMs = Math.ceil(10_000 + ((bytes * 8) / zones.uplinkBitsPerS) * 4000)
  const signal = AbortSignal.any([AbortSignal.timeout(limitMs), ...(opts.signal === undefined ? [] : [opts.signal])])
  const server = zones.exec(to, [process.execPath, script, 'server', to.ip, String(PORT)])
  const srv = spawn(server.command, server.args, { stdio: ['ignore', 'pipe', 'pipe'], signal })
  const out: string[] = []
  let err = ''
  srv.stderr!.on('data', (d: Buffer) => (err += d.toString()))
  const lines = new Promise<void>((resolve, reject) => {
    let buf = ''
    srv.stdout!.on('data', (d: Buffer) => {
      buf += d.toString()
      let nl
      while ((nl = buf.indexOf('\n')) >= 0) {
        out.push(buf.slice(0, nl))
        buf = buf.slice(nl + 1)
        if (out.at(-1) === 'listening') resolve()
      }
    })
    srv.once('error', reject)
    srv.once('exit', code => reject(new ZonesError(`transfer server on ${to.name} exited ${code} before listening: ${err.trim()}`)))
  })
  const exited = new Promise<number | null>(resolve => srv.once('exit', resolve))
  await lines
  const client = zones.exec(from, [process.execPath, script, 'client', to.ip, String(PORT), String(bytes)])
  const cli = spawn(client.command, client.args, { stdio: ['ignore', 'ignore', 'pipe'], signal })
  cli.once('error', () => {})
  srv.once('error', () => {})
  const code = await exited
  const last = out.at(-1)
  if (code !== 0 || last === undefined || last === 'listening') throw new ZonesError(`transfer ${from.name} -> ${to.name} failed (exit ${code}): ${err.trim()}`)
  const r = JSON.parse(last) as { bytes: number; seconds: number }
  return { ...r, bitsPerS: (r.bytes * 8) / r.seconds }
}

function serve(host: string, port: number): void {
  let bytes = 0
  let t0 = 0
  const s = createServer(c => {
    c.on('data', (d: Buffer) => {
      if (bytes === 0) t0 = performance.now()
      bytes += d.length
    })
    c.on('end', () => {
      process.stdout.write(JSON.stringify({ bytes, seconds: (performance.now() - t0) / 1000 }) + '\n')
      s.close()
    })
  })
  s.listen(port, host, () => process.stdout.write('listening\n'))
}

function send(host: string, port: number, total: number): void {
  const chunk = Buffer.alloc(64 * 1024, 0x5a)
  const c = connect(port, host, () => {
    let left = total
    const pump = (): void => {
      while (left > 0) {
        const n = Math.min(left, chunk.length)
        left -= n
        if (!c.write(n === chunk.length ? chunk : chunk.subarray(0, n))) return void c.once('drain', pump)
      }
      c.end()
    }
    pump()
  })
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const [mode, host, port, bytes] = process.argv.slice(2)
  if (mode === 'server') serve(host!, Number(port))
  else if (mode === 'client') send(host!, Number(port), Number(bytes))
  else {
    process.stderr.write('usage: transfer.ts server <ip> <port> | client <ip> <port> <bytes>\n')
    process.exit(2)
  }
}
