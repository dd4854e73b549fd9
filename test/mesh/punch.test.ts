// TCP hole punching's socket part (mesh/punch.ts) on loopback: connect() from the port the plan
// names, again until the far end answers; with nobody there it gives up with a typed error.
// Loopback refuses a SYN at once, so two ends never meet in a simultaneous open here: that is
// tested through real NAT routers in test/zones/nat.test.ts.
import test from 'ava'
import { createServer, type Socket } from 'node:net'
import { RealClock } from '../../core/index.ts'
import { freePort, PunchFailedError, simultaneousOpen } from '../../mesh/index.ts'

const clock = new RealClock()

test('the punch keeps trying from the port it named until the far end answers (a true simultaneous open needs a NAT that drops the first SYN: test/zones/nat.test.ts)', async t => {
  const host = '127.0.0.1'
  const [pa, pb] = [await freePort(host), await freePort(host)]
  // The far end shows up 300 ms late: the first tries are refused, a later one connects.
  const far = createServer()
  const accepted = new Promise<Socket>(resolve => far.once('connection', resolve))
  clock.setTimeout(() => far.listen(pb, host), 300)
  const a = await simultaneousOpen({ localHost: host, localPort: pa, remoteHost: host, remotePort: pb }, { clock, retryMs: 50 })
  const b = await accepted
  t.is(a.localPort, pa, 'the connection leaves from the port the plan named')
  t.is(b.remotePort, pa)
  const got = new Promise<string>(resolve => b.once('data', d => resolve(String(d))))
  a.write('through the punched connection')
  t.is(await got, 'through the punched connection')
  a.destroy()
  b.destroy()
  far.close()
})

test('with nobody connecting back, the punch gives up at its deadline with PunchFailedError', async t => {
  const host = '127.0.0.1'
  const [pa, pb] = [await freePort(host), await freePort(host)]
  const err = await t.throwsAsync(
    simultaneousOpen({ localHost: host, localPort: pa, remoteHost: host, remotePort: pb }, { clock, deadlineMs: 600, retryMs: 100 }),
    {
      instanceOf: PunchFailedError
    }
  )
  t.regex(err.message, /after \d+ tries \(last: ECONNREFUSED\)/)
})

test('an aborted punch stops at once with AbortError', async t => {
  const host = '127.0.0.1'
  const [pa, pb] = [await freePort(host), await freePort(host)]
  await t.throwsAsync(simultaneousOpen({ localHost: host, localPort: pa, remoteHost: host, remotePort: pb }, { clock, signal: AbortSignal.abort() }), {
    name: 'AbortError'
  })
})
