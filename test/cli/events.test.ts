import test from 'ava'
import { NODE_EVENT_LIMITS, encodeNodeEvent, parseNodeEvent, type NodeEvent } from '../../node/index.ts'
import { renderNodeEvent } from '../../cli/render.ts'
import { eventLines, type Worker, type WorkerSinks } from '../../cli/up/workers.ts'
import { RealClock } from '../../core/index.ts'

const step: NodeEvent = { type: 'step', step: 5, steps: 12, loss: 4.123456, rank: 1, worldSize: 4, tokensPerS: 1234.4 }

test('every event survives its JSON line; NaN figures travel as null and render as NaN', t => {
  const events: NodeEvent[] = [
    { type: 'kernels', seconds: 1.25 },
    { type: 'training', model: 'mini', source: 'Brown Corpus', vocabSize: 300, backend: 'CPU' },
    { type: 'started', version: '0.1.0', peerId: 'p', run: 'r', zone: 'z', host: 'h', dataDir: '/d', multiaddrs: ['/ip4/127.0.0.1/tcp/1/p2p/p'] },
    { type: 'view', epoch: 2, members: 4, rank: 3 },
    { type: 'view', epoch: 3, members: 1 },
    { type: 'paused', paused: true },
    step,
    { type: 'recovery', mode: 'replace', lost: [1], fromStep: 4, ms: 310, worldSize: 4 },
    { type: 'memory', shard: 1, model: 2, inFlightPeak: 3, full: 16 },
    { type: 'done', step: 12, loss: 3.5, evalLoss: 3.75 },
    { type: 'spare' },
    { type: 'failed', message: 'boom' },
    { type: 'stopping' }
  ]
  for (const e of events) {
    const parsed = parseNodeEvent(encodeNodeEvent(e))
    t.deepEqual(parsed, { ok: true, event: e }, e.type)
  }
  const nan = parseNodeEvent(encodeNodeEvent({ ...step, loss: Number.NaN }))
  t.true(nan.ok)
  if (nan.ok) t.deepEqual(renderNodeEvent(nan.event), ['step 5/12 loss NaN (rank 1 of 4, 1234 tokens/s)'])
})

test('the renderer writes the lines start has always printed', t => {
  t.deepEqual(renderNodeEvent({ ...step, steps: 200 }), [])
  t.deepEqual(renderNodeEvent({ ...step, step: 12 }), ['step 12/12 loss 4.1235 (rank 1 of 4, 1234 tokens/s)'])
  t.deepEqual(renderNodeEvent({ ...step, steps: 200, step: 10 }), ['step 10/200 loss 4.1235 (rank 1 of 4, 1234 tokens/s)'])
  t.deepEqual(renderNodeEvent({ ...step, steps: 200, step: 11 }), [])
  t.deepEqual(renderNodeEvent({ type: 'view', epoch: 2, members: 1, rank: 0 }), ['view 2: 1 member, this node is rank 0'])
  t.deepEqual(renderNodeEvent({ type: 'view', epoch: 3, members: 4 }), ['view 3: 4 members, this node is not a member'])
  t.deepEqual(renderNodeEvent({ type: 'done', step: 12, loss: 3.5 }), ['training done: 12 steps, loss 3.5000'])
  t.deepEqual(renderNodeEvent({ type: 'done', step: 12, loss: 3.5, evalLoss: 3.75 }), ['training done: 12 steps, loss 3.5000, held-out loss 3.7500'])
  const started = renderNodeEvent({
    type: 'started',
    version: '0.1.0',
    peerId: 'p',
    run: 'r',
    zone: 'z',
    host: 'h',
    dataDir: '/d',
    multiaddrs: ['/ip4/0.0.0.0/tcp/1/p2p/p', '/ip4/10.0.0.1/tcp/1/p2p/p']
  })
  t.deepEqual(started, [
    'zeromesh 0.1.0: node p in run r (zone z, host h)',
    'data dir /d',
    'listening on:',
    '  /ip4/0.0.0.0/tcp/1/p2p/p',
    '  /ip4/10.0.0.1/tcp/1/p2p/p',
    'others join with:',
    '  npx zeromesh start --run r --secret-file <the same secret> --bootstrap /ip4/10.0.0.1/tcp/1/p2p/p'
  ])
})

test('a line that is not an event is refused by the schema: not JSON, unknown type, extra key, wrong type, too long', t => {
  for (const line of [
    'step 5/12 loss 4.1235 (rank 1 of 4, 1234 tokens/s)',
    '{"type":"frobnicate"}',
    '{"type":"stopping","extra":1}',
    '{"type":"view","epoch":"2","members":4}',
    '{"type":"view","epoch":-1,"members":4}',
    JSON.stringify({ type: 'failed', message: 'x'.repeat(NODE_EVENT_LIMITS.maxLineBytes) })
  ]) {
    const r = parseNodeEvent(line)
    t.false(r.ok, line.slice(0, 80))
  }
  t.true(parseNodeEvent('{"type":"stopping"}').ok, 'positive control')
})

test('up reports the first malformed worker line once and keeps reading events after it', t => {
  const said: string[] = []
  const logged: string[] = []
  const sinks: WorkerSinks = {
    clock: new RealClock(),
    log: {
      write: (l: string) => {
        logged.push(l)
        return true
      }
    },
    stamping: () => false,
    say: l => said.push(l)
  }
  const w = { name: 'w1', recoveries: [], tail: [], afterKill: [] } as unknown as Worker
  const feed = eventLines(w, sinks, '/tmp/workers.log')
  feed('garbage')
  feed('{"type":"view","epoch":1}')
  feed(encodeNodeEvent({ type: 'recovery', mode: 'shrink', lost: [2], fromStep: 3, ms: 5, worldSize: 3 }))
  feed(encodeNodeEvent({ type: 'done', step: 12, loss: 3.5, evalLoss: 3.75 }))
  t.is(said.length, 1)
  t.regex(said[0]!, /^w1: ignored an output line that is not a node event \(not JSON/)
  t.is(logged.filter(l => l.includes('not an event')).length, 2)
  t.is(w.recoveries.length, 1)
  t.is(w.done?.evalLoss, 3.75)
  t.true(logged.includes('w1: training done: 12 steps, loss 3.5000, held-out loss 3.7500\n'))
})
