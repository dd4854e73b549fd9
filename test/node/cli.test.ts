import test from 'ava'
import { execFile } from 'node:child_process'
import { promisify } from 'node:util'
import { fileURLToPath } from 'node:url'
import { main } from '../../cli/main.ts'
import { VERSION } from '../../core/index.ts'

const run = promisify(execFile)
const bin = fileURLToPath(new URL('../../bin/zeromesh.js', import.meta.url))

async function capture(argv: string[]): Promise<{ code: number; out: string[]; err: string[] }> {
  const out: string[] = []
  const err: string[] = []
  const code = await main(argv, { out: l => out.push(l), err: l => err.push(l) })
  return { code, out, err }
}

test('--version and version print the package version', async t => {
  t.regex(VERSION, /^\d+\.\d+\.\d+/)
  t.deepEqual(await capture(['--version']), { code: 0, out: [VERSION], err: [] })
  t.deepEqual(await capture(['version']), { code: 0, out: [VERSION], err: [] })
})

test('help lists the commands; no command prints help and exits 2', async t => {
  const h = await capture(['--help'])
  t.is(h.code, 0)
  t.regex(h.out[0]!, /usage: zeromesh <command>/)
  t.is((await capture([])).code, 2)
  const c = await capture(['version', '--help'])
  t.is(c.code, 0)
  t.regex(c.out[0]!, /zeromesh version/)
})

test('bad commands and flags are one clear line and exit code 2', async t => {
  for (const argv of [['frobnicate'], ['version', '--bogus'], ['version', 'extra'], ['--version', 'x'], ['__proto__']]) {
    const r = await capture(argv)
    t.is(r.code, 2, argv.join(' '))
    t.is(r.err.length, 1, argv.join(' '))
    t.regex(r.err[0]!, /^zeromesh: /)
    t.false(r.err[0]!.includes('\n    at '), 'no stack trace')
  }
})

test('the bin launcher runs from source under Node 24', async t => {
  const { stdout } = await run(process.execPath, [bin, '--version'])
  t.is(stdout.trim(), VERSION)
  const bad = await run(process.execPath, [bin, 'nope']).catch((e: { code: number; stderr: string }) => e)
  t.is((bad as { code: number }).code, 2)
  t.regex((bad as { stderr: string }).stderr, /unknown command 'nope'/)
})

test('doctor prints one line per check and a verdict; it says plainly why CUDA is unavailable', async t => {
  const { mkdtempSync } = await import('node:fs')
  const { tmpdir } = await import('node:os')
  const { join } = await import('node:path')
  const dir = mkdtempSync(join(tmpdir(), 'zm-doctor-'))
  const r = await capture(['doctor', '--data-dir', dir, '--listen', '/ip4/127.0.0.1/tcp/0'])
  const names = r.out.slice(0, -1).map(l => l.split(/\s+/)[1])
  t.deepEqual(names, ['node', 'cpu', 'gpu', 'memory', 'data-dir', 'port', 'clock'])
  const gpu = r.out.find(l => / gpu /.test(l))!
  t.log(gpu)
  t.regex(gpu, /^(ok {4}gpu +\S.*CUDA \S+, NVRTC \S+|warn {2}gpu +CUDA unavailable: .+)/)
  t.is(r.code, 0, r.out.join('\n'))
  t.regex(r.out.at(-1)!, /^ready/)
  // A node that must use CUDA fails where there is none.
  const cuda = await capture(['doctor', '--data-dir', dir, '--device', 'cuda'])
  t.is(cuda.code, gpu.startsWith('ok') ? 0 : 1)
  // Bad flags are usage errors; an unreachable bootstrap peer fails the verdict.
  t.is((await capture(['doctor', '--device', 'tpu'])).code, 2)
  const down = await capture(['doctor', '--data-dir', dir, '--bootstrap', '/ip4/127.0.0.1/tcp/1/p2p/x'])
  t.is(down.code, 1)
  t.regex(down.out.find(l => / bootstrap /.test(l))!, /^fail .*unreachable/)
  t.regex(down.out.at(-1)!, /^not ready: bootstrap failed/)
})

test('start --help lists the metrics and disk-tier flags; export --help explains the command', async t => {
  const start = await capture(['start', '--help'])
  t.is(start.code, 0)
  for (const flag of ['--metrics-listen <host:port>', '--disk-every <n>', '--snapshot-every <n>', '--resume']) t.true(start.out[0]!.includes(flag), flag)
  const exp = await capture(['export', '--help'])
  t.is(exp.code, 0)
  t.regex(exp.out[0]!, /^zeromesh export --out <file\.safetensors> --data-dir <dir>/)
  for (const flag of ['--model <name>', '--data <file>', '--step <n>']) t.true(exp.out[0]!.includes(flag), flag)
  t.regex((await capture(['--help'])).out[0]!, /\n {2}export +write the trained model as safetensors/)
})

