// A ring of P processes that only move bytes: each sends `bytes` to the next over one socket
// (raw TCP, or TLS 1.3 with an external PSK and AES-128-GCM as the bulk channel uses) while it
// receives as much from the previous one, in 1 MiB writes. It is what a ring collective costs
// on this box with no collective logic at all: the ceiling for `collective` part (c).
//   parent:  ringRawSeconds(P, mode, bytes)
//   child:   node bench/_ring-raw.ts <mode> <bytes>  (prints its port, reads the next one's
//            port and then "go" on stdin, prints its seconds)
import { spawn } from 'node:child_process'
import { connect as tcpConnect, createServer as tcpServer, type AddressInfo, type Socket } from 'node:net'
import { connect as tlsConnect, createServer as tlsServer, type ConnectionOptions } from 'node:tls'
import { createInterface } from 'node:readline'
import { fileURLToPath } from 'node:url'

export type RingMode = 'tcp' | 'tls'

const KEY = Buffer.alloc(32, 7)
const TLS = { ciphers: 'TLS_AES_128_GCM_SHA256', minVersion: 'TLSv1.3' } as const

/** Seconds until every one of P processes has sent and received `bytes` (the slowest one). */
export async function ringRawSeconds(P: number, mode: RingMode, bytes: number): Promise<number> {
  const kids = Array.from({ length: P }, () =>
    spawn(process.execPath, [fileURLToPath(import.meta.url), mode, String(bytes)], { stdio: ['pipe', 'pipe', 'inherit'] })
  )
  try {
    const lines = kids.map(k => createInterface({ input: k.stdout })[Symbol.asyncIterator]())
    const next = async (i: number): Promise<string> => {
      const r = await lines[i]!.next()
      if (r.done === true) throw new Error(`ring process ${i} exited`)
      return r.value
    }
    const ports = await Promise.all(kids.map((_, i) => next(i)))
    kids.forEach((k, i) => k.stdin.write(`${ports[(i + 1) % P]}\n`))
    await Promise.all(kids.map((_, i) => next(i)))
    for (const k of kids) k.stdin.write('go\n')
    const secs = await Promise.all(kids.map(async (_, i) => Number(await next(i))))
    return Math.max(...secs)
  } finally {
    for (const k of kids) k.kill('SIGKILL')
  }
}

async function child(mode: RingMode, bytes: number): Promise<void> {
  const input = createInterface({ input: process.stdin })[Symbol.asyncIterator]()
  const line = async (): Promise<string> => (await input.next()).value as string
  let got = 0
  let received!: () => void
  const allIn = new Promise<void>(resolve => {
    received = resolve
  })
  const sink = (s: Socket): void => {
    s.on('data', (c: Buffer) => {
      got += c.length
      if (got >= bytes) received()
    })
  }
  const server = mode === 'tls' ? tlsServer({ ...TLS, pskCallback: () => KEY }, sink) : tcpServer(sink)
  await new Promise<void>(resolve => server.listen(0, '127.0.0.1', () => resolve()))
  process.stdout.write(`${(server.address() as AddressInfo).port}\n`)
  const port = Number(await line())
  const sock =
    mode === 'tls'
      ? tlsConnect({
          ...TLS,
          host: '127.0.0.1',
          port,
          checkServerIdentity: () => undefined,
          pskCallback: () => ({ psk: KEY, identity: 'ring' })
        } as ConnectionOptions)
      : tcpConnect(port, '127.0.0.1')
  await new Promise<void>(resolve => sock.once(mode === 'tls' ? 'secureConnect' : 'connect', () => resolve()))
  sock.setNoDelay(true)
  process.stdout.write('ready\n')
  await line()
  const chunk = new Uint8Array(2 ** 20).map((_, i) => i * 7)
  const t0 = performance.now()
  for (let sent = 0; sent < bytes; sent += chunk.length) {
    if (!sock.write(bytes - sent < chunk.length ? chunk.subarray(0, bytes - sent) : chunk)) await new Promise(resolve => sock.once('drain', resolve))
  }
  await allIn
  process.stdout.write(`${(performance.now() - t0) / 1000}\n`)
  await line()
}

if (process.argv[1] === fileURLToPath(import.meta.url)) await child(process.argv[2] as RingMode, Number(process.argv[3]))
