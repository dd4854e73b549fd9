import test from 'ava'
import { ManualClock, RealClock, AbortError, LimitExceededError, CORE_LIMITS } from '../../core/index.ts'

test('manual clock fires timers in (due time, creation) order and moves time to each', t => {
  const clock = new ManualClock()
  const fired: string[] = []
  clock.setTimeout(() => fired.push(`b@${clock.monotonic()}`), 20)
  clock.setTimeout(() => fired.push(`a@${clock.monotonic()}`), 10)
  clock.setTimeout(() => fired.push(`c@${clock.monotonic()}`), 20)
  const cancelled = clock.setTimeout(() => fired.push('never'), 15)
  clock.clearTimeout(cancelled)
  clock.advance(19)
  t.deepEqual(fired, ['a@10'])
  t.is(clock.monotonic(), 19)
  clock.advance(1)
  t.deepEqual(fired, ['a@10', 'b@20', 'c@20'])
  t.is(clock.pending, 0)
})

test('manual clock fires timers scheduled by timers within the same advance', t => {
  const clock = new ManualClock()
  const at: number[] = []
  const tick = (): void => {
    at.push(clock.monotonic())
    if (at.length < 5) clock.setTimeout(tick, 10)
  }
  clock.setTimeout(tick, 10)
  clock.advance(100)
  t.deepEqual(at, [10, 20, 30, 40, 50])
  t.is(clock.now() - clock.monotonic(), new ManualClock().now())
})

test('manual clock rejects negative or non-finite moves', t => {
  const clock = new ManualClock()
  t.throws(() => clock.advance(-1), { name: 'InvalidArgumentError' })
  t.throws(() => clock.setTimeout(() => {}, Number.NaN), { name: 'InvalidArgumentError' })
})

test('sleep resolves on advanceAsync and rejects promptly on abort', async t => {
  const clock = new ManualClock()
  const order: string[] = []
  const loop = (async () => {
    for (let i = 0; i < 3; i++) {
      await clock.sleep(100)
      order.push(`tick ${clock.monotonic()}`)
    }
  })()
  await clock.advanceAsync(300)
  await loop
  t.deepEqual(order, ['tick 100', 'tick 200', 'tick 300'])

  const ac = new AbortController()
  const p = clock.sleep(1000, { signal: ac.signal })
  ac.abort()
  const err = await t.throwsAsync(p)
  t.true(err instanceof AbortError)
  t.is(clock.pending, 0, 'the aborted sleep left no timer behind')
  await t.throwsAsync(clock.sleep(5, { signal: AbortSignal.abort() }), { name: 'AbortError' })
})

test('real clock sleeps and cancels', async t => {
  const clock = new RealClock()
  const t0 = clock.monotonic()
  await clock.sleep(15)
  t.true(clock.monotonic() - t0 >= 14)
  let fired = false
  const id = clock.setTimeout(() => {
    fired = true
  }, 5)
  clock.clearTimeout(id)
  // The positive control: a timer set after it for a later time does fire; timers of one
  // clock fire in due order, so by then the cancelled one would have fired.
  let control = false
  await new Promise<void>(resolve =>
    clock.setTimeout(() => {
      control = true
      resolve()
    }, 10)
  )
  t.true(control, 'the uncancelled timer fired')
  t.false(fired, 'the cancelled timer did not')
  t.true(Math.abs(clock.now() - Date.now()) < 1000)
})

test('manual clock timer count is capped (limit: maxManualTimers)', t => {
  const clock = new ManualClock()
  for (let i = 0; i < CORE_LIMITS.maxManualTimers; i++) clock.setTimeout(() => {}, i)
  const err = t.throws(() => clock.setTimeout(() => {}, 1))
  t.true(err instanceof LimitExceededError)
})

test('a manual clock can carry its own timer cap', t => {
  const clock = new ManualClock({ maxTimers: 3 })
  for (let i = 0; i < 3; i++) clock.setTimeout(() => {}, i)
  t.throws(() => clock.setTimeout(() => {}, 1), { instanceOf: LimitExceededError })
  clock.advance(10)
  t.notThrows(() => clock.setTimeout(() => {}, 1), 'fired timers free their slots')
})

test('turn: a real clock lets due I/O callbacks run before it resolves; a manual clock resolves when time is driven, without moving it', async t => {
  const real = new RealClock()
  // A chain of microtasks alone never lets an immediate run; a turn does.
  let immediate = false
  setImmediate(() => {
    immediate = true
  })
  for (let i = 0; i < 100; i++) await Promise.resolve()
  t.false(immediate, 'microtasks do not yield to the event loop')
  await real.turn()
  t.true(immediate, 'the turn let the pending immediate run first')

  const manual = new ManualClock()
  let turned = false
  void manual.turn().then(() => {
    turned = true
  })
  await Promise.resolve()
  t.false(turned, 'a manual turn waits for the clock to be driven')
  await manual.advanceAsync(0)
  t.true(turned)
  t.is(manual.monotonic(), 0, 'a turn takes no time')
})