test('every option of every command is in its help, from the one spec: flag, default and (for start) its ZEROMESH_* name', async t => {
  const { START_OPTIONS } = await import('../../node/config.ts')
  const { START_CLI_OPTIONS } = await import('../../cli/start.ts')
  const { UP_OPTIONS } = await import('../../cli/up/command.ts')
  const { EXPORT_OPTIONS } = await import('../../cli/export/command.ts')
  const { DOCTOR_OPTIONS } = await import('../../cli/doctor/command.ts')
  const { SIM_OPTIONS } = await import('../../cli/sim.ts')
  const { STATUS_OPTIONS } = await import('../../cli/status.ts')
  const { flagOf, envOf } = await import('../../cli/flags.ts')
  for (const [cmd, specs, env] of [
    ['start', [START_OPTIONS, START_CLI_OPTIONS], true],
    ['up', [UP_OPTIONS], false],
    ['export', [EXPORT_OPTIONS], false],
    ['doctor', [DOCTOR_OPTIONS], false],
    ['sim', [SIM_OPTIONS], false],
    ['status', [STATUS_OPTIONS], false]
  ] as Array<[string, Array<Record<string, { help: string }>>, boolean]>) {
    const text = (await capture([cmd, '--help'])).out[0]!.replace(/\s+/g, ' ')
    for (const spec of specs) {
      for (const [key, o] of Object.entries(spec)) {
        t.true(text.includes(`--${flagOf(key)}`), `${cmd} --${flagOf(key)}`)
        t.true(text.includes(o.help.split(' ').slice(0, 4).join(' ')), `${cmd} --${flagOf(key)} description`)
        t.is(text.includes(envOf(key)), env, `${cmd} ${envOf(key)}`)
      }
    }
  }
  const start = (await capture(['start', '--help'])).out[0]!.replace(/\s+/g, ' ')
  for (const dflt of [
    'default 500; ZEROMESH_HEARTBEAT_MS',
    'default 2+1; ZEROMESH_SNAPSHOT',
    'required; ZEROMESH_RUN',
    'default /ip4/0.0.0.0/tcp/0; ZEROMESH_LISTEN'
  ])
    t.true(start.includes(dflt), dflt)
  const up = (await capture(['up', '--help'])).out[0]!.replace(/\s+/g, ' ')
  for (const dflt of [
    '--nodes <n> training ranks, one process each (default 4)',
    '--steps <n> steps to train (default 100)',
    '(mini, small or gpt2-124m; default mini)'
  ])
    t.true(up.includes(dflt), dflt)
  // A variable is read as the flag would be, and named in its error.
  const { loadStartConfig } = await import('../../cli/start.ts')
  t.is(loadStartConfig({ run: 'r', 'secret-file': '/x' }, { ZEROMESH_HEARTBEAT_MS: '250', ZEROMESH_MDNS: 'true' }).heartbeatMs, 250)
  t.throws(() => loadStartConfig({ run: 'r', 'secret-file': '/x' }, { ZEROMESH_HEARTBEAT_MS: 'soon' }), {
    name: 'ConfigError',
    message: /^ZEROMESH_HEARTBEAT_MS must be an integer in \[20, 60000\], got 'soon'$/
  })
  t.throws(() => loadStartConfig({ run: 'r', 'secret-file': '/x', events: 'xml' }, {}), {
    name: 'ConfigError',
    message: /^--events must be text or jsonl, got 'xml'$/
  })
})

