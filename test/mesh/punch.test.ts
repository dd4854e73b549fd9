// TCP hole punching's socket part (mesh/punch.ts) on loopback: connect() from the port the plan
// names, again until the far end answers; with nobody there it gives up with a typed error.
// Loopback refuses a SYN at once, so two ends never meet in a simultaneous open here: that is
// tested through real NAT routers in test/zones/nat.test.ts.
import test from 'ava'
import { createServer, type Socket } from 'node:net'
import { RealClock } from '../../core/index.ts'
import { multiaddr } from '@multiformats/multiaddr'
import { freePort, PunchFailedError, simultaneousOpen } from '../../mesh/index.ts'
import { dialable, isPrivateV4, onLink } from '../../mesh/libp2p/reach.ts'

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

test("a NATed peer's private addresses off this host's networks are not dialled when it has a relayed one; without one nothing is left out", t => {
  const relay =
    '/ip4/45.77.0.10/tcp/4001/p2p/12D3KooWQshnxaDmTgX4Pr8YtfCz4AoA3qYFF5wUczaBFGzjysLs/p2p-circuit/p2p/12D3KooWAsReqCcv29QyX6yf1zYWefeRWrTLj4eS3WedomnYeMda'
  const lan = (ip: string): string => `/ip4/${ip}/tcp/4001/p2p/12D3KooWAsReqCcv29QyX6yf1zYWefeRWrTLj4eS3WedomnYeMda`
  // 127.0.0.1 is not private; 10.255.254.253 and 172.31.254.253 sit on no interface of a test machine we know of.
  const offLink = ['10.255.254.253', '172.31.254.253', '192.168.254.253'].filter(ip => !onLink(ip))
  const addrs = [...offLink.map(lan), lan('45.77.0.20'), relay].map(a => multiaddr(a))
  t.deepEqual(
    dialable(addrs).map(a => a.toString()),
    [lan('45.77.0.20'), relay],
    'off-link private addresses are dropped beside a relayed one'
  )
  const direct = addrs.filter(a => !a.toString().includes('p2p-circuit'))
  t.is(dialable(direct).length, direct.length, 'without a relayed address every address is kept')
  t.true(isPrivateV4('172.16.0.1') && isPrivateV4('172.31.255.255') && !isPrivateV4('172.32.0.1') && !isPrivateV4('8.8.8.8') && isPrivateV4('192.168.1.1'))
})
