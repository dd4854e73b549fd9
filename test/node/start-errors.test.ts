import test from 'ava'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { createServer } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { main } from '../../cli/main.ts'
import { loadStartConfig } from '../../cli/start.ts'

async function run(argv: string[], env?: Record<string, string>): Promise<{ code: number; err: string[]; out: string[] }> {
  const err: string[] = []
  const out: string[] = []
  const saved = { ...process.env }
  Object.assign(process.env, env ?? {})
  try {
    const code = await main(argv, { out: l => out.push(l), err: l => err.push(l) })
    return { code, err, out }
  } finally {
    for (const k of Object.keys(env ?? {})) delete process.env[k]
    Object.assign(process.env, saved)
  }
}

const dir = mkdtempSync(join(tmpdir(), 'zm-cli-'))
const secret = join(dir, 'secret')
writeFileSync(secret, 'a secret that is long enough\n')
const short = join(dir, 'short')
writeFileSync(short, 'short\n')
test.after.always(() => rmSync(dir, { recursive: true, force: true }))

const base = ['start', '--run', 'r1', '--data-dir', join(dir, 'data'), '--listen', '/ip4/127.0.0.1/tcp/0']

for (const [name, argv, pattern] of [
  ['missing --run', ['start', '--secret-file', secret], /--run is required/],
  ['bad run id', ['start', '--run', 'a b', '--secret-file', secret], /--run run ids are/],
  ['bad multiaddr', [...base, '--secret-file', secret, '--bootstrap', 'not-an-address'], /--bootstrap .*not a multiaddr/],
  ['bootstrap without a peer id', [...base, '--secret-file', secret, '--bootstrap', '/ip4/127.0.0.1/tcp/1'], /bad bootstrap multiaddr .*no \/p2p/],
  ['unreadable secret', [...base, '--secret-file', join(dir, 'nope')], /cannot read secret file .*ENOENT/],
  ['short secret', [...base, '--secret-file', short], /at least 16/],
  ['unknown flag', [...base, '--secret-file', secret, '--colour'], /Unknown option '--colour'/],
  ['bad integer', [...base, '--secret-file', secret, '--expect', 'many'], /--expect must be an integer/],
  ['out of range', [...base, '--secret-file', secret, '--heartbeat-ms', '1'], /--heartbeat-ms/]
] as Array<[string, string[], RegExp]>) {
  test(`start refuses ${name} with one line and a non-zero exit`, async t => {
    const r = await run(argv)
    t.not(r.code, 0)
    t.is(r.err.length, 1, r.err.join('\n'))
    t.regex(r.err[0]!, pattern)
  })
}

test('a port in use is one clear line', async t => {
  const blocker = createServer()
  await new Promise<void>(resolve => blocker.listen(0, '127.0.0.1', resolve))
  const port = (blocker.address() as { port: number }).port
  try {
    const r = await run(['start', '--run', 'r2', '--data-dir', join(dir, 'd2'), '--secret-file', secret, '--listen', `/ip4/127.0.0.1/tcp/${port}`])
    t.is(r.code, 2)
    t.regex(r.err[0]!, /address is in use/)
  } finally {
    blocker.close()
  }
})

test('status without a running node says so', async t => {
  const r = await run(['status', '--data-dir', join(dir, 'empty')])
  t.is(r.code, 1)
  t.regex(r.err[0]!, /no zeromesh node is running with data dir/)
  t.is((await run(['status'])).code, 2)
})

test('config precedence: flags over env over file; unknown file keys are refused', t => {
  const file = join(dir, 'cfg.json')
  writeFileSync(file, JSON.stringify({ run: 'from-file', secretFile: secret, zone: 'file-zone', expect: 3 }))
  const cfg = loadStartConfig(
    { config: file, zone: 'flag-zone' },
    { ZEROMESH_EXPECT: '5', ZEROMESH_BOOTSTRAP: '/ip4/1.2.3.4/tcp/1/p2p/12D3KooWBvL1M6Wbj4ct6qsVjyPrfVPT7xbmjFVSVZmRwa5UsWis' }
  )
  t.is(cfg.run, 'from-file')
  t.is(cfg.zone, 'flag-zone')
  t.is(cfg.expect, 5)
  t.is(cfg.bootstrap.length, 1)
  t.is(cfg.heartbeatMs, 500)
  writeFileSync(file, JSON.stringify({ run: 'x', secretFile: secret, colour: 'blue' }))
  t.throws(() => loadStartConfig({ config: file }, {}), { name: 'ConfigError', message: /colour/ })
  writeFileSync(file, '{not json')
  t.throws(() => loadStartConfig({ config: file }, {}), { name: 'ConfigError', message: /not valid JSON/ })
})

