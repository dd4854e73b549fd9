import { codecError, CodecErrorCode } from './errors.ts'

/**
 * Structural pre-scan of a msgpack value, run before msgpackr allocates anything. It walks the
 * bytes once with an explicit stack (no recursion) and refuses:
 * - nesting deeper than `maxDepth` (msgpackr recurses; a 72 KB nested-array chain can abort
 *   the process, msgpackr PR #200);
 * - more than `maxItems` array elements + map entries in all;
 * - any container or string/bin length that claims more bytes than remain (the array32
 *   pre-allocation bomb, msgpackr PR #199);
 * - ext types and the reserved byte 0xc1 (we never send them);
 * - map keys that are not strings, and the key `__proto__`;
 * - trailing bytes after the one top-level value.
 */
export function scanMsgpack(bytes: Uint8Array, limits: { maxDepth: number; maxItems: number }): void {
  const v = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength)
  const n = bytes.length
  // Parallel stacks: items left in each open container, and whether it is a map.
  const left: number[] = []
  const isMap: boolean[] = []
  let pos = 0
  let items = 0
  let values = 0
  const fail = (why: string): never => {
    throw codecError(CodecErrorCode.ENVELOPE_MALFORMED, `malformed envelope at byte ${pos}: ${why}`)
  }
  const need = (k: number): void => {
    if (pos + k > n) fail('truncated')
  }

  const open = (count: number, map: boolean): void => {
    const slots = map ? count * 2 : count
    if (slots > n - pos) fail(`container claims ${count} entries with ${n - pos} bytes left`)
    items += count
    if (items > limits.maxItems) fail(`more than ${limits.maxItems} items`)
    if (slots > 0) {
      if (left.length >= limits.maxDepth) fail(`nesting deeper than ${limits.maxDepth}`)
      left.push(slots)
      isMap.push(map)
    }
  }

  do {
    // Is the value about to be read a map key?
    const depth = left.length
    const keyPos = depth > 0 && isMap[depth - 1]! && left[depth - 1]! % 2 === 0
    if (depth > 0) left[depth - 1]!--
    else values++
    if (values > 1) fail('trailing bytes after the envelope')
    need(1)
    const b = bytes[pos++]!
    let strLen = -1
    if (b <= 0x7f || b >= 0xe0) {
      /* fixint */
    } else if (b <= 0x8f) open(b & 0x0f, true)
    else if (b <= 0x9f) open(b & 0x0f, false)
    else if (b <= 0xbf) strLen = b & 0x1f
    else {
      switch (b) {
        case 0xc0:
        case 0xc2:
        case 0xc3:
          break
        case 0xc4:
          need(1)
          pos += 1 + skipLen(v.getUint8(pos))
          break
        case 0xc5:
          need(2)
          pos += 2 + skipLen(v.getUint16(pos))
          break
        case 0xc6:
          need(4)
          pos += 4 + skipLen(v.getUint32(pos))
          break
        case 0xca:
          need(4)
          pos += 4
          break
        case 0xcb:
          need(8)
          pos += 8
          break
        case 0xcc:
        case 0xd0:
          need(1)
          pos += 1
          break
        case 0xcd:
        case 0xd1:
          need(2)
          pos += 2
          break
        case 0xce:
        case 0xd2:
          need(4)
          pos += 4
          break
        case 0xcf:
        case 0xd3:
          need(8)
          pos += 8
          break
        case 0xd9:
          need(1)
          strLen = v.getUint8(pos)
          pos += 1
          break
        case 0xda:
          need(2)
          strLen = v.getUint16(pos)
          pos += 2
          break
        case 0xdb:
          need(4)
          strLen = v.getUint32(pos)
          pos += 4
          break
        case 0xdc:
          need(2)
          pos += 2
          open(v.getUint16(pos - 2), false)
          break
        case 0xdd:
          need(4)
          pos += 4
          open(v.getUint32(pos - 4), false)
          break
        case 0xde:
          need(2)
          pos += 2
          open(v.getUint16(pos - 2), true)
          break
        case 0xdf:
          need(4)
          pos += 4
          open(v.getUint32(pos - 4), true)
          break
        default:
          fail(`type byte 0x${b.toString(16)} is not allowed (ext or reserved)`)
      }
    }
    if (strLen >= 0) {
      need(strLen)
      if (keyPos && strLen === 9 && isProto(bytes, pos)) fail('the key __proto__ is not allowed')
      pos += strLen
    } else if (keyPos) {
      fail('map keys must be strings')
    }
    // Close every container that just received its last item.
    while (left.length > 0 && left[left.length - 1] === 0) {
      left.pop()
      isMap.pop()
    }
    if (pos > n) fail('truncated')
  } while (left.length > 0)
  if (pos !== n) {
    pos = n
    fail('trailing bytes after the envelope')
  }

  function skipLen(len: number): number {
    if (len > n - pos) fail(`binary claims ${len} bytes with ${n - pos} left`)
    return len
  }
}

const PROTO = [0x5f, 0x5f, 0x70, 0x72, 0x6f, 0x74, 0x6f, 0x5f, 0x5f]
function isProto(bytes: Uint8Array, at: number): boolean {
  for (let i = 0; i < 9; i++) if (bytes[at + i] !== PROTO[i]) return false
  return true
}