test('--metrics-listen, --disk-every, --snapshot-every, --resume and --max-world-size are validated by the start schema', async t => {
  const { loadStartConfig } = await import('../../cli/start.ts')
  const base = { run: 'r', 'secret-file': '/nonexistent' }
  const cfg = loadStartConfig(base, {})
  t.is(cfg.metricsListen, undefined)
  t.is(cfg.diskEvery, 10)
  t.is(cfg.snapshotEvery, 1)
  t.is(loadStartConfig({ ...base, 'snapshot-every': '10' }, {}).snapshotEvery, 10)
  t.false(cfg.resume)
  t.deepEqual(loadStartConfig({ ...base, 'metrics-listen': '127.0.0.1:9464' }, {}).metricsListen, { host: '127.0.0.1', port: 9464 })
  t.deepEqual(loadStartConfig({ ...base, 'metrics-listen': '[::1]:0' }, {}).metricsListen, { host: '::1', port: 0 })
  t.deepEqual(loadStartConfig({ ...base, 'metrics-listen': ':9464' }, {}).metricsListen, { host: '0.0.0.0', port: 9464 })
  t.deepEqual(loadStartConfig(base, { ZEROMESH_METRICS_LISTEN: 'localhost:9000', ZEROMESH_DISK_EVERY: '0' }).metricsListen, { host: 'localhost', port: 9000 })
  t.is(loadStartConfig({ ...base, train: true, resume: true, 'disk-every': '25' }, {}).diskEvery, 25)
  t.is(loadStartConfig({ ...base, train: true, 'world-size': '2', 'max-world-size': '6' }, {}).maxWorldSize, 6)
  // Every optimizer is a start option (flag and env); another word names the choices.
  for (const o of ['adamw', 'lion', 'adamw8bit', 'lion8bit'] as const) t.is(loadStartConfig({ ...base, train: true, optimizer: o }, {}).optimizer, o)
  t.is(loadStartConfig({ ...base, train: true }, { ZEROMESH_OPTIMIZER: 'adamw8bit' }).optimizer, 'adamw8bit')
  t.is(loadStartConfig({ ...base, train: true }, { ZEROMESH_OPTIMIZER: 'lion8bit' }).optimizer, 'lion8bit')
  t.throws(() => loadStartConfig({ ...base, train: true, optimizer: 'adam8' }, {}), { name: 'ConfigError', message: /--optimizer.*adamw8bit.*lion8bit/ })
  // Zeroth-order training: off by default, ε 1e-3 unless --zo-eps; a bad ε is named.
  t.false(loadStartConfig({ ...base, train: true }, {}).zo)
  const zo = loadStartConfig({ ...base, train: true, zo: true, 'zo-eps': '0.01' }, {})
  t.true(zo.zo)
  t.is(zo.zoEps, 0.01)
  t.is(loadStartConfig({ ...base, train: true }, { ZEROMESH_ZO: 'true' }).zoEps, 1e-3)
  for (const eps of ['0', '-1', '2', 'small'])
    t.throws(() => loadStartConfig({ ...base, train: true, zo: true, 'zo-eps': eps }, {}), { name: 'ConfigError', message: /--zo-eps/ })
  // --offload and --device-memory: sizes with units; what does not combine is named.
  const off = loadStartConfig({ ...base, train: true, offload: 'cpu', 'offload-threads': '3', 'device-memory': '8GiB' }, {})
  t.is(off.offload, 'cpu')
  t.is(off.offloadThreads, 3)
  t.is(off.deviceMemory, 8 * 2 ** 30)
  t.is(loadStartConfig({ ...base, train: true }, {}).offload, 'none')
  for (const [size, bytes] of [
    ['500MB', 5e8],
    ['1.5gib', 1.5 * 2 ** 30],
    ['67108864', 2 ** 26]
  ] as const)
    t.is(loadStartConfig({ ...base, train: true, 'device-memory': size }, {}).deviceMemory, bytes)
  for (const size of ['0', '1KiB', '63MiB', '8 GB of it', '-1GiB', 'lots'])
    t.throws(() => loadStartConfig({ ...base, train: true, 'device-memory': size }, {}), {
      name: 'ConfigError',
      message: /--device-memory must be a size of at least 64 MiB/
    })
  t.throws(() => loadStartConfig({ ...base, train: true, offload: 'cpu', zo: true }, {}), {
    name: 'ConfigError',
    message: /--offload.*--zo run keeps no optimizer state/
  })
  t.throws(() => loadStartConfig({ ...base, train: true, 'offload-threads': '2' }, {}), {
    name: 'ConfigError',
    message: /--offload-threads needs --offload cpu/
  })
  t.throws(() => loadStartConfig({ ...base, train: true, offload: 'gpu' }, {}), { name: 'ConfigError', message: /--offload/ })
  for (const [flags, pattern] of [
    [{ 'metrics-listen': '9464' }, /^--metrics-listen must be host:port \(e\.g\. 127\.0\.0\.1:9464, \[::1\]:9464 or :9464\), got '9464'$/],
    [{ 'metrics-listen': '127.0.0.1:70000' }, /^--metrics-listen must be host:port/],
    [{ 'metrics-listen': '::1:9464' }, /^--metrics-listen must be host:port/],
    [{ 'metrics-listen': 'http://127.0.0.1:9464/metrics' }, /^--metrics-listen must be host:port/],
    [{ 'disk-every': '-1' }, /^--disk-every /],
    [{ 'disk-every': '2.5' }, /^--disk-every must be an integer/],
    [{ 'snapshot-every': '0' }, /^--snapshot-every /],
    [{ resume: true }, /^--resume needs --train/],
    [{ train: true, expect: '4', 'max-world-size': '3' }, /^--max-world-size must be at least the world size \(4\)$/],
    [{ 'max-world-size': '0' }, /^--max-world-size /]
  ] as Array<[Record<string, unknown>, RegExp]>) {
    t.throws(() => loadStartConfig({ ...base, ...flags }, {}), { name: 'ConfigError', message: pattern }, JSON.stringify(flags))
  }
  // On the command line: one line, exit 2.
  const r = await capture(['start', '--run', 'r', '--secret-file', '/nonexistent', '--metrics-listen', 'nope'])
  t.is(r.code, 2)
  t.deepEqual(r.err, ["zeromesh: --metrics-listen must be host:port (e.g. 127.0.0.1:9464, [::1]:9464 or :9464), got 'nope'"])
})

