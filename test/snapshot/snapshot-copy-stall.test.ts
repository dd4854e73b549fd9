import test from 'ava'
import { Rng } from '../../core/index.ts'
import { copyState, createCapturer, encodeState, sealState, SNAPSHOT_LIMITS, stateBytes, type RankState } from '../../snapshot/index.ts'
import { bytesEqual, randomState } from './helpers.ts'

// A GPU rank's first snapshot of a 1.5 GB state was copied in one synchronous piece on its event
// loop, which also sends its heartbeats: the failure detectors of the other nodes took the rank
// for dead, a spare replaced it and the run rolled back (docs/LIMITS.md). The copy must give the
// loop back after every SNAPSHOT_LIMITS.captureChunkBytes, and still produce writeState's bytes.

const immediate = (): Promise<void> => new Promise(resolve => setImmediate(resolve))

/** A large state without a zero byte (so the copied part of a zeroed buffer is its non-zero prefix), each buffer its own bytes. */
function largeState(n: number): RankState {
  const arr = (byte: number): Float32Array => {
    const a = new Float32Array(n)
    const u8 = new Uint8Array(a.buffer)
    u8.fill(byte)
    u8.set([1, 2, 3, 4], 4 * n - 4)
    return a
  }
  return { rank: 0, worldSize: 1, epoch: 3, step: 1, dataCursor: 1, weights: arr(0x5a), adamM: arr(0x5b), adamV: arr(0x5c), rng: new Uint8Array(0) }
}

/** Bytes of the body (after `head`) copied into `buf` so far: the length of its non-zero prefix. */
function copiedBody(buf: Uint8Array, head: number, total: number): number {
  let lo = head
  let hi = total
  while (lo < hi) {
    const mid = (lo + hi) >>> 1
    if (buf[mid] !== 0) lo = mid + 1
    else hi = mid
  }
  return lo - head
}

test('a rank copying a 1.5 GB snapshot is not declared dead: the capture copies at most one chunk per turn of its event loop', async t => {
  const chunk = SNAPSHOT_LIMITS.captureChunkBytes
  // Six chunks per buffer, 18 in all: far beyond one piece, small enough for a test box.
  const state = largeState((6 * chunk) / 4)
  const total = stateBytes(state)
  const head = total - 3 * state.weights.byteLength
  let buf: Uint8Array | undefined
  let placed: Uint8Array | undefined
  const c = createCapturer(
    async sealed => {
      placed = sealed
      return 0
    },
    {
      alloc: bytes => {
        buf = new Uint8Array(bytes)
        return buf
      },
      seal: async bytes => sealState(bytes)
    }
  )
  const ticket = c.capture(state, { keep: true })
  const atReturn = copiedBody(buf!, head, total)
  t.true(atReturn <= chunk, `capture() returned after copying ${atReturn} bytes in one piece (at most ${chunk})`)
  t.not(ticket.copied, undefined, 'a large capture says when its source may change')
  let copiedNow = false
  void ticket.copied!.then(() => {
    copiedNow = true
  })
  // One probe per turn of the loop: no turn may see more than one chunk copied since the last.
  let seen = atReturn
  let turns = 0
  let longest = atReturn
  while (!copiedNow) {
    await immediate()
    const now = copiedBody(buf!, head, total)
    longest = Math.max(longest, now - seen)
    seen = now
    turns++
  }
  t.true(longest <= chunk, `one turn saw ${longest} bytes copied (at most ${chunk})`)
  t.true(turns >= 17, `the copy took ${turns} turns (18 chunks)`)
  t.is((await ticket.done).status, 'placed')
  t.true(bytesEqual(placed!, encodeState(state)), 'the snapshot is writeState’s bytes, sealed')
})

test('the paced copy writes exactly writeState’s bytes, whatever the state carries and the chunk size', async t => {
  const rng = Rng.fromSeed(7)
  // 8000 bytes a buffer: above the size copied at once while the layout is written.
  const base = randomState(rng, 2000)
  const outer = { weights: base.weights.map(x => x + 1), momentum: base.weights.map(x => x * 2), residual: base.adamM.slice(), sentInner: base.adamV.slice() }
  const lion: RankState = { ...base, adamV: new Float32Array(0), optimizer: 'lion' }
  const states: RankState[] = [
    base,
    { ...base, rng: base.rng.subarray(0, 5) },
    { ...base, outer },
    { ...lion, identity: new Uint8Array(32).fill(3), nonce: new Uint8Array(16).fill(4) },
    { ...base, identity: new Uint8Array(32).fill(1), outer },
    { ...base, weights: new Float32Array(0), adamM: new Float32Array(0), adamV: new Float32Array(0) },
    {
      ...base,
      adamM: base.adamM.subarray(0, 0),
      adamV: base.adamV.subarray(0, 0),
      optimizer: 'adamw8bit',
      adam8: { m: new Uint8Array(2000).fill(7), v: new Uint8Array(2000).fill(9), scales: Float32Array.of(0.5, 0.25) },
      outer
    },
    // 8-bit Lion: m codes alone (4099: copied in pieces, then zero padding to 8 bytes), one absmax a block.
    {
      ...base,
      weights: Float32Array.from({ length: 4099 }, (_, i) => i / 7),
      adamM: base.adamM.subarray(0, 0),
      adamV: base.adamV.subarray(0, 0),
      optimizer: 'lion8bit',
      adam8: { m: Uint8Array.from({ length: 4099 }, (_, i) => i % 251), v: new Uint8Array(0), scales: Float32Array.of(0.75, 0.5, 0.25) }
    }
  ]
  for (const [i, st] of states.entries()) {
    for (const chunkBytes of [7, 64, 4099, 1 << 20]) {
      let turns = 0
      const into = new Uint8Array(stateBytes(st) + 13).fill(0xee)
      const out = await copyState(st, into, {
        chunkBytes,
        turn: async () => {
          turns++
        }
      })
      sealState(out)
      t.true(bytesEqual(out, encodeState(st)), `state ${i}, chunks of ${chunkBytes} bytes`)
      // The buffers over copyState's SMALL_BYTES (4096) are copied in pieces.
      const buffers = [st.weights, st.adamM, st.adamV, st.adam8?.m, st.adam8?.v, st.adam8?.scales, ...Object.values(st.outer ?? {})]
      const paced = buffers.reduce((a, b) => a + (b !== undefined && b.byteLength > 4096 ? b.byteLength : 0), 0)
      t.true(turns >= Math.floor(paced / chunkBytes) - 1, `state ${i}, chunks of ${chunkBytes} bytes: ${turns} turns`)
    }
  }
})

test('a capture stopped in the middle of a paced copy fails, and a capture during a copy is refused', async t => {
  const chunk = 1024
  const c = createCapturer(async () => 0, undefined, { chunkBytes: chunk })
  const st = randomState(Rng.fromSeed(3), 4 * chunk)
  const ticket = c.capture(st)
  t.not(ticket.copied, undefined)
  t.throws(() => c.capture({ ...st, step: 2 }), { name: 'InvalidArgumentError' })
  t.is(c.requeue(), undefined)
  c.stop()
  await ticket.copied
  const out = await ticket.done
  t.is(out.status, 'failed')
  if (out.status === 'failed') t.is(out.error.name, 'AbortError')
  await c.idle()
})
