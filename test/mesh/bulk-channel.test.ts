import test from 'ava'
import { randomBytes } from 'node:crypto'
import { connect, type Socket } from 'node:net'
import { silentLogger } from '../../core/index.ts'
import { startBulkChannel, bulkKey, bulkSessionId, BULK_IDLE_PER_SESSION, MESH_LIMITS, type ByteStream, type StreamHandler } from '../../mesh/index.ts'

const auth = new Uint8Array(32).fill(9)
const nD = new Uint8Array(randomBytes(32))
const nL = new Uint8Array(randomBytes(32))
const session = bulkSessionId(nD, nL)
const key = bulkKey(auth, 'A', 'B', nD, nL)

async function pair(handlers: Record<string, StreamHandler>, clientKey = key) {
  const b = await startBulkChannel({ host: '127.0.0.1', self: 'B', handler: p => handlers[p], log: silentLogger() })
  const a = await startBulkChannel({ host: '127.0.0.1', self: 'A', handler: () => undefined, log: silentLogger() })
  b.addSession('A', session, key)
  a.addSession('B', session, clientKey)
  return {
    a,
    b,
    close: async () => {
      await a.close()
      await b.close()
    }
  }
}

test('a bulk stream carries framed bytes with end and echo', async t => {
  const { a, b, close } = await pair({
    '/echo/1': async s => {
      for await (const c of s) await s.write(c)
      await s.end()
    }
  })
  try {
    const s = await a.open('B', { host: '127.0.0.1', port: b.port }, session, '/echo/1')
    const parts: Uint8Array[] = []
    const reading = (async () => {
      for await (const c of s) parts.push(c)
    })()
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
  const { a, b, close } = await pair(
    {
      '/echo/1': async s => {
        await s.end()
      }
    },
    new Uint8Array(32).fill(1)
  )
  try {
    await t.throwsAsync(a.open('B', { host: '127.0.0.1', port: b.port }, session, '/echo/1'), { name: 'PeerGoneError' })
  } finally {
    await close()
  }
})

test('an unknown session or peer name is refused by the server', async t => {
  const { a, b, close } = await pair({
    '/echo/1': async s => {
      await s.end()
    }
  })
  try {
    b.dropPeer('A')
    await t.throwsAsync(a.open('B', { host: '127.0.0.1', port: b.port }, session, '/echo/1'), { name: 'PeerGoneError' })
  } finally {
    await close()
  }
})

test('unknown protocols are typed errors', async t => {
  const { a, b, close } = await pair({})
  try {
    await t.throwsAsync(a.open('B', { host: '127.0.0.1', port: b.port }, session, '/nope/1'), { name: 'ProtocolNotSupportedError' })
  } finally {
    await close()
  }
})

test('a frame over the chunk cap resets the stream (limit: maxStreamChunkBytes on the bulk channel)', async t => {
  let remoteRead!: Promise<unknown>
  const handlers: Record<string, StreamHandler> = {}
  const opened = new Promise<void>(resolve => {
    handlers['/x/1'] = s => {
      remoteRead = (async () => {
        for await (const c of s) void c
      })()
      resolve()
    }
  })
  const { a, b, close } = await pair(handlers)
  try {
    const s = await a.open('B', { host: '127.0.0.1', port: b.port }, session, '/x/1')
    await opened
    // Bypass the sender's own check to send a frame header the receiver must refuse.
    const big = new Uint8Array(MESH_LIMITS.maxStreamChunkBytes + 1)
    const write = (s as unknown as { writeFrame: (parts: Uint8Array[], bytes: number) => Promise<void> }).writeFrame([big], big.length)
    const err = await t.throwsAsync(remoteRead)
    t.is(err.name, 'StreamResetError')
    t.regex(err.message, /exceeds/)
    await write.catch(() => {})
    const mine = await t.throwsAsync(
      (async () => {
        for await (const c of s) void c
      })()
    )
    t.is(mine.name, 'StreamResetError', 'the sender learns of the reset')
  } finally {
    await close()
  }
})

test('writev sends its parts as one run of bytes in order with plain writes, and releases them once the socket is done with them', async t => {
  const { a, b, close } = await pair({ '/echo/1': echo })
  try {
    const s = await a.open('B', { host: '127.0.0.1', port: b.port }, session, '/echo/1')
    const data = new Uint8Array(randomBytes(2 * 1024 * 1024 + 7))
    const parts: Uint8Array[] = []
    const reading = (async () => {
      for await (const c of s) parts.push(c)
    })()
    let released = 0
    await s.write(data.subarray(0, 3))
    await s.writev!([data.subarray(3, 67), data.subarray(67, 67), data.subarray(67, 1024 * 1024)], { onReleased: () => released++ })
    await s.writev!([data.subarray(1024 * 1024)], { onReleased: () => released++ })
    await s.end()
    await reading
    t.true(Buffer.concat(parts).equals(data))
    t.is(released, 2, 'each gathered write released once')
  } finally {
    await close()
  }
})

test('writev over the chunk cap (all parts together) is a LimitExceededError before anything is sent, and still releases its parts', async t => {
  const { a, b, close } = await pair({ '/echo/1': echo })
  try {
    const s = await a.open('B', { host: '127.0.0.1', port: b.port }, session, '/echo/1')
    const half = new Uint8Array(MESH_LIMITS.maxStreamChunkBytes / 2 + 1)
    let released = 0
    const err = await t.throwsAsync(s.writev!([half, half], { onReleased: () => released++ }))
    t.is(err.name, 'LimitExceededError')
    t.is(released, 1)
    t.deepEqual([...(await exchange(s, Uint8Array.of(1, 2, 3)))], [1, 2, 3], 'the stream is unharmed')
  } finally {
    await close()
  }
})

test('writev on an aborted stream throws and releases its parts', async t => {
  const { a, b, close } = await pair({ '/echo/1': echo })
  try {
    const s = await a.open('B', { host: '127.0.0.1', port: b.port }, session, '/echo/1')
    s.abort()
    let released = 0
    await t.throwsAsync(s.writev!([Uint8Array.of(1)], { onReleased: () => released++ }))
    t.is(released, 1)
  } finally {
    await close()
  }
})

// ---- connection reuse ----

const echo: StreamHandler = async s => {
  for await (const c of s) await s.write(c)
  await s.end()
}

/** One request/response exchange on a fresh stream: write `data`, end, read the echo. */
async function exchange(s: ByteStream, data: Uint8Array): Promise<Buffer> {
  const parts: Uint8Array[] = []
  const reading = (async () => {
    for await (const c of s) parts.push(c)
  })()
  await s.write(data)
  await s.end()
  await reading
  return Buffer.concat(parts)
}

test('streams that end both ways hand their connection to the next stream', async t => {
  const { a, b, close } = await pair({ '/echo/1': echo })
  try {
    for (let i = 0; i < 10; i++) {
      const data = new Uint8Array(randomBytes(1000 + i * 977))
      const s = await a.open('B', { host: '127.0.0.1', port: b.port }, session, '/echo/1')
      t.true((await exchange(s, data)).equals(data), `stream ${i}`)
    }
    t.deepEqual(a.stats(), { dials: 1, reused: 9, idle: 1 })
  } finally {
    await close()
  }
})

test('a late abort of a finished stream does not touch the stream that reuses its connection', async t => {
  const { a, b, close } = await pair({ '/echo/1': echo })
  try {
    const first = await a.open('B', { host: '127.0.0.1', port: b.port }, session, '/echo/1')
    await exchange(first, Uint8Array.of(1, 2, 3))
    const second = await a.open('B', { host: '127.0.0.1', port: b.port }, session, '/echo/1')
    first.abort(new Error('late'))
    const data = new Uint8Array(randomBytes(200_000))
    t.true((await exchange(second, data)).equals(data))
    t.is(a.stats().reused, 1)
  } finally {
    await close()
  }
})

test('an aborted or reset stream closes its connection instead of pooling it', async t => {
  const { a, b, close } = await pair({
    '/echo/1': echo,
    '/reset/1': async s => {
      s.abort()
    }
  })
  try {
    const s1 = await a.open('B', { host: '127.0.0.1', port: b.port }, session, '/echo/1')
    await s1.write(Uint8Array.of(1))
    s1.abort()
    const s2 = await a.open('B', { host: '127.0.0.1', port: b.port }, session, '/reset/1')
    await t.throwsAsync(
      (async () => {
        for await (const c of s2) void c
      })(),
      { name: 'StreamResetError' }
    )
    const s3 = await a.open('B', { host: '127.0.0.1', port: b.port }, session, '/echo/1')
    t.true((await exchange(s3, Uint8Array.of(7))).equals(Buffer.of(7)))
    t.deepEqual(a.stats(), { dials: 3, reused: 0, idle: 1 })
  } finally {
    await close()
  }
})

test(`at most ${BULK_IDLE_PER_SESSION} idle connections are kept per peer session`, async t => {
  const { a, b, close } = await pair({ '/echo/1': echo })
  try {
    const n = BULK_IDLE_PER_SESSION + 3
    const streams = await Promise.all(Array.from({ length: n }, () => a.open('B', { host: '127.0.0.1', port: b.port }, session, '/echo/1')))
    await Promise.all(streams.map((s, i) => exchange(s, Uint8Array.of(i))))
    t.deepEqual(a.stats(), { dials: n, reused: 0, idle: BULK_IDLE_PER_SESSION })
  } finally {
    await close()
  }
})

test('a pooled connection the listener dropped is replaced by a fresh dial, and the open succeeds', async t => {
  const { a, b, close } = await pair({ '/echo/1': echo })
  try {
    await exchange(await a.open('B', { host: '127.0.0.1', port: b.port }, session, '/echo/1'), Uint8Array.of(1))
    t.is(a.stats().idle, 1)
    // The listener forgets A (closing A's connections) and learns the session again before
    // A's side has seen the close: A's pooled connection is dead when A picks it.
    b.dropPeer('A')
    b.addSession('A', session, key)
    const data = new Uint8Array(randomBytes(50_000))
    t.true((await exchange(await a.open('B', { host: '127.0.0.1', port: b.port }, session, '/echo/1'), data)).equals(data))
    t.is(a.stats().dials, 2)
  } finally {
    await close()
  }
})

test('dropping a peer closes its idle pooled connections', async t => {
  const { a, b, close } = await pair({ '/echo/1': echo })
  try {
    await exchange(await a.open('B', { host: '127.0.0.1', port: b.port }, session, '/echo/1'), Uint8Array.of(1))
    t.is(a.stats().idle, 1)
    a.dropPeer('B')
    for (let i = 0; i < 50 && a.stats().idle > 0; i++) await new Promise(resolve => setTimeout(resolve, 10))
    t.is(a.stats().idle, 0)
  } finally {
    await close()
  }
})

test('an outsider who opens connections to the bulk port and closes or stalls them before TLS gets every descriptor back within the handshake deadline, and one address holds at most maxPerAddress', async t => {
  t.timeout(60_000)
  const { b, close } = await pair({})
  const L = MESH_LIMITS.bulkListener
  const sockets: Socket[] = []
  try {
    // Connect-and-close (the CLOSE-WAIT attack), then connect-and-stall past the per-address cap.
    const closers = Array.from({ length: 200 }, () => {
      const s = connect(b.port, '127.0.0.1', () => s.end())
      s.on('error', () => {})
      return s
    })
    const stallers = Array.from({ length: L.maxPerAddress + 100 }, () => {
      const s = connect(b.port, '127.0.0.1')
      s.on('error', () => {})
      sockets.push(s)
      return s
    })
    await Promise.all(
      [...closers, ...stallers].map(
        s => new Promise(resolve => (s.readyState === 'open' ? resolve(undefined) : s.once('connect', resolve).once('close', resolve)))
      )
    )
    // Wait for the server's view to settle: it never holds more than the cap from one address.
    let peak = 0
    const deadline = Date.now() + L.handshakeTimeoutMs + 10_000
    for (;;) {
      const open = b.accepted()
      peak = Math.max(peak, open)
      if (open === 0) break
      if (Date.now() > deadline) t.fail(`${open} connections still open after the handshake deadline`)
      await new Promise(resolve => setImmediate(resolve))
    }
    t.true(peak <= L.maxPerAddress, `at most ${L.maxPerAddress} from one address (peak ${peak})`)
    t.is(b.accepted(), 0, 'every descriptor came back')
  } finally {
    for (const s of sockets) s.destroy()
    await close()
  }
})
