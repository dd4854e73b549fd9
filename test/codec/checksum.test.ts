import test from 'ava'
import { checksum64 } from '../../codec/index.ts'

test('checksum64 is xxHash64 with seed 0 (published reference vectors)', t => {
  const enc = new TextEncoder()
  t.is(checksum64(new Uint8Array(0)), 0xef46db3751d8e999n)
  t.is(checksum64(enc.encode('a')), 0xd24ec4f1a98c6e5bn)
  t.is(checksum64(enc.encode('abc')), 0x44bc2cf5ad770999n)
})

test('checksum64 sees a single flipped bit anywhere in a buffer', t => {
  const buf = new Uint8Array(4096).map((_, i) => i * 31)
  const base = checksum64(buf)
  for (let bit = 0; bit < buf.length * 8; bit += 97) {
    buf[bit >> 3]! ^= 1 << (bit & 7)
    t.not(checksum64(buf), base, `bit ${bit}`)
    buf[bit >> 3]! ^= 1 << (bit & 7)
  }
  t.is(checksum64(buf.subarray(0)), base, 'views of the same bytes agree')
})
