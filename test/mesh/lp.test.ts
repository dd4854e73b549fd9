import test from 'ava'
import { MessageReader } from '../../mesh/index.ts'
import { ProtocolError } from '../../core/index.ts'

async function* chunks(...parts: Uint8Array[]): AsyncIterable<Uint8Array> {
  for (const p of parts) yield p
}
const msg = (n: number, fill = 7): Uint8Array => {
  const out = new Uint8Array(4 + n).fill(fill)
  new DataView(out.buffer).setUint32(0, n, true)
  return out
}

test('length-prefixed messages split across and packed into chunks', async t => {
  const all = Buffer.concat([msg(3, 1), msg(0), msg(5, 2)])
  const r = new MessageReader(chunks(all.subarray(0, 2), all.subarray(2, 9), all.subarray(9)), 16)
  t.deepEqual(Array.from((await r.next())!), [1, 1, 1])
  t.deepEqual(Array.from((await r.next())!), [])
  t.deepEqual(Array.from((await r.next())!), [2, 2, 2, 2, 2])
  t.is(await r.next(), undefined)
})

test('a length over the cap is refused before the body is read (limit: auth message bytes)', async t => {
  const r = new MessageReader(chunks(msg(1025).subarray(0, 4)), 1024)
  const err = await t.throwsAsync(r.next(), { instanceOf: ProtocolError })
  t.is(err.code, 'MESSAGE_TOO_LARGE')
})

test('a stream that ends inside a message is a typed error', async t => {
  const r = new MessageReader(chunks(msg(10).subarray(0, 8)), 1024)
  t.is((await t.throwsAsync(r.next(), { instanceOf: ProtocolError })).code, 'MESSAGE_TRUNCATED')
})
