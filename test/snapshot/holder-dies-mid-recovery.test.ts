import test from 'ava'
import { Rng } from '../../core/index.ts'
import { encodeLabel, encodeState, FETCH_PROTOCOL, placeStripe } from '../../snapshot/index.ts'
import { bytesEqual, memoryMesh, randomState } from './helpers.ts'

const OK_REPLY = new Uint8Array([0, 0, 0, 0])

test('holder dies mid-transfer: recovery falls back to another holder and reports it', async t => {
  const mesh = await memoryMesh(7, { k: 3, m: 2, segmentBytes: 256 * 1024, idleTimeoutMs: 2000 })
  const state = randomState(Rng.fromSeed(1), 200_000, { step: 3, rank: 0, worldSize: 7 })
  t.is((await mesh.services[0]!.capture(state).done).status, 'placed')
  const holders = placeStripe(mesh.view, 0, 3, 2)
  const victim = mesh.nets.findIndex(n => n.self.id === holders[0])
  // The holder of fragment 0 sends its label and one segment, then its process dies.
  let sent = false
  mesh.nets[victim]!.handle(FETCH_PROTOCOL, async stream => {
    for await (const _ of stream) break
    const f = mesh.services[victim]!.store.get('p0', 3, 1, 0)!
    await stream.write(OK_REPLY)
    await stream.write(encodeLabel(f.label))
    await stream.write(f.segments[0]!)
    sent = true
    mesh.hub.kill(holders[0]!)
  })
  mesh.hub.kill('p0')
  const rec = await mesh.services[6]!.recover({ owner: 'p0' })
  t.true(sent)
  t.true(bytesEqual(rec.bytes, encodeState(state)))
  t.deepEqual(
    rec.report.missing.map(x => x.index),
    [0]
  )
  t.regex(rec.report.missing[0]!.reason, /PeerGoneError|StreamResetError/)
  t.deepEqual(
    rec.report.used.map(x => x.index),
    [1, 2, 3]
  )
  await mesh.close()
})

test('holder stalls mid-transfer: free workers move on to parity, no waiting for the stalled one', async t => {
  const mesh = await memoryMesh(7, { k: 3, m: 2, segmentBytes: 64 * 1024, idleTimeoutMs: 60_000 })
  const state = randomState(Rng.fromSeed(2), 50_000, { step: 4, rank: 0, worldSize: 7 })
  t.is((await mesh.services[0]!.capture(state).done).status, 'placed')
  const holders = placeStripe(mesh.view, 0, 3, 2)
  stall(mesh, holders[1]!, 4, 1)
  const t0 = performance.now()
  const rec = await mesh.services[6]!.recover({ owner: 'p0' })
  const ms = performance.now() - t0
  t.true(bytesEqual(rec.bytes, encodeState(state)))
  t.deepEqual(
    rec.report.used.map(x => x.index),
    [0, 2, 3]
  )
  t.true(ms < 10_000, `took ${ms} ms`)
  await mesh.close()
})

test('holder stalls with m others dead: the idle timeout bounds recovery, which ends in UnrecoverableError', async t => {
  const mesh = await memoryMesh(7, { k: 3, m: 2, segmentBytes: 64 * 1024, idleTimeoutMs: 150 })
  const state = randomState(Rng.fromSeed(2), 50_000, { step: 4, rank: 0, worldSize: 7 })
  t.is((await mesh.services[0]!.capture(state).done).status, 'placed')
  const holders = placeStripe(mesh.view, 0, 3, 2)
  stall(mesh, holders[1]!, 4, 1)
  mesh.hub.kill(holders[0]!)
  mesh.hub.kill(holders[3]!)
  const t0 = performance.now()
  const err = await t.throwsAsync(mesh.services[6]!.recover({ owner: 'p0' }), { name: 'UnrecoverableError' })
  t.true(performance.now() - t0 < 5000)
  t.deepEqual((err as any).missing, [0, 1, 3])
  t.regex(err!.message, /version 4/)
  await mesh.close()
})

// The holder sends the reply and half a label, then nothing, forever (a frozen process).
function stall(mesh: Awaited<ReturnType<typeof memoryMesh>>, id: string, version: number, index: number): void {
  const victim = mesh.nets.findIndex(n => n.self.id === id)
  mesh.nets[victim]!.handle(FETCH_PROTOCOL, async stream => {
    for await (const _ of stream) break
    await stream.write(OK_REPLY)
    const f = mesh.services[victim]!.store.get('p0', version, 1, index)!
    await stream.write(encodeLabel(f.label).subarray(0, 20))
    await new Promise(() => {})
  })
}

test('recovery is cancelled promptly by its signal', async t => {
  const mesh = await memoryMesh(7, { k: 3, m: 2, segmentBytes: 64 * 1024, idleTimeoutMs: 60_000 })
  const state = randomState(Rng.fromSeed(3), 10_000, { step: 5, rank: 0, worldSize: 7 })
  t.is((await mesh.services[0]!.capture(state).done).status, 'placed')
  // Every holder stalls; only the signal can end this.
  for (const [i, net] of mesh.nets.entries()) {
    if (i === 0 || i === 6) continue
    net.handle(FETCH_PROTOCOL, async () => {
      await new Promise(() => {})
    })
  }
  const ctl = new AbortController()
  const p = mesh.services[6]!.recover({ owner: 'p0' }, { signal: ctl.signal })
  setTimeout(() => ctl.abort(), 30)
  await t.throwsAsync(p, { name: 'AbortError' })
  await mesh.close()
})
