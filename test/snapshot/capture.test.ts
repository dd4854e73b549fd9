import test from 'ava'
import { Rng } from '../../core/index.ts'
import { createCapturer, decodeState, encodeState } from '../../snapshot/index.ts'
import { bytesEqual, randomState } from './helpers.ts'

// A place() that blocks until released, recording what it was given.
function blockingPlace() {
  const placed: Array<{ step: number; bytes: Uint8Array }> = []
  let release: Array<() => void> = []
  const place = async (sealed: Uint8Array): Promise<number> => {
    await new Promise<void>(resolve => release.push(resolve))
    const copy = sealed.slice()
    placed.push({ step: decodeState(copy).step, bytes: copy })
    return placed.length
  }
  return {
    place,
    placed,
    releaseAll: () => {
      const r = release
      release = []
      r.forEach(f => f())
    },
    waiting: () => release.length
  }
}

test('capture copies synchronously: mutating the state right after capture() does not change the snapshot', async t => {
  const p = blockingPlace()
  const c = createCapturer(p.place)
  const s = randomState(Rng.fromSeed(1), 1000, { step: 1 })
  const expected = encodeState(s)
  const ticket = c.capture(s)
  s.weights.fill(9)
  s.adamM.fill(9)
  s.rng.fill(9)
  while (p.waiting() === 0) await Promise.resolve()
  p.releaseAll()
  const out = await ticket.done
  t.is(out.status, 'placed')
  t.true(bytesEqual(p.placed[0]!.bytes, expected))
  t.true(bytesEqual(c.retained()!.bytes, expected))
})

test('double buffer: training never waits; a queued capture is superseded by a newer one; none is torn', async t => {
  const p = blockingPlace()
  const c = createCapturer(p.place)
  const rng = Rng.fromSeed(2)
  const s = randomState(rng, 500, { step: 1 })
  const expect = new Map<number, Uint8Array>()
  const tickets = []
  for (let step = 1; step <= 5; step++) {
    s.step = step
    s.weights[0] = step
    expect.set(step, encodeState(s))
    // capture() returns synchronously even though placement of step 1 is blocked.
    tickets.push(c.capture(s))
    s.weights.fill(-step)
    await Promise.resolve()
  }
  // Step 1 is placing; 2, 3, 4 were each superseded by the next; 5 is queued.
  while (p.waiting() === 0) await Promise.resolve()
  p.releaseAll()
  while (p.waiting() === 0) await Promise.resolve()
  p.releaseAll()
  const outs = await Promise.all(tickets.map(x => x.done))
  t.deepEqual(
    outs.map(o => o.status),
    ['placed', 'superseded', 'superseded', 'superseded', 'placed']
  )
  t.deepEqual(
    p.placed.map(x => x.step),
    [1, 5]
  )
  for (const x of p.placed) t.true(bytesEqual(x.bytes, expect.get(x.step)!), `step ${x.step} is exactly what was captured`)
  await c.idle()
  t.is(c.retained()!.step, 5)
})

test('requeue re-places the newest placed copy; a failed placement keeps the previous retained copy', async t => {
  let fail = false
  const seen: number[] = []
  const c = createCapturer(async (sealed: Uint8Array) => {
    if (fail) throw new Error('holders gone')
    seen.push(decodeState(sealed).step)
  })
  const s = randomState(Rng.fromSeed(3), 100, { step: 1 })
  t.is((await c.capture(s).done).status, 'placed')
  fail = true
  s.step = 2
  const out = await c.capture(s).done
  t.is(out.status, 'failed')
  t.is(c.retained()!.step, 1)
  fail = false
  const again = c.requeue()!
  t.is((await again.done).status, 'placed')
  t.deepEqual(seen, [1, 1])
  c.stop()
})

