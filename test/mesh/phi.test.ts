import test from 'ava'
import { PhiDetector, phiOf, silenceFor } from '../../mesh/index.ts'

test('phi stays low while heartbeats keep their rhythm and grows with silence', t => {
  const d = new PhiDetector({ firstIntervalMs: 100, minStdMs: 20 })
  for (let i = 0; i <= 50; i++) d.heartbeat(i * 100)
  t.is(Math.round(d.mean()), 100)
  t.true(d.phi(5000 + 50) < 0.5, 'half a period late is nothing')
  t.false(d.suspect(5000 + 150))
  const bound = d.silenceToSuspectMs()
  t.true(d.suspect(5000 + bound + 1), 'suspected just after the bound')
  t.false(d.suspect(5000 + bound - 1), 'not just before it')
  let last = 0
  for (let s = 0; s <= 1000; s += 10) {
    const p = d.phi(5000 + s)
    t.true(p >= last, `phi is monotone in silence (at ${s} ms)`)
    last = p
  }
})

test('the detector adapts: jittery intervals widen the bound; the std floor keeps loopback sane', t => {
  const steady = new PhiDetector({ firstIntervalMs: 100, minStdMs: 5 })
  const jittery = new PhiDetector({ firstIntervalMs: 100, minStdMs: 5 })
  for (let i = 1, ts = 0, tj = 0; i <= 100; i++) {
    steady.heartbeat((ts += 100))
    jittery.heartbeat((tj += i % 2 === 0 ? 40 : 160))
  }
  t.true(jittery.silenceToSuspectMs() > steady.silenceToSuspectMs() * 1.5)
  t.is(steady.std(), 5, 'zero jitter falls back to the floor')
  t.throws(() => new PhiDetector({ firstIntervalMs: 0 }), { name: 'InvalidArgumentError' })
})

test('silenceFor inverts phiOf', t => {
  for (const [mean, std, threshold] of [
    [100, 20, 8],
    [500, 250, 8],
    [1000, 100, 3]
  ] as const) {
    const s = silenceFor(threshold, mean, std)
    t.true(Math.abs(phiOf(s, mean, std) - threshold) < 0.01, `${mean}/${std}/${threshold}`)
  }
  t.is(phiOf(0, 100, 20), phiOf(0, 100, 20))
})
