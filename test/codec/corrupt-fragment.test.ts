import test from 'ava'
import {
  createErasureCoder,
  encodeStripe,
  encodeFragment,
  decodeFragment,
  decodeStripe,
  checksum64,
  TooFewFragmentsError,
  CODEC_LIMITS,
  FRAGMENT_HEADER_BYTES
} from '../../codec/index.ts'
import { ProtocolError } from '../../core/index.ts'
import { seededRng } from '../helpers/seed.ts'

const coder = createErasureCoder({ k: 4, m: 2 })

function stripe(seed: number, n = 999): { payload: Uint8Array; frags: Uint8Array[] } {
  const payload = new Uint8Array(n).map((_, i) => (i * seed) & 0xff)
  return { payload, frags: encodeStripe(payload, coder).map(encodeFragment) }
}

/** Re-seals a fragment's body and header checksums after tampering: a well-formed lie. */
function reseal(frag: Uint8Array): Uint8Array {
  const v = new DataView(frag.buffer, frag.byteOffset, FRAGMENT_HEADER_BYTES)
  v.setBigUint64(32, checksum64(frag.subarray(FRAGMENT_HEADER_BYTES)), true)
  v.setBigUint64(40, checksum64(frag.subarray(0, 40)), true)
  return frag
}

test('a corrupted fragment is caught by its checksum and treated as an erasure', t => {
  const { payload, frags } = stripe(3)
  const bad = frags.map(f => f.slice())
  bad[1]![FRAGMENT_HEADER_BYTES + 10]! ^= 0x04
  const out = decodeStripe(bad, coder)
  t.deepEqual(out.payload, payload)
  t.is(out.rejected.length, 1)
  t.is(out.rejected[0]!.index, 1)
  t.is(out.rejected[0]!.error.code, 'FRAGMENT_CHECKSUM')
  t.false(out.used.includes(1), 'the corrupt fragment was never decoded')
})

test('every single-bit flip of a fragment is refused by decodeFragment', t => {
  const { frags } = stripe(5, 40)
  const f = frags[0]!
  for (let bit = 0; bit < f.length * 8; bit++) {
    const bad = f.slice()
    bad[bit >> 3]! ^= 1 << (bit & 7)
    t.throws(() => decodeFragment(bad), { instanceOf: ProtocolError }, `bit ${bit}`)
  }
})

test('more than m corrupt or missing fragments: a typed unrecoverable error naming them', t => {
  const { frags } = stripe(7)
  const bad = frags.map(f => f.slice())
  bad[0]![FRAGMENT_HEADER_BYTES]! ^= 1
  bad[2]![FRAGMENT_HEADER_BYTES]! ^= 1
  const err = t.throws(() => decodeStripe([bad[0]!, bad[1]!, bad[2]!, bad[3]!, bad[4]!], coder), { instanceOf: TooFewFragmentsError })
  t.deepEqual(err.corrupt, [0, 2])
  t.deepEqual(err.missing, [0, 2, 5])
  t.deepEqual(err.present, [1, 3, 4])
})

test('duplicates, fragments of another stripe and wrong expectations are rejected, not mixed in', t => {
  const a = stripe(9)
  const b = stripe(11)
  const out = decodeStripe([a.frags[0]!, a.frags[0]!, b.frags[1]!, a.frags[2]!, a.frags[3]!, a.frags[5]!], coder)
  t.deepEqual(out.payload, a.payload)
  t.deepEqual(
    out.rejected.map(r => r.error.code),
    ['FRAGMENT_MISMATCH', 'FRAGMENT_MISMATCH']
  )
  t.is(decodeStripe(a.frags, coder, { payloadChecksum: checksum64(a.payload) }).rejected.length, 0)
  const wrong = t.throws(() => decodeStripe(a.frags, coder, { payloadBytes: 5 }), { instanceOf: TooFewFragmentsError })
  t.deepEqual(wrong.present, [])
  t.throws(() => decodeStripe(a.frags, createErasureCoder({ k: 3, m: 3 })), { instanceOf: TooFewFragmentsError }, 'k/m of another code')
})

test('a well-formed lie (re-sealed body) is caught by the whole-payload checksum', t => {
  const { frags } = stripe(13)
  const liar = frags[0]!.slice()
  liar[FRAGMENT_HEADER_BYTES + 3]! ^= 0xff
  const err = t.throws(() => decodeStripe([reseal(liar), frags[1]!, frags[2]!, frags[3]!], coder), { instanceOf: ProtocolError })
  t.is(err.code, 'FRAGMENT_CHECKSUM')
})

test('fragment headers with lying sizes are refused before use (limit: maxFragmentBytes)', t => {
  const { frags } = stripe(17)
  const forge = (edit: (v: DataView) => void): Uint8Array => {
    const f = frags[0]!.slice()
    edit(new DataView(f.buffer, 0, FRAGMENT_HEADER_BYTES))
    return reseal(f)
  }
  const code = (f: Uint8Array): string => t.throws(() => decodeFragment(f), { instanceOf: ProtocolError }).code
  t.is(code(forge(v => v.setUint32(16, CODEC_LIMITS.maxFragmentBytes + 1, true))), 'FRAGMENT_MALFORMED')
  t.is(code(forge(v => v.setBigUint64(8, 2n ** 60n, true))), 'FRAGMENT_MALFORMED')
  t.is(code(forge(v => v.setUint8(7, 6))), 'FRAGMENT_MALFORMED', 'index >= k + m')
  t.is(code(forge(v => v.setUint8(5, 0))), 'FRAGMENT_MALFORMED', 'k = 0')
  t.is(code(forge(v => v.setUint32(20, 1, true))), 'FRAGMENT_MALFORMED', 'reserved bits')
  t.is(code(frags[0]!.subarray(0, 20)), 'FRAGMENT_MALFORMED', 'short')
  t.is(code(frags[0]!.subarray(0, frags[0]!.length - 1)), 'FRAGMENT_MALFORMED', 'truncated body')
  t.is(t.throws(() => decodeFragment(frags[0]!, { index: 1 }), { instanceOf: ProtocolError }).code, 'FRAGMENT_MISMATCH')
})

test('random garbage fragments never crash the stripe decoder', t => {
  const { rng } = seededRng(t, 51)
  const { payload, frags } = stripe(19)
  for (let i = 0; i < 300; i++) {
    const mixed = frags.map(f => {
      if (!rng.bool(0.2)) return f
      const g = f.slice()
      g[rng.int(0, g.length)]! ^= 1 << rng.int(0, 8)
      return g
    })
    mixed.push(rng.fill(new Uint8Array(rng.int(0, 200))))
    try {
      t.deepEqual(decodeStripe(rng.shuffle(mixed), coder).payload, payload)
    } catch (err) {
      t.true(err instanceof TooFewFragmentsError, String(err))
    }
  }
})
