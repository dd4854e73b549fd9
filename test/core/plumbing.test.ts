import test from 'ava'
import { Writable } from 'node:stream'
import {
  createLogger,
  componentLogger,
  createMetricsRegistry,
  defineCounter,
  defineGauge,
  defineHistogram,
  checkCap,
  LimitExceededError,
  ProtocolError,
  InvalidArgumentError,
  ZeromeshError,
  throwIfAborted
} from '../../core/index.ts'

test('errors carry stable names, codes and actions', t => {
  const e = new ProtocolError('FRAME_TOO_LARGE', 'too big', { bytes: 5 })
  t.is(e.name, 'ProtocolError')
  t.is(e.code, 'FRAME_TOO_LARGE')
  t.is(e.action, 'reject')
  t.true(e instanceof ZeromeshError)
  t.is(new InvalidArgumentError('x').name, 'InvalidArgumentError')
  t.is(InvalidArgumentError.name, 'InvalidArgumentError')
  const l = t.throws(() => checkCap('things', 11, 10), { instanceOf: LimitExceededError })
  t.deepEqual([l.limit, l.value, l.cap], ['things', 11, 10])
  t.throws(() => checkCap('things', Number.NaN, 10), { instanceOf: LimitExceededError }, 'NaN never passes a cap')
  t.notThrows(() => checkCap('things', 10, 10))
  t.throws(() => throwIfAborted(AbortSignal.abort()), { name: 'AbortError' })
})

test('logger writes structured JSON lines with component names and redacts secrets', t => {
  const lines: string[] = []
  const sink = new Writable({
    write(chunk, _enc, cb) {
      lines.push(String(chunk))
      cb()
    }
  })
  const log = componentLogger(createLogger({ name: 'n1', level: 'debug', destination: sink }), 'mesh:gossip')
  log.info({ peer: 'abc', runSecret: 'hunter2' }, 'joined')
  log.trace('hidden below level')
  t.is(lines.length, 1)
  const rec = JSON.parse(lines[0]!)
  t.is(rec.msg, 'joined')
  t.is(rec.component, 'mesh:gossip')
  t.is(rec.node, 'n1')
  t.is(rec.runSecret, '[redacted]')
  t.false(lines[0]!.includes('hunter2'))
})

test('metrics live in per-node registries and names must carry units', async t => {
  const a = createMetricsRegistry()
  const b = createMetricsRegistry()
  const ca = defineCounter(a, { name: 'zeromesh_frames_total', help: 'frames', labelNames: ['dir'] })
  defineCounter(b, { name: 'zeromesh_frames_total', help: 'frames' })
  ca.inc({ dir: 'in' }, 3)
  defineGauge(a, { name: 'zeromesh_buffered_bytes', help: 'bytes' }).set(7)
  defineHistogram(a, { name: 'zeromesh_decode_seconds', help: 'time' }).observe(0.01)
  const text = await a.metrics()
  t.regex(text, /zeromesh_frames_total\{dir="in"\} 3/)
  t.regex(text, /zeromesh_buffered_bytes 7/)
  t.regex(await b.metrics(), /zeromesh_frames_total 0/)
  t.throws(() => defineCounter(a, { name: 'zeromesh_frames', help: 'no unit' }), { name: 'InvalidArgumentError' })
  t.throws(() => defineCounter(a, { name: 'frames_total', help: 'no prefix' }), { name: 'InvalidArgumentError' })
})
