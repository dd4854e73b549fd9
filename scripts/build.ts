// Emits dist/ (JavaScript with .ts import extensions rewritten to .js, plus .d.ts) for the
// published package: Node will not strip types from files under node_modules.
import { cpSync, rmSync, statSync } from 'node:fs'
import { execFileSync } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import { join } from 'node:path'

const root = fileURLToPath(new URL('..', import.meta.url))
rmSync(new URL('../dist', import.meta.url), { recursive: true, force: true })
execFileSync(process.execPath, [join(root, 'node_modules', 'typescript', 'bin', 'tsc'), '-p', 'tsconfig.build.json'], { cwd: root, stdio: 'inherit' })

// CUDA kernel sources are read at run time, next to the compiled gpu/cuda/*.js.
cpSync(join(root, 'gpu', 'cuda', 'kernels'), join(root, 'dist', 'gpu', 'cuda', 'kernels'), {
  recursive: true,
  filter: src => statSync(src).isDirectory() || src.endsWith('.cu')
})

// The dashboard's page, script and style are served from beside the compiled node/dashboard/*.js.
cpSync(join(root, 'node', 'dashboard', 'assets'), join(root, 'dist', 'node', 'dashboard', 'assets'), { recursive: true })
