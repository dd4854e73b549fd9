import test from 'ava'
import { Rng } from '../../core/index.ts'
import { checksum64 } from '../../codec/index.ts'
import { shardRange } from '../../mesh/collective/index.ts'
import { serialRingReduce } from '../collective/helpers.ts'
import { runWorkers } from '../../bench/_collective-procs.ts'

const vec = (seed: number, r: number, n: number): Float32Array => {
  const rng = Rng.fromSeed(seed).split(`x${r}`)
  const out = new Float32Array(n)
  for (let i = 0; i < n; i++) out[i] = rng.float() * 2 - 1
  return out
}
const hex = (a: Float32Array): string => checksum64(new Uint8Array(a.buffer, a.byteOffset, a.byteLength)).toString(16)

test('collectives across 3 real processes (libp2p on loopback, 2 zones) equal the serial references bit for bit', async t => {
  const P = 3
  const n = 100_003
  const seed = 9
  const res = await runWorkers(P, n, 1, seed)
  const xs = Array.from({ length: P }, (_, r) => vec(seed, r, n))
  const ref = serialRingReduce(xs, res[0]!.ring, n)
  for (const r of res) {
    t.is(r.allGather, hex(xs[0]!), `rank ${r.rank}: all-gather`)
    const s = shardRange(n, P, r.rank)
    t.is(r.reduceScatter, hex(ref.subarray(s.start, s.start + s.length)), `rank ${r.rank}: reduce-scatter`)
    t.is(r.allReduce, hex(ref), `rank ${r.rank}: all-reduce`)
  }
})
