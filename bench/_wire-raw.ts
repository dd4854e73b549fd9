// The raw-TCP baseline shared by the wire and collective benches: a receiver in its own process
// (bench/_wire-receiver.ts: a raw TCP sink and a libp2p PeerNet sink) and a timed raw send.
import { spawn } from 'node:child_process'
import { connect } from 'node:net'
import { fileURLToPath } from 'node:url'

export interface WireReceiver {
  info: { multiaddr: string; tcpPort: number }
  kill: () => void
}

/** Starts bench/_wire-receiver.ts in a child process and waits for its addresses. */
export async function startWireReceiver(encrypter: 'noise' | 'tls'): Promise<WireReceiver> {
  const child = spawn(process.execPath, [fileURLToPath(new URL('./_wire-receiver.ts', import.meta.url)), encrypter], { stdio: ['ignore', 'pipe', 'inherit'] })
  const info = await new Promise<{ multiaddr: string; tcpPort: number }>((resolve, reject) => {
    let buf = ''
    child.stdout.on('data', (c: Buffer) => {
      buf += c.toString()
      if (buf.includes('\n')) resolve(JSON.parse(buf.split('\n')[0]!))
    })
    child.on('exit', code => reject(new Error(`receiver exited with ${code}`)))
  })
  return { info, kill: () => child.kill('SIGKILL') }
}

/** Seconds to send `total` bytes (in `chunk`s) over one raw TCP socket, until the receiver acks. */
export async function rawTcpSeconds(port: number, total: number, chunk: Uint8Array): Promise<number> {
  const sock = connect(port, '127.0.0.1')
  await new Promise<void>(resolve => sock.once('connect', () => resolve()))
  sock.setNoDelay(true)
  const done = new Promise<void>(resolve => sock.once('data', () => resolve()))
  const t0 = performance.now()
  const head = Buffer.alloc(8)
  head.writeBigUInt64LE(BigInt(total))
  sock.write(head)
  for (let sent = 0; sent < total; sent += chunk.length) {
    if (!sock.write(chunk)) await new Promise(resolve => sock.once('drain', resolve))
  }
  await done
  const s = (performance.now() - t0) / 1000
  sock.destroy()
  return s
}
