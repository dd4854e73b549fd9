import test, { type ExecutionContext } from 'ava'
import { type PeerNet, type ByteStream, MESH_LIMITS } from '../../mesh/index.ts'
import { Rng } from '../../core/index.ts'

/** What the suite needs from an implementation. */
export interface PeerNetHarness {
  /** Starts n PeerNets that are all connected; resolves once every one sees all the others. */
  create(n: number): Promise<PeerNet[]>
  /** Crash-stops one node (its peers must notice). */
  kill(net: PeerNet): Promise<void>
  /** Stops everything. */
  close(): Promise<void>
}

/** Resolves with `p`, or rejects after `ms` with a message naming what was awaited. */
export async function within<T>(ms: number, what: string, p: Promise<T>): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined
  try {
    return await Promise.race([
      p,
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms)
      })
    ])
  } finally {
    clearTimeout(timer)
  }
}

async function readAll(s: AsyncIterable<Uint8Array>): Promise<Uint8Array> {
  const parts: Uint8Array[] = []
  for await (const c of s) parts.push(c)
  return Buffer.concat(parts)
}

/**
 * The suite every PeerNet implementation passes. `make` builds a fresh harness per test.
 * `timeoutMs` bounds every wait (real time); failure notices must arrive within it.
 */
export function peerNetSuite(impl: string, make: () => PeerNetHarness, timeoutMs = 10_000): void {
  // Tests destructure the nets they asked for; the tuple type spares them undefined checks.
  type Nets = [PeerNet, PeerNet, PeerNet, PeerNet]
  const withNets = (title: string, n: number, body: (t: ExecutionContext, nets: Nets, h: PeerNetHarness) => Promise<void>): void => {
    test.serial(`${impl}: ${title}`, async t => {
      const h = make()
      try {
        const nets = await within(timeoutMs, 'the nets to connect', h.create(n))
        await body(t, nets as Nets, h)
      } finally {
        await h.close()
      }
    })
  }

  withNets('peers see each other with their labels and notice a death', 3, async (t, [a, b, c], h) => {
    const seen = a
      .peers()
      .map(p => p.id)
      .sort()
    t.deepEqual(seen, [b!.self.id, c!.self.id].sort())
    t.deepEqual(a.peers().find(p => p.id === b!.self.id)?.labels, b!.self.labels)
    const gone = new Promise<string>(resolve =>
      a.on('peer:disconnect', id => {
        if (id === c!.self.id) resolve(id)
      })
    )
    await h.kill(c!)
    t.is(await within(timeoutMs, 'peer:disconnect', gone), c!.self.id)
    t.false(a.peers().some(p => p.id === c!.self.id))
  })

  withNets('gossip reaches every subscriber once and never the publisher', 4, async (t, nets) => {
    const got = nets.map(() => [] as string[])
    const arrived = nets.slice(1).map(
      (n, i) =>
        new Promise<void>(resolve => {
          n.subscribe('/t/a', {
            deliver: m => {
              got[i + 1]!.push(`${m.from}:${Buffer.from(m.data).toString()}`)
              resolve()
            }
          })
        })
    )
    nets[0]!.subscribe('/t/a', { deliver: m => got[0]!.push(String(m.from)) })
    await waitForSubscribers(nets[0]!, '/t/a', arrived, timeoutMs)
    await within(timeoutMs, 'gossip delivery', Promise.all(arrived))
    await new Promise(resolve => setTimeout(resolve, 50))
    t.deepEqual(got[0], [], 'no delivery to self')
    for (let i = 1; i < nets.length; i++) t.deepEqual(got[i], [`${nets[0]!.self.id}:hello`], `node ${i}`)
  })

  withNets('rejected gossip is not delivered and counts against the sender', 2, async (t, [a, b]) => {
    const delivered: string[] = []
    let judged!: () => void
    const validated = new Promise<void>(resolve => {
      judged = resolve
    })
    b!.subscribe('/t/v', {
      validate: m => {
        const ok = m.data[0] === 1
        if (!ok) judged()
        return ok ? 'accept' : 'reject'
      },
      deliver: m => delivered.push(String(m.data[0]))
    })
    await waitForSubscribers(a!, '/t/v', [validated], timeoutMs, Uint8Array.of(2))
    await within(timeoutMs, 'validation', validated)
    await a!.publish('/t/v', Uint8Array.of(1))
    await within(
      timeoutMs,
      'the good message',
      (async () => {
        while (delivered.length === 0) await new Promise(resolve => setTimeout(resolve, 10))
      })()
    )
    t.deepEqual(delivered, ['1'])
    t.true(b!.rejectedFrom(a!.self.id) >= 1)
    t.is(b!.rejectedFrom('nobody'), 0)
  })

  withNets('send reaches only its target, through the validator', 3, async (t, [a, b, c]) => {
    const got: string[] = []
    const atC: string[] = []
    b!.subscribe('/t/d', {
      validate: m => (m.data[0] === 0xff ? 'reject' : 'accept'),
      deliver: m => got.push(`${m.from}:${m.data[0]}`)
    })
    c!.subscribe('/t/d', { deliver: m => atC.push(String(m.data[0])) })
    const sent = [1, 2, 0xff, 3]
    for (const v of sent) await a!.send(b!.self.id, '/t/d', Uint8Array.of(v))
    await within(
      timeoutMs,
      'direct messages',
      (async () => {
        while (got.length < 3) await new Promise(resolve => setTimeout(resolve, 5))
      })()
    )
    await new Promise(resolve => setTimeout(resolve, 50))
    t.deepEqual(
      got.sort(),
      [1, 2, 3].map(v => `${a!.self.id}:${v}`)
    )
    t.deepEqual(atC, [], 'nobody else sees a direct message')
    t.true(b!.rejectedFrom(a!.self.id) >= 1, 'a rejected direct message counts against its sender')
    await t.notThrowsAsync(a!.send('nobody', '/t/d', Uint8Array.of(1)), 'an unknown peer is a silent loss')
    await t.notThrowsAsync(a!.send(a!.self.id, '/t/d', Uint8Array.of(1)), 'sending to oneself is a no-op')
    await t.throwsAsync(a!.send(b!.self.id, '/t/d', new Uint8Array(MESH_LIMITS.maxGossipBytes + 1)), { name: 'LimitExceededError' })
  })

  withNets('oversize gossip and bad names are refused locally', 2, async (t, [a]) => {
    await t.throwsAsync(a!.publish('/t/big', new Uint8Array(MESH_LIMITS.maxGossipBytes + 1)), { name: 'LimitExceededError' })
    t.throws(() => a!.subscribe('', { deliver: () => {} }), { name: 'InvalidArgumentError' })
    t.throws(() => a!.handle('has space', () => {}), { name: 'InvalidArgumentError' })
    t.throws(() => a!.handle('/' + 'x'.repeat(MESH_LIMITS.maxNameBytes), () => {}), { name: 'InvalidArgumentError' }, 'limit: maxNameBytes')
  })

  withNets('streams carry bytes exactly, both ways, with half-close', 2, async (t, [a, b]) => {
    b!.handle('/echo/1', async s => {
      for await (const c of s) await s.write(c)
      await s.end()
    })
    const rng = Rng.fromSeed(7)
    const payload = rng.fill(new Uint8Array(12 * 1024 * 1024 + 13))
    const s = await a!.open(b!.self.id, '/echo/1')
    const back = readAll(s)
    for (let off = 0; off < payload.length; ) {
      const n = Math.min(rng.int(1, 2 * 1024 * 1024), payload.length - off)
      await s.write(payload.slice(off, off + n))
      off += n
    }
    await s.end()
    const got = await within(timeoutMs * 3, 'the echo', back)
    t.is(got.length, payload.length)
    t.true(Buffer.from(got).equals(Buffer.from(payload)))
  })

  // Readers copy a chunk with slice() and read it through .buffer (snapshot/wire.ts did):
  // a Node Buffer's slice() is a view and its .buffer the pool it was cut from, which made
  // snapshot replies parse as garbage on the bulk channel and its puts stall.
  withNets('received chunks are plain Uint8Arrays: slice() copies', 2, async (t, [a, b]) => {
    const chunks: Uint8Array[] = []
    const got = new Promise<void>(resolve => {
      b!.handle('/chunks/1', async s => {
        for await (const c of s) chunks.push(c)
        resolve()
      })
    })
    const s = await a!.open(b!.self.id, '/chunks/1')
    await s.write(Uint8Array.of(1, 2, 3, 4))
    await s.write(Uint8Array.of(5, 6))
    await s.end()
    await within(timeoutMs, 'the chunks', got)
    t.true(chunks.length > 0)
    for (const c of chunks) {
      t.false(Buffer.isBuffer(c), 'a chunk is not a Node Buffer')
      const copy = c.slice()
      t.is(copy.buffer.byteLength, c.length, 'slice() is a copy with its own buffer')
      t.deepEqual([...copy], [...c])
    }
    t.deepEqual([...Buffer.concat(chunks)], [1, 2, 3, 4, 5, 6])
  })

  withNets('a writer to a reader that does not read is held back (bounded buffering)', 2, async (t, [a, b]) => {
    let release!: () => void
    const gate = new Promise<void>(resolve => {
      release = resolve
    })
    let received = 0
    const done = new Promise<void>(resolve => {
      b!.handle('/sink/1', async s => {
        await gate
        for await (const c of s) received += c.length
        resolve()
      })
    })
    const s = await a!.open(b!.self.id, '/sink/1')
    const chunk = new Uint8Array(1024 * 1024)
    let accepted = 0
    const writer = (async () => {
      for (let i = 0; i < 256; i++) {
        await s.write(chunk)
        accepted++
      }
      await s.end()
    })()
    // Give the writer every chance to run ahead.
    await new Promise(resolve => setTimeout(resolve, 300))
    t.true(accepted < 64, `writer got ${accepted} MiB ahead of a reader that never read`)
    release()
    await within(timeoutMs * 3, 'the writer to finish once the reader reads', writer)
    await within(timeoutMs, 'the reader', done)
    t.is(received, 256 * 1024 * 1024)
  })

  withNets('abort signals and stream resets are honoured with typed errors', 2, async (t, [a, b]) => {
    await t.throwsAsync(a!.open(b!.self.id, '/x/1', { signal: AbortSignal.abort() }), { name: 'AbortError' })
    let remote!: ByteStream
    const opened = new Promise<void>(resolve =>
      b!.handle('/hold/1', s => {
        remote = s
        resolve()
      })
    )
    const s = await a!.open(b!.self.id, '/hold/1')
    await t.throwsAsync(s.write(new Uint8Array(MESH_LIMITS.maxStreamChunkBytes + 1)), { name: 'LimitExceededError' }, 'limit: maxStreamChunkBytes')
    await s.write(Uint8Array.of(1))
    await within(timeoutMs, 'the handler', opened)
    // A write blocked by backpressure rejects when its signal fires.
    const ac = new AbortController()
    const big = new Uint8Array(MESH_LIMITS.maxStreamChunkBytes)
    const blocked = (async () => {
      for (let i = 0; i < 64; i++) await s.write(big, { signal: ac.signal })
    })()
    setTimeout(() => ac.abort(), 100)
    await t.throwsAsync(within(timeoutMs, 'the aborted write', blocked), { name: 'AbortError' })
    // Resetting one side makes the other side's reads fail with a typed error.
    const reading = (async () => {
      for await (const c of remote) void c
    })()
    s.abort()
    const err = await t.throwsAsync(within(timeoutMs, 'the reset to arrive', reading))
    t.true(['StreamResetError', 'PeerGoneError'].includes(err.name), err.name)
  })

  withNets("a peer dying mid-stream fails the survivor's reads and writes promptly", 2, async (t, [a, b], h) => {
    const opened = new Promise<void>(resolve =>
      b!.handle('/slow/1', async s => {
        resolve()
        await s.write(Uint8Array.of(9))
        await new Promise(() => {})
      })
    )
    const s = await a!.open(b!.self.id, '/slow/1')
    await within(timeoutMs, 'the handler', opened)
    const reading = readAll(s)
    await h.kill(b!)
    const err = await t.throwsAsync(within(timeoutMs, 'the death to surface', reading))
    t.true(['PeerGoneError', 'StreamResetError'].includes(err.name), err.name)
    await t.throwsAsync(
      within(
        timeoutMs,
        'writes to fail',
        (async () => {
          for (let i = 0; i < 1000; i++) await s.write(new Uint8Array(65536))
        })()
      ),
      { message: /./ }
    )
    await t.throwsAsync(a!.open(b!.self.id, '/slow/1'), { name: 'PeerGoneError' })
  })

  withNets('unknown peers and protocols are typed errors; a stopped net refuses work', 2, async (t, [a, b]) => {
    await t.throwsAsync(a!.open(b!.self.id, '/nobody/1'), { name: 'ProtocolNotSupportedError' })
    await t.throwsAsync(a!.open('not-a-peer', '/x/1'), { name: 'PeerGoneError' })
    await a!.stop()
    await t.throwsAsync(a!.publish('/t/x', Uint8Array.of(1)), { name: 'NotStartedError' })
    await t.throwsAsync(a!.open(b!.self.id, '/x/1'), { name: 'NotStartedError' })
  })
}

/**
 * Gossip meshes form asynchronously (libp2p exchanges subscriptions after connecting), so the
 * first publishes can find no subscriber. Publish every 100 ms until `arrived` settles.
 */
async function waitForSubscribers(
  from: PeerNet,
  topic: string,
  arrived: Array<Promise<void>>,
  timeoutMs: number,
  data = new TextEncoder().encode('hello')
): Promise<void> {
  let done = false
  const all = Promise.all(arrived).then(() => {
    done = true
  })
  const deadline = performance.now() + timeoutMs
  while (!done && performance.now() < deadline) {
    await from.publish(topic, data)
    await Promise.race([all, new Promise(resolve => setTimeout(resolve, 100))])
  }
}
