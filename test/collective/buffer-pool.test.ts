import test from 'ava'
import { BufferPool, COLLECTIVE_LIMITS } from '../../mesh/collective/index.ts'

test('a released buffer is lent again (same memory), in its power-of-two size class, at offset 0', t => {
  const pool = new BufferPool(1 << 20, 1 << 20)
  const a = pool.acquire(5000)
  t.is(a.length, 5000)
  t.is(a.byteOffset, 0)
  t.is(a.buffer.byteLength, 8192)
  pool.release(a)
  const b = pool.acquire(6000)
  t.is(b.buffer, a.buffer, 'a loan of the same class reuses the buffer')
  t.is(b.length, 6000)
  const c = pool.acquire(6000)
  t.not(c.buffer, a.buffer, 'a buffer on loan is not lent twice')
  t.deepEqual(pool.stats(), { made: 2, reused: 1, idleBytes: 0 })
})

test('idle buffers are capped (maxIdleBytes): past the cap a given-back buffer is dropped', t => {
  const pool = new BufferPool(3 * 4096, 1 << 20)
  const loans = Array.from({ length: 5 }, () => pool.acquire(4096))
  for (const b of loans) pool.release(b)
  t.is(pool.stats().idleBytes, 3 * 4096, 'three kept, two dropped')
  const again = Array.from({ length: 5 }, () => pool.acquire(4096))
  t.is(pool.stats().reused, 3)
  t.is(pool.stats().made, 7)
  t.is(new Set(again.map(b => b.buffer)).size, 5)
})

test('the default cap holds the buffers of a few 1 MiB chunks, and no more than maxPoolIdleBytes', t => {
  const pool = new BufferPool(COLLECTIVE_LIMITS.maxPoolIdleBytes, COLLECTIVE_LIMITS.maxPooledBufferBytes)
  const loans = Array.from({ length: 40 }, () => pool.acquire(1 << 20))
  for (const b of loans) pool.release(b)
  t.is(pool.stats().idleBytes, COLLECTIVE_LIMITS.maxPoolIdleBytes)
})

test('buffers over maxBufferBytes and foreign buffers are never pooled; a second give-back of a loan is ignored', t => {
  const pool = new BufferPool(1 << 24, 8192)
  const big = pool.acquire(8193)
  t.is(big.length, 8193)
  pool.release(big)
  pool.release(new Uint8Array(4096))
  t.is(pool.stats().idleBytes, 0)
  const a = pool.acquire(100)
  pool.release(a)
  pool.release(a)
  t.is(pool.stats().idleBytes, 4096, 'one buffer held once')
  const b = pool.acquire(100)
  const c = pool.acquire(100)
  t.not(b.buffer, c.buffer, 'the doubly given-back buffer is lent once')
})
