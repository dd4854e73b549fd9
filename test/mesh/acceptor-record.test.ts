import test from 'ava'
import { chmodSync, mkdtempSync, readFileSync, rmSync, truncateSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { ACCEPTOR_RECORD_FILE, AcceptorRecordError, fileAcceptorStore, type AcceptorRecord } from '../../mesh/index.ts'
import { Cluster } from './membership-harness.ts'

const ids = (c: Cluster): string[] => [...c.nodes.keys()]

function tmp(t: { teardown(f: () => void): void }): string {
  const dir = mkdtempSync(join(tmpdir(), 'zm-acceptor-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  return dir
}

const record: AcceptorRecord = {
  lineage: 'mib3k2.1x9ab',
  acceptor: {
    epoch: 4,
    promised: { round: 7, proposer: 'n01' },
    accepted: { ballot: { round: 7, proposer: 'n01' }, view: { epoch: 4, members: [{ id: 'n01', zone: 'z0', host: 'h1' }], lineage: 'mib3k2.1x9ab' } }
  },
  maxRound: 9
}

test('the acceptor record file: none before the first answer, then what was saved last', t => {
  const dir = tmp(t)
  const store = fileAcceptorStore(dir)
  t.is(store.load(), undefined)
  store.save(record)
  store.save({ ...record, maxRound: 12 })
  t.deepEqual(store.load(), { ...record, maxRound: 12 })
  t.deepEqual(fileAcceptorStore(dir).load(), { ...record, maxRound: 12 }, 'another process on the same data dir reads it')
})

test('a corrupt, truncated or oversized acceptor record is a typed error naming the file and the way out, not an empty record', t => {
  const dir = tmp(t)
  const store = fileAcceptorStore(dir)
  store.save(record)
  const file = join(dir, ACCEPTOR_RECORD_FILE)
  const good = readFileSync(file)
  writeFileSync(file, good.subarray(0, good.length - 5))
  const e1 = t.throws(() => store.load(), { instanceOf: AcceptorRecordError })
  t.true(e1.message.includes(file) && e1.message.includes('identity.key'), e1.message)
  writeFileSync(file, Buffer.from('{"acceptor": 1}'))
  t.throws(() => store.load(), { instanceOf: AcceptorRecordError })
  truncateSync(file, 300 * 1024) // sparse: refused by its size before a byte is read
  const e2 = t.throws(() => store.load(), { instanceOf: AcceptorRecordError })
  t.regex(e2.message, /exceeds|cap/i)
  rmSync(file)
  writeFileSync(file, Buffer.alloc(0))
  t.throws(() => store.load(), { instanceOf: AcceptorRecordError }, 'an empty file is not "no record"')
})

test('an acceptor record that cannot be written is a typed error naming the file', t => {
  if (process.getuid?.() === 0) {
    // root writes through mode bits: a data dir that is a file stands in for an unwritable one.
    const dir = join(tmp(t), 'not-a-dir')
    writeFileSync(dir, 'x')
    t.throws(() => fileAcceptorStore(dir).save(record), { instanceOf: AcceptorRecordError, message: /cannot write/ })
    return
  }
  const dir = tmp(t)
  chmodSync(dir, 0o500)
  t.throws(() => fileAcceptorStore(dir).save(record), { instanceOf: AcceptorRecordError, message: /cannot write/ })
})

test('a node whose acceptor record cannot be written answers no prepare or accept; the others still change views', async t => {
  const c = new Cluster(5, 11, { expect: 5 })
  await c.startAll()
  await c.until(() => c.agree(ids(c)), 5000, 'formation')
  await c.run(1000)
  c.failingStores.add('n04')
  let accepted = 0
  c.nodes.get('n04')!.m.on('accepted', () => accepted++)
  c.kill('n03')
  await c.until(() => c.agree(['n00', 'n01', 'n02', 'n04']), 5000, 'removal of n03 without n04 answering')
  t.is(accepted, 0, 'n04 accepted nothing it could not record')
  t.false(c.records.has('n04'))
  t.true(c.records.has('n00'))
  t.deepEqual(c.violations, [])
})

test('every view of a launch carries the lineage of its genesis; a relaunch on the same data dirs draws another and is not held back by the old records', async t => {
  const a = new Cluster(3, 12, { expect: 3 })
  await a.startAll()
  await a.until(() => a.agree(ids(a)), 5000, 'formation')
  await a.run(1000)
  a.kill('n02')
  await a.until(() => a.agree(['n00', 'n01']), 5000, 'removal of n02')
  await a.restart('n02')
  await a.until(() => a.agree(ids(a)), 5000, 'rejoin of n02')
  const lineage = a.nodes.get('n00')!.m.view()!.lineage
  t.truthy(lineage)
  t.true(ids(a).every(id => a.nodes.get(id)!.m.view()!.lineage === lineage))
  t.true([...a.records.values()].every(r => r.lineage === lineage && r.acceptor.epoch >= 3))
  for (const id of ids(a)) a.kill(id)

  // The same identities and data dirs, started again: records of epoch 3 or 4 in the old lineage.
  await a.run(100)
  const b = new Cluster(3, 13, { expect: 3 })
  for (const [id, r] of a.records) b.records.set(id, r)
  await b.run(60_000) // launched a minute later by the wall clock (a lineage is drawn from it)
  await b.startAll()
  await b.until(() => b.agree(ids(b)), 5000, 'formation of the relaunch')
  const v = b.nodes.get('n00')!.m.view()!
  t.is(v.epoch, 1)
  t.not(v.lineage, lineage)
  await b.run(1000)
  b.kill('n02')
  await b.until(() => b.agree(['n00', 'n01']), 5000, 'a view change of the relaunch at epoch 2, below the old records')
  t.deepEqual(a.violations, [])
  t.deepEqual(b.violations, [])
})
