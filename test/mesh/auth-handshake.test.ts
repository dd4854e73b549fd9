import test from 'ava'
import { createMemoryNetwork, type ByteStream } from '../../mesh/index.ts'
import { authenticateAsDialer, authenticateAsListener, deriveRunKeys, type HandshakeInit, type HandshakeResult } from '../../mesh/libp2p/auth.ts'

// The run-authentication handshake on its own, over a pair of in-memory streams: what libp2p
// runs on every new connection, without libp2p.

const enc = new TextEncoder()
const key = (secret: string, runId = 'run'): Uint8Array => deriveRunKeys(runId, enc.encode(secret)).auth
const SECRET = 'the run secret, long enough'

interface Side {
  authKey: Uint8Array
  runId?: string
  bulkPort?: number
  self?: string
}

/** Runs both sides on a fresh stream pair; each side's outcome (result or error). */
async function handshake(
  dialer: Side | 'silent',
  listener: Side,
  signal?: { listener?: AbortSignal; abortListenerAfterOpen?: AbortController }
): Promise<{ d: HandshakeResult | Error | undefined; l: HandshakeResult | Error }> {
  const hub = createMemoryNetwork()
  const a = hub.createPeer({ id: 'A', labels: { zone: 'za', host: 'ha' } })
  const b = hub.createPeer({ id: 'B', labels: { zone: 'zb', host: 'hb' } })
  const sideInit = (s: Side, self: string, host: string): HandshakeInit => ({
    authKey: s.authKey,
    runId: s.runId ?? 'run',
    self: s.self ?? self,
    labels: { zone: 'z', host },
    bulkPort: s.bulkPort
  })
  const never = new AbortController().signal
  let listened!: Promise<HandshakeResult | Error>
  const accepted = new Promise<void>(resolve => {
    b.handle('auth-test', (s: ByteStream) => {
      listened = authenticateAsListener(s, sideInit(listener, 'B', 'hb'), signal?.listener ?? never).catch((err: Error) => err)
      resolve()
    })
  })
  await Promise.all([a.start(), b.start()])
  try {
    const s = await a.open('B', 'auth-test')
    const d = dialer === 'silent' ? undefined : await authenticateAsDialer(s, sideInit(dialer, 'A', 'ha'), never).catch((err: Error) => err)
    await accepted
    signal?.abortListenerAfterOpen?.abort()
    return { d, l: await listened }
  } finally {
    await Promise.all([a.stop(), b.stop()])
  }
}

test("both sides with the run secret: each learns the other's labels, bulk port and the same nonces", async t => {
  const { d, l } = await handshake({ authKey: key(SECRET), bulkPort: 4001 }, { authKey: key(SECRET) })
  if (d === undefined || d instanceof Error || l instanceof Error) return t.fail(`handshake failed: ${String(d)} / ${String(l)}`)
  t.deepEqual(d.labels, { zone: 'z', host: 'hb' })
  t.deepEqual(l.labels, { zone: 'z', host: 'ha' })
  t.is(l.bulkPort, 4001, "the listener learns the dialer's bulk port")
  t.is(d.bulkPort, undefined, 'a side without a bulk channel offers none')
  t.deepEqual(d.nonceD, l.nonceD)
  t.deepEqual(d.nonceL, l.nonceL)
  t.notDeepEqual(d.nonceD, d.nonceL)
})

test('a listener without the secret is found out by the dialer, and both fail', async t => {
  const { d, l } = await handshake({ authKey: key(SECRET) }, { authKey: key('another secret, long as well') })
  t.like(d, { name: 'AuthenticationError', message: 'the listener does not know the run secret' })
  t.like(l, { name: 'AuthenticationError' })
  t.regex((l as Error).message, /after our proof/)
})

test('a dialer without the secret cannot verify the listener, and the listener refuses it', async t => {
  const { d, l } = await handshake({ authKey: key('another secret, long as well') }, { authKey: key(SECRET) })
  t.like(d, { name: 'AuthenticationError', message: 'the listener does not know the run secret' })
  t.like(l, { name: 'AuthenticationError' })
})

test('the same secret under another run id does not authenticate', async t => {
  const { d, l } = await handshake({ authKey: key(SECRET, 'run'), runId: 'run' }, { authKey: key(SECRET, 'other'), runId: 'other' })
  t.like(d, { name: 'AuthenticationError' })
  t.like(l, { name: 'AuthenticationError' })
})

test('a proof for another identity does not authenticate (no reflection)', async t => {
  const { d, l } = await handshake({ authKey: key(SECRET), self: 'C' }, { authKey: key(SECRET) })
  t.like(d, { name: 'AuthenticationError', message: 'the listener does not know the run secret' })
  t.like(l, { name: 'AuthenticationError' })
})

test('a listener that hears nothing gives up when its signal fires (control: the same pair succeeds)', async t => {
  const ac = new AbortController()
  const { d, l } = await handshake('silent', { authKey: key(SECRET) }, { listener: ac.signal, abortListenerAfterOpen: ac })
  t.is(d, undefined, 'the dialer never spoke')
  t.like(l, { name: 'AuthenticationError', message: 'authentication timed out' })
  const ok = await handshake({ authKey: key(SECRET) }, { authKey: key(SECRET) })
  t.false(ok.d instanceof Error)
  t.false(ok.l instanceof Error)
})
