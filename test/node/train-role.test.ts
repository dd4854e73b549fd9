import test from 'ava'
import { nextRole } from '../../node/train/role.ts'

test('the trainer role table: every role moves only on the events it can report', t => {
  t.is(nextRole('waiting', { type: 'placed', onRoster: true }), 'rank')
  t.is(nextRole('waiting', { type: 'placed', onRoster: false }), 'spare')
  t.is(nextRole('spare', { type: 'placed', onRoster: true }), 'rank')
  t.is(nextRole('spare', { type: 'grow' }), 'grow')
  t.is(nextRole('spare', { type: 'finished' }), 'end')
  t.is(nextRole('rank', { type: 'interrupted' }), 'retry')
  t.is(nextRole('rank', { type: 'grow' }), 'grow')
  t.is(nextRole('rank', { type: 'finished', announce: true }), 'end')
  t.is(nextRole('retry', { type: 'placed', onRoster: false }), 'spare')
  t.is(nextRole('grow', { type: 'placed', onRoster: true }), 'rank')
  t.throws(() => nextRole('rank', { type: 'placed', onRoster: true }), { name: 'InvalidArgumentError' })
  t.throws(() => nextRole('waiting', { type: 'interrupted' }), { name: 'InvalidArgumentError' })
  t.throws(() => nextRole('end', { type: 'finished' }), { name: 'InvalidArgumentError' })
})
