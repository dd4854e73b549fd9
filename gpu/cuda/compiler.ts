import { createHash } from 'node:crypto'
import { mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs'
import { homedir } from 'node:os'
import { join } from 'node:path'
import { KernelCompileError } from '../errors.ts'
import { type CudaLibs, checkCu, checkNvrtc, type Handle } from './ffi.ts'

/**
 * NVRTC compilation with an on-disk cubin cache keyed by sha256(source + options), the target
 * architecture and the NVRTC version. Kernel files are CUDA C under ./kernels/, one family per
 * file, each compiled with ./kernels/prelude.cu prepended (NVRTC then needs no include path).
 */

const KERNEL_DIR = new URL('./kernels/', import.meta.url)

/** Reads a kernel family's source, prelude included. */
export function kernelSource(family: string): string {
  const prelude = readFileSync(new URL('prelude.cu', KERNEL_DIR), 'utf8')
  return prelude + '\n' + readFileSync(new URL(`${family}.cu`, KERNEL_DIR), 'utf8')
}

/** Where cubins are cached: $ZEROMESH_CACHE_DIR/cubin, else ~/.cache/zeromesh/cubin. */
export function defaultCubinCacheDir(): string {
  const base = process.env['ZEROMESH_CACHE_DIR'] ?? join(homedir(), '.cache', 'zeromesh')
  return join(base, 'cubin')
}

export interface CompileOptions {
  /** Adds --use_fast_math (approximate exp/div, flush-to-zero). Never for the quantizers. */
  fastMath?: boolean
}

export class KernelCompiler {
  private readonly libs: CudaLibs
  private readonly arch: string
  private readonly cacheDir: string | null
  private readonly nvrtcVersion: string
  /** Compile statistics, for logs and the benchmark. */
  readonly stats = { compiled: 0, cacheHits: 0, compileMs: 0 }

  constructor(libs: CudaLibs, arch: string, cacheDir: string | null) {
    this.libs = libs
    this.arch = arch
    const maj = [0]
    const min = [0]
    checkNvrtc(libs, 'nvrtcVersion', libs.nvrtc().nvrtcVersion(maj, min))
    this.nvrtcVersion = `${maj[0]!}.${min[0]!}`
    let dir = cacheDir
    if (dir !== null) {
      try {
        mkdirSync(dir, { recursive: true })
      } catch {
        dir = null // an unwritable cache only costs compile time
      }
    }
    this.cacheDir = dir
  }

  /** Compiles (or loads from the cache) `source` and returns its cubin. */
  cubin(name: string, source: string, opts: CompileOptions = {}): Buffer {
    const options = [`-arch=${this.arch}`, '-std=c++17']
    if (opts.fastMath === true) options.push('--use_fast_math')
    const hash = createHash('sha256').update(source).update('\0').update(options.join(' ')).digest('hex').slice(0, 24)
    const file = this.cacheDir === null ? null : join(this.cacheDir, `${name}-${hash}-${this.arch}-nvrtc${this.nvrtcVersion}.cubin`)
    if (file !== null) {
      try {
        const b = readFileSync(file)
        this.stats.cacheHits++
        return b
      } catch {
        /* not cached yet */
      }
    }
    const t0 = performance.now()
    const nv = this.libs.nvrtc()
    const prog: Handle[] = [null]
    checkNvrtc(this.libs, 'nvrtcCreateProgram', nv.nvrtcCreateProgram(prog, source, `${name}.cu`, 0, null, null))
    try {
      const rc = nv.nvrtcCompileProgram(prog[0], options.length, options) as number
      if (rc !== 0) {
        const log = this.programLog(prog[0])
        throw new KernelCompileError(name, log === '' ? `nvrtcCompileProgram returned ${rc}` : log)
      }
      const size = [0]
      checkNvrtc(this.libs, 'nvrtcGetCUBINSize', nv.nvrtcGetCUBINSize(prog[0], size))
      const cubin = Buffer.alloc(Number(size[0]))
      checkNvrtc(this.libs, 'nvrtcGetCUBIN', nv.nvrtcGetCUBIN(prog[0], cubin))
      this.stats.compiled++
      this.stats.compileMs += performance.now() - t0
      if (file !== null) {
        try {
          const tmp = `${file}.${process.pid}.tmp`
          writeFileSync(tmp, cubin)
          renameSync(tmp, file)
        } catch {
          /* cache write failures are not fatal */
        }
      }
      return cubin
    } finally {
      nv.nvrtcDestroyProgram(prog)
    }
  }

  private programLog(prog: Handle): string {
    const nv = this.libs.nvrtc()
    const size = [0]
    if (nv.nvrtcGetProgramLogSize(prog, size) !== 0) return ''
    const n = Number(size[0])
    if (n <= 1) return ''
    const buf = Buffer.alloc(n)
    if (nv.nvrtcGetProgramLog(prog, buf) !== 0) return ''
    return buf.toString('utf8', 0, n - 1).trim()
  }

  /** Loads a cubin as a module. */
  loadModule(cubin: Buffer): Handle {
    const mod: Handle[] = [null]
    checkCu(this.libs, 'cuModuleLoadData', this.libs.cu.cuModuleLoadData(mod, cubin))
    return mod[0]
  }

  get version(): string {
    return this.nvrtcVersion
  }
}