test('stop aborts the placement in flight and fails queued captures', async t => {
  const c = createCapturer(async (_b: Uint8Array, signal: AbortSignal) => {
    await new Promise((_resolve, reject) => signal.addEventListener('abort', () => reject(signal.reason)))
  })
  const s = randomState(Rng.fromSeed(4), 10)
  const a = c.capture(s)
  await Promise.resolve()
  const b = c.capture({ ...s, step: 2 })
  c.stop()
  t.is((await a.done).status, 'failed')
  const ob = await b.done
  t.is(ob.status, 'failed')
  t.is(ob.status === 'failed' ? ob.error.name : '', 'AbortError')
})

test('a kept capture is never superseded by an ordinary one: those are skipped (nothing copied) while it waits; room() says when another kept one may come', async t => {
  const p = blockingPlace()
  const c = createCapturer(p.place)
  const s = randomState(Rng.fromSeed(5), 200, { step: 1 })
  const first = c.capture(s)
  await Promise.resolve()
  t.is(c.room(), undefined, 'nothing kept is waiting')
  s.step = 2
  const kept = c.capture(s, { keep: true })
  const room = c.room()
  t.not(room, undefined, 'the kept step 2 waits behind step 1')
  s.step = 3
  const skipped = c.capture(s)
  t.deepEqual(await skipped.done, { status: 'skipped', step: 3, by: 2 })
  let roomy = false
  void room!.then(() => {
    roomy = true
  })
  while (p.waiting() === 0) await Promise.resolve()
  p.releaseAll()
  t.is((await first.done).status, 'placed')
  // Step 2 is placing now: room again, and an ordinary capture queues behind it.
  while (p.waiting() === 0) await Promise.resolve()
  t.true(roomy)
  s.step = 4
  const after = c.capture(s)
  p.releaseAll()
  t.is((await kept.done).status, 'placed')
  while (p.waiting() === 0) await Promise.resolve()
  p.releaseAll()
  t.is((await after.done).status, 'placed')
  t.deepEqual(
    p.placed.map(x => x.step),
    [1, 2, 4]
  )
})

test('a kept capture supersedes an ordinary queued one', async t => {
  const p = blockingPlace()
  const c = createCapturer(p.place)
  const s = randomState(Rng.fromSeed(6), 100, { step: 1 })
  const first = c.capture(s)
  await Promise.resolve()
  s.step = 2
  const ordinary = c.capture(s)
  s.step = 3
  const kept = c.capture(s, { keep: true })
  t.deepEqual(await ordinary.done, { status: 'superseded', step: 2, by: 3 })
  while (p.waiting() === 0) await Promise.resolve()
  p.releaseAll()
  await first.done
  while (p.waiting() === 0) await Promise.resolve()
  p.releaseAll()
  t.is((await kept.done).status, 'placed')
  t.deepEqual(
    p.placed.map(x => x.step),
    [1, 3]
  )
})

test('a kept copy re-queued after a view change stays kept: an ordinary capture behind it is skipped', async t => {
  const p = blockingPlace()
  const c = createCapturer(p.place)
  const s = randomState(Rng.fromSeed(7), 100, { step: 5 })
  const kept = c.capture(s, { keep: true })
  while (p.waiting() === 0) await Promise.resolve()
  p.releaseAll()
  t.is((await kept.done).status, 'placed')
  s.step = 6
  const six = c.capture(s)
  while (p.waiting() === 0) await Promise.resolve()
  // Step 6 is placing; the view changes: the newest placed copy (the kept step 5) is re-queued.
  const again = c.requeue()!
  t.is(again.step, 5)
  s.step = 7
  t.deepEqual(await c.capture(s).done, { status: 'skipped', step: 7, by: 5 })
  p.releaseAll()
  t.is((await six.done).status, 'placed')
  while (p.waiting() === 0) await Promise.resolve()
  p.releaseAll()
  t.is((await again.done).status, 'placed')
  t.deepEqual(
    p.placed.map(x => x.step),
    [5, 6, 5]
  )
})
