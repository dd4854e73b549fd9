import test from 'ava'
import { randomBytes } from 'node:crypto'
import { silentLogger } from '../../core/index.ts'
import { startBulkChannel, bulkKey, bulkSessionId, MESH_LIMITS, type ByteStream, type StreamHandler } from '../../mesh/index.ts'

const auth = new Uint8Array(32).fill(9)
const nD = new Uint8Array(randomBytes(32))
const nL = new Uint8Array(randomBytes(32))
const session = bulkSessionId(nD, nL)
const key = bulkKey(auth, 'A', 'B', nD, nL)

async function pair (handlers: Record<string, StreamHandler>, clientKey = key) {
  const b = await startBulkChannel({ host: '127.0.0.1', self: 'B', handler: p => handlers[p], log: silentLogger() })
  const a = await startBulkChannel({ host: '127.0.0.1', self: 'A', handler: () => undefined, log: silentLogger() })
  b.addSession('A', session, key)
  a.addSession('B', session, clientKey)
  return { a, b, close: async () => { await a.close(); await b.close() } }
}

test('a bulk stream carries framed bytes with end and echo', async t => {
  const { a, b, close } = await pair({ '/echo/1': async s => { for await (const c of s) await s.write(c); await s.end() } })
  try {
    const s = await a.open('B', '127.0.0.1', b.port, session, '/echo/1')
    const parts: Uint8Array[] = []
    const reading = (async () => { for await (const c of s) parts.push(c) })()
    const data = new Uint8Array(randomBytes(3 * 1024 * 1024 + 5))
    await s.write(data.subarray(0, 1))
    await s.write(data.subarray(1))
    await s.end()
    await reading
    t.true(Buffer.concat(parts).equals(data))
  } finally {
    await close()
  }
})

test('a client without the pair key cannot complete the handshake', async t => {
  const { a, b, close } = await pair({ '/echo/1': async s => { await s.end() } }, new Uint8Array(32).fill(1))
  try {
    await t.throwsAsync(a.open('B', '127.0.0.1', b.port, session, '/echo/1'), { name: 'PeerGoneError' })
  } finally {
    await close()
  }
})

test('an unknown session or peer name is refused by the server', async t => {
  const { a, b, close } = await pair({ '/echo/1': async s => { await s.end() } })
  try {
    b.dropPeer('A')
    await t.throwsAsync(a.open('B', '127.0.0.1', b.port, session, '/echo/1'), { name: 'PeerGoneError' })
  } finally {
    await close()
  }
})

test('unknown protocols are typed errors', async t => {
  const { a, b, close } = await pair({})
  try {
    await t.throwsAsync(a.open('B', '127.0.0.1', b.port, session, '/nope/1'), { name: 'ProtocolNotSupportedError' })
  } finally {
    await close()
  }
})

test('a frame over the chunk cap resets the stream (limit: maxStreamChunkBytes on the bulk channel)', async t => {
  let remoteRead!: Promise<unknown>
  const handlers: Record<string, StreamHandler> = {}
  const opened = new Promise<void>(resolve => {
    handlers['/x/1'] = s => {
      remoteRead = (async () => { for await (const c of s) void c })()
      resolve()
    }
  })
  const { a, b, close } = await pair(handlers)
  try {
    const s = await a.open('B', '127.0.0.1', b.port, session, '/x/1')
    await opened
    // Bypass the sender's own check to send a frame header the receiver must refuse.
    const write = (s as unknown as { writeFrame: (b: Uint8Array) => Promise<void> }).writeFrame(new Uint8Array(MESH_LIMITS.maxStreamChunkBytes + 1))
    const err = await t.throwsAsync(remoteRead)
    t.is(err.name, 'StreamResetError')
    t.regex(err.message, /exceeds/)
    await write.catch(() => {})
    const mine = await t.throwsAsync((async () => { for await (const c of s) void c })())
    t.is(mine.name, 'StreamResetError', 'the sender learns of the reset')
  } finally {
    await close()
  }
})
