import { readFileSync } from 'node:fs'
import { createRequire } from 'node:module'
import { dirname, join } from 'node:path'
import { InvalidArgumentError, ZeromeshError, checkCap } from '../core/index.ts'
import { TooFewFragmentsError } from './errors.ts'
import { CODEC_LIMITS } from './limits.ts'

/**
 * Systematic erasure code: k data fragments + m parity fragments, any k of the k + m rebuild
 * the data. Fragment i < k is data fragment i; fragment k + j is parity j.
 */
export interface ErasureCoder {
  /** Implementation name, for benchmarks and logs. */
  readonly name: string
  readonly k: number
  readonly m: number
  /** Computes the m parity fragments of k equal-length data fragments. */
  encode(data: readonly Uint8Array[]): Uint8Array[]
  /**
   * Rebuilds the k data fragments from `fragments` (length k + m, `undefined` where lost).
   * Present data fragments are returned as given; missing ones are new buffers. Throws
   * {@link TooFewFragmentsError} when fewer than k are present.
   */
  reconstruct(fragments: ReadonlyArray<Uint8Array | undefined>): Uint8Array[]
}

/** The wasm library returned a status we did not expect after validating its inputs. */
export class ErasureCoderError extends ZeromeshError {
  static override name = 'ErasureCoderError'
}

/** Validates (k, m): k >= 1, m >= 1, k + m <= 255. */
export function validateErasureParams(k: number, m: number): void {
  if (!Number.isSafeInteger(k) || k < 1) throw new InvalidArgumentError(`k must be an integer >= 1, got ${k}`)
  if (!Number.isSafeInteger(m) || m < 1) throw new InvalidArgumentError(`m must be an integer >= 1, got ${m}`)
  if (k + m > CODEC_LIMITS.maxErasureTotal) throw new InvalidArgumentError(`k + m must be <= ${CODEC_LIMITS.maxErasureTotal}, got ${k} + ${m}`)
}

/** Checks a fragment list: count, equal non-zero sizes, caps. Returns the fragment size. */
export function checkFragments(frags: ReadonlyArray<Uint8Array | undefined>, count: number, k: number, m: number): number {
  if (frags.length !== count) throw new InvalidArgumentError(`expected ${count} fragments, got ${frags.length}`)
  let size = -1
  frags.forEach((f, i) => {
    if (f === undefined) return
    if (!(f instanceof Uint8Array)) throw new InvalidArgumentError(`fragment ${i} is not a Uint8Array`)
    if (size < 0) size = f.length
    else if (f.length !== size) throw new InvalidArgumentError(`fragment ${i} has ${f.length} bytes, fragment sizes must all be ${size}`)
  })
  if (size === 0) throw new InvalidArgumentError('fragments must not be empty')
  if (size > 0) {
    checkCap('erasure fragment bytes', size, CODEC_LIMITS.maxFragmentBytes)
    checkCap('erasure stripe bytes', size * (k + m), CODEC_LIMITS.maxStripeBytes)
  }
  return size
}

// Node has WebAssembly; our lib settings (no DOM) do not describe it, so declare what we use.
declare const WebAssembly: {
  Module: new (bytes: Uint8Array) => object
  Instance: new (module: object) => { exports: unknown }
}

interface RsExports {
  memory: { buffer: ArrayBuffer }
  encode(ptr: number, len: number, k: number, m: number): number
  reconstruct(ptr: number, len: number, k: number, m: number, availPtr: number, availLen: number): number
  __wbindgen_malloc(len: number): number
  __wbindgen_free(ptr: number, len: number): void
}

/**
 * One wasm instance shared by every wasm coder in the process (JS is single-threaded), with one
 * reusable shard buffer inside it that grows to the largest stripe seen.
 *
 * We call the module's exports directly instead of the package's JS wrapper because the
 * wrapper frees the `shards_available` buffer after `reconstruct`, which the Rust side already
 * owns and frees: the double free corrupts the wasm allocator, and later reconstructs fail with
 * status 10 (TooFewShardsPresent) even when enough shards are present (found by the erasure
 * compliance suite; see docs/ARCHITECTURE.md). Writing fragments straight into wasm memory
 * also saves a copy each way.
 */
class WasmRs {
  private readonly e: RsExports
  private ptr = 0
  private cap = 0

  constructor(bytes: Uint8Array) {
    this.e = new WebAssembly.Instance(new WebAssembly.Module(bytes)).exports as unknown as RsExports
  }

