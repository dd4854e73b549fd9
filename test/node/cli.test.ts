import test from 'ava'
import { execFile } from 'node:child_process'
import { promisify } from 'node:util'
import { fileURLToPath } from 'node:url'
import { main } from '../../node/cli.ts'
import { VERSION } from '../../core/index.ts'

const run = promisify(execFile)
const bin = fileURLToPath(new URL('../../bin/zeromesh.js', import.meta.url))

async function capture (argv: string[]): Promise<{ code: number, out: string[], err: string[] }> {
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
  const bad = await run(process.execPath, [bin, 'nope']).catch((e: { code: number, stderr: string }) => e)
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
  t.regex(gpu, /^(ok {4}gpu +\S.*CUDA \S+, NVRTC \S+|warn  gpu +CUDA unavailable: .+)/)
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