// Unbounded reads (the house's attack: /dev/zero and a huge file where a small file belongs):
// refused before a byte is read, exit 2, one line naming the file.
const bigConfig = join(dir, 'big.json')
writeFileSync(bigConfig, `{"run": "${'x'.repeat(2 * 1024 * 1024)}"}`)
for (const [name, argv, pattern] of [
  ['--secret-file /dev/zero', [...base, '--secret-file', '/dev/zero'], /secret file \/dev\/zero is not a regular file/],
  ['a directory as --secret-file', [...base, '--secret-file', dir], /secret file .* is not a regular file \(a directory\)/],
  ['a 2 MiB --config', ['start', '--config', bigConfig], /config file bytes 2097\d+ exceeds the cap of 1048576/],
  ['--config /dev/zero', ['start', '--config', '/dev/zero'], /config file \/dev\/zero is not a regular file/],
  ['--data /dev/zero', [...base, '--secret-file', secret, '--train', '--data', '/dev/zero'], /data file \/dev\/zero is not a regular file/],
  ['a directory as --data', [...base, '--secret-file', secret, '--train', '--data', dir], /data file .* is not a regular file \(a directory\)/],
  ['a missing --data', [...base, '--secret-file', secret, '--train', '--data', join(dir, 'missing.txt')], /cannot read data file .*ENOENT/],
  // Node's recursive mkdir never returns under /proc.
  [
    'a --data-dir under /proc',
    ['start', '--run', 'r1', '--secret-file', secret, '--data-dir', '/proc/zeromesh/data'],
    /cannot create data dir \/proc\/zeromesh\/data: ENOENT/
  ]
] as Array<[string, string[], RegExp]>) {
  test(`start refuses ${name} at once: exit 2, one line`, async t => {
    const r = await run(argv)
    t.is(r.code, 2, r.err.join('\n'))
    t.is(r.err.length, 1, r.err.join('\n'))
    t.regex(r.err[0]!, pattern)
  })
}

test('a config file value of the wrong type is named as the file\'s key, not as a flag that is "required"', async t => {
  const cfg = join(dir, 'wrong-types.json')
  writeFileSync(cfg, JSON.stringify({ run: 5, secretFile: secret }))
  const r = await run(['start', '--config', cfg])
  t.is(r.code, 2)
  t.is(r.err.length, 1, r.err.join('\n'))
  t.regex(r.err[0]!, /config file .*wrong-types\.json: "run" \(--run\): .*expected string, received number/)
  t.notRegex(r.err[0]!, /is required/)
})

test('status of a control socket that answers JSON of another shape is one line naming the node, not a raw TypeError', async t => {
  const { createServer: httpServer } = await import('node:http')
  const { mkdirSync } = await import('node:fs')
  const { CONTROL_SOCKET } = await import('../../node/control.ts')
  const node = join(dir, 'odd-node')
  mkdirSync(node, { recursive: true })
  const server = httpServer((_req, res) => res.writeHead(200, { 'content-type': 'application/json' }).end('{"hello": "world"}'))
  await new Promise<void>(resolve => server.listen(join(node, CONTROL_SOCKET), resolve))
  try {
    const r = await run(['status', '--data-dir', node])
    t.is(r.code, 1)
    t.is(r.err.length, 1, r.err.join('\n'))
    t.regex(r.err[0]!, /the node at .*odd-node answered a status this zeromesh cannot read/)
    t.notRegex(r.err[0]!, /TypeError/)
    const raw = await run(['status', '--data-dir', node, '--json'])
    t.is(raw.code, 0)
  } finally {
    await new Promise<void>(resolve => server.close(() => resolve()))
  }
})