  /** The shard buffer (at least n bytes) as a view; valid until the next call that allocates. */
  shards(n: number): Uint8Array {
    if (n > this.cap) {
      if (this.cap > 0) this.e.__wbindgen_free(this.ptr, this.cap)
      this.ptr = this.e.__wbindgen_malloc(n)
      this.cap = n
    }
    return new Uint8Array(this.e.memory.buffer, this.ptr, n)
  }

  encode(len: number, k: number, m: number): number {
    return this.e.encode(this.ptr, len, k, m)
  }

  reconstruct(len: number, k: number, m: number, present: readonly boolean[]): number {
    // Ownership of this buffer passes to Rust, which frees it: we must not.
    const ap = this.e.__wbindgen_malloc(present.length)
    new Uint8Array(this.e.memory.buffer, ap, present.length).set(present.map(p => (p ? 1 : 0)))
    return this.e.reconstruct(this.ptr, len, k, m, ap, present.length)
  }
}

/** Validates encode input (k equal, present, non-empty fragments); returns the fragment size. */
export function checkEncodeInput(data: readonly Uint8Array[], k: number, m: number): number {
  const size = checkFragments(data, k, k, m)
  if (data.some(d => d === undefined)) throw new InvalidArgumentError('every data fragment is needed to encode')
  return size
}

/**
 * Validates reconstruct input. Returns the fragment size, the indices present and the data
 * indices lost; throws {@link TooFewFragmentsError} when fewer than k are present.
 */
export function planReconstruct(
  fragments: ReadonlyArray<Uint8Array | undefined>,
  k: number,
  m: number
): { size: number; present: number[]; lostData: number[] } {
  const size = checkFragments(fragments, k + m, k, m)
  const present: number[] = []
  const missing: number[] = []
  fragments.forEach((f, i) => (f === undefined ? missing : present).push(i))
  if (present.length < k) throw new TooFewFragmentsError(k, m, present, missing)
  return { size, present, lostData: missing.filter(i => i < k) }
}

let shared: WasmRs | undefined
function wasmRs(): WasmRs {
  if (shared === undefined) {
    const require = createRequire(import.meta.url)
    const pkg = dirname(require.resolve('@subspace/reed-solomon-erasure.wasm/package.json'))
    shared = new WasmRs(readFileSync(join(pkg, 'dist', 'reed_solomon_erasure_bg.wasm')))
  }
  return shared
}

/** Status codes of the wasm module (reed-solomon-erasure's Error enum + 1). */
const RS_OK = 0

/**
 * Reed-Solomon over GF(2^8) from `@subspace/reed-solomon-erasure.wasm` (the Rust
 * reed-solomon-erasure crate compiled to wasm, no SIMD).
 */
export function createWasmErasureCoder(init: { k: number; m: number }): ErasureCoder {
  const { k, m } = init
  validateErasureParams(k, m)
  const rs = wasmRs()
  const status = (code: number, op: string): void => {
    if (code !== RS_OK) throw new ErasureCoderError(`reed-solomon ${op} failed with status ${code}`, { op, code, k, m })
  }
  return {
    name: 'wasm',
    k,
    m,
    encode(data) {
      const size = checkEncodeInput(data, k, m)
      const total = size * (k + m)
      const buf = rs.shards(total)
      data.forEach((d, i) => buf.set(d, i * size))
      status(rs.encode(total, k, m), 'encode')
      const view = rs.shards(total)
      const parity: Uint8Array[] = []
      for (let j = 0; j < m; j++) parity.push(view.slice((k + j) * size, (k + j + 1) * size))
      return parity
    },
    reconstruct(fragments) {
      const { size, lostData } = planReconstruct(fragments, k, m)
      if (lostData.length === 0) return fragments.slice(0, k) as Uint8Array[]
      const total = size * (k + m)
      const buf = rs.shards(total)
      fragments.forEach((f, i) => {
        if (f !== undefined) buf.set(f, i * size)
      })
      status(
        rs.reconstruct(
          total,
          k,
          m,
          fragments.map(f => f !== undefined)
        ),
        'reconstruct'
      )
      const view = rs.shards(total)
      const out: Uint8Array[] = []
      for (let i = 0; i < k; i++) out.push(fragments[i] ?? view.slice(i * size, (i + 1) * size))
      return out
    }
  }
}

/** Names of the available erasure coders. */
export type ErasureCoderName = 'wasm' | 'simd'
