import { InvalidArgumentError } from '../core/index.ts'
import { type ErasureCoder, type ErasureCoderName, createWasmErasureCoder } from './erasure.ts'
import { createSimdErasureCoder, simdAvailable } from './erasure-simd.ts'

/**
 * Factory by name. The default is 'simd' where the runtime has WebAssembly SIMD (Node >= 16
 * does), else 'wasm'; both produce identical fragments, so peers may use either.
 */
export function createErasureCoder(init: { k: number; m: number; impl?: ErasureCoderName }): ErasureCoder {
  const impl = init.impl ?? (simdAvailable() ? 'simd' : 'wasm')
  switch (impl) {
    case 'simd':
      return createSimdErasureCoder(init)
    case 'wasm':
      return createWasmErasureCoder(init)
    default:
      throw new InvalidArgumentError(`unknown erasure coder '${String(impl)}'`)
  }
}

/** One coder per (k, m) of `impl`, made on first use and kept (a placement and a recovery share it). */
export function erasureCoderCache(impl: ErasureCoderName | undefined): (k: number, m: number) => ErasureCoder {
  const coders = new Map<string, ErasureCoder>()
  return (k, m) => {
    const key = `${k}/${m}`
    let c = coders.get(key)
    if (c === undefined) {
      c = createErasureCoder({ k, m, impl })
      coders.set(key, c)
    }
    return c
  }
}
