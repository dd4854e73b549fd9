import test from 'ava'
import { execFile } from 'node:child_process'
import { mkdtempSync, mkdirSync, symlinkSync, existsSync, rmSync, readdirSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { fileURLToPath } from 'node:url'
import { VERSION } from '../../core/index.ts'
import { createErasureCoder } from '../../codec/index.ts'

const run = promisify(execFile)
const root = fileURLToPath(new URL('../..', import.meta.url))

// Node refuses to strip types under node_modules, so an installed zeromesh must run from the
// dist/ that `prepack` builds. This packs the real tarball and runs its CLI from node_modules.
test('the packed tarball installs as a dependency and its CLI runs --version', async t => {
  const dir = mkdtempSync(join(tmpdir(), 'zeromesh-pack-'))
  try {
    const npm = process.platform === 'win32' ? 'npm.cmd' : 'npm'
    const { stdout } = await run(npm, ['pack', '--silent', '--pack-destination', dir], { cwd: root, maxBuffer: 16 * 1024 * 1024 })
    const tarball = join(dir, stdout.trim().split('\n').pop()!)
    t.true(existsSync(tarball), `npm pack wrote ${tarball}`)
    const pkg = join(dir, 'app', 'node_modules', 'zeromesh')
    mkdirSync(pkg, { recursive: true })
    await run('tar', ['-xzf', tarball, '-C', pkg, '--strip-components=1'])
    t.true(existsSync(join(pkg, 'dist', 'cli', 'index.js')), 'dist/ is in the tarball')
    t.false(existsSync(join(pkg, 'cli', 'index.ts')), 'TypeScript sources are not shipped')
    t.false(readdirSync(pkg).includes('test'), 'tests are not shipped')
    t.true(existsSync(join(pkg, 'sim', 'scenarios', 'split-brain.json')), 'example scenarios are shipped')
    t.true(existsSync(join(pkg, 'dist', 'gpu', 'cuda', 'kernels', 'attention.cu')), 'CUDA kernel sources are shipped beside the compiled backend')
    t.true(existsSync(join(pkg, 'dist', 'node', 'dashboard', 'assets', 'app.js')), "the dashboard's page is shipped beside its compiled server")
    // Dependencies resolve from the checkout's node_modules, as an install would provide them.
    symlinkSync(join(root, 'node_modules'), join(pkg, 'node_modules'), 'dir')
    const { stdout: version } = await run(process.execPath, [join(pkg, 'bin', 'zeromesh.js'), '--version'], { cwd: join(dir, 'app') })
    t.is(version.trim(), VERSION)
    // The built codec really works from dist (not just the version string).
    const probe = `import { createErasureCoder, encodeTensorFrames } from ${JSON.stringify(join(pkg, 'dist', 'codec', 'index.js'))}
      const c = createErasureCoder({ k: 2, m: 1 }); const p = c.encode([new Uint8Array([1]), new Uint8Array([2])])
      const f = encodeTensorFrames({ dtype: 'u8', shape: [1], data: new Uint8Array([7]) })
      console.log(p[0][0], f.length)`
    const { stdout: out } = await run(process.execPath, ['--input-type=module', '-e', probe], { cwd: join(dir, 'app') })
    const expected = createErasureCoder({ k: 2, m: 1 }).encode([new Uint8Array([1]), new Uint8Array([2])])[0]![0]
    t.is(out.trim(), `${expected} 1`, 'dist computes what the sources compute')
    // The snapshot coder's threads start from dist too: their entry resolves to the built .js.
    const threads = `import { createThreadCoder, encodeState } from ${JSON.stringify(join(pkg, 'dist', 'snapshot', 'index.js'))}
      const c = createThreadCoder({ threads: 1 }); const z = () => new Float32Array(8)
      const st = encodeState({ rank: 0, worldSize: 2, epoch: 1, step: 3, dataCursor: 0, weights: z(), adamM: z(), adamV: z(), rng: new Uint8Array(0) })
      const f = await c.stripe(st, { owner: 'p', rank: 0, epoch: 1, k: 2, m: 1, segmentBytes: 1024 }); c.stop()
      console.log(f.length, f[2].segments[0].length)`
    const { stdout: coded } = await run(process.execPath, ['--input-type=module', '-e', threads], { cwd: join(dir, 'app') })
    t.is(coded.trim(), '3 128', 'a 160-byte state codes into 3 fragments of one 48 + 80-byte frame on a thread started from dist')
    // The dashboard serves its page, script and uPlot from dist.
    const dash = `import { serveDashboard } from ${JSON.stringify(join(pkg, 'dist', 'node', 'dashboard', 'server.js'))}
      const s = await serveDashboard({ host: '127.0.0.1', port: 0 }, { state: () => ({}) })
      const codes = []
      for (const p of ['/', '/app.js', '/style.css', '/uplot.js', '/uplot.css']) codes.push((await fetch(s.url + p.slice(1))).status)
      await s.close(); console.log(codes.join(' '))`
    const { stdout: served } = await run(process.execPath, ['--input-type=module', '-e', dash], { cwd: join(dir, 'app') })
    t.is(served.trim(), '200 200 200 200 200', 'the dashboard page and its assets are served from an installed package')
  } finally {
    rmSync(dir, { recursive: true, force: true })
  }
})