test('the DiLoCo flags: defaults, and the rules between them and the world size', async t => {
  const { loadStartConfig } = await import('../../cli/start.ts')
  const base = { run: 'r', 'secret-file': '/nonexistent', train: true }
  const cfg = loadStartConfig(base, {})
  t.is(cfg.outerEvery, undefined)
  t.deepEqual([cfg.outerZones, cfg.outerQuant, cfg.outerLr, cfg.outerMomentum, cfg.streaming], [2, 'int8', 0.7, 0.9, false])
  const on = loadStartConfig({ ...base, 'world-size': '6', 'outer-every': '50', 'outer-zones': '3', 'outer-quant': 'int4', streaming: true }, {})
  t.deepEqual([on.outerEvery, on.outerZones, on.outerQuant, on.streaming], [50, 3, 'int4', true])
  t.is(loadStartConfig({ ...base, 'snapshot-placement': 'spread' }, {}).snapshotPlacement, 'spread')
  for (const [flags, pattern] of [
    [{ 'world-size': '4', 'outer-every': '10', 'outer-zones': '3' }, /^--outer-zones must divide the world size \(4\) into equal zone groups$/],
    [{ streaming: true }, /^--streaming needs --outer-every$/],
    [{ 'world-size': '4', 'outer-every': '10', 'max-world-size': '8' }, /^--max-world-size growing the run does not combine with --outer-every yet$/],
    [{ 'outer-every': '0' }, /^--outer-every /],
    [{ 'outer-quant': 'int2' }, /^--outer-quant /],
    [{ 'snapshot-placement': 'rack' }, /^--snapshot-placement /]
  ] as Array<[Record<string, unknown>, RegExp]>) {
    t.throws(() => loadStartConfig({ ...base, ...flags }, {}), { name: 'ConfigError', message: pattern }, JSON.stringify(flags))
  }
})

test('export: bad flags exit 2, a data dir without disk-tier files exits 1, one line each', async t => {
  const { mkdtempSync, rmSync } = await import('node:fs')
  const { tmpdir } = await import('node:os')
  const { join } = await import('node:path')
  const dir = mkdtempSync(join(tmpdir(), 'zm-cli-export-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  const out = join(dir, 'model.safetensors')
  for (const [argv, pattern] of [
    [['export', '--data-dir', dir], /^zeromesh: export needs --out/],
    [['export', '--out', out], /^zeromesh: export needs --data-dir/],
    [['export', '--out', out, '--data-dir', dir, '--step', 'x'], /^zeromesh: --step must be an integer >= 0, got 'x'$/],
    [['export', '--out', out, '--data-dir', dir, '--model', 'gpt5'], /^zeromesh: --model must be mini, small or gpt2-124m/],
    [['export', '--out', out, '--data-dir', dir, 'extra'], /^zeromesh: Unexpected argument 'extra'/]
  ] as Array<[string[], RegExp]>) {
    const r = await capture(argv)
    t.is(r.code, 2, argv.join(' '))
    t.is(r.err.length, 1)
    t.regex(r.err[0]!, pattern)
  }
  const none = await capture(['export', '--out', out, '--data-dir', dir])
  t.is(none.code, 1)
  t.is(none.err.length, 1)
  t.regex(none.err[0]!, /^zeromesh: no disk-tier state files \(train\/step-\*\.zms\) in /)
})
