import test from 'ava'
import { createBackend, CpuBackend, BackendUnavailableError } from '../../gpu/index.ts'

test('createBackend: cpu gives the reference backend; cuda gives a cuda backend or a BackendUnavailableError, never another failure', async t => {
  const cpu = await createBackend('cpu')
  t.true(cpu instanceof CpuBackend)
  t.is(cpu.kind, 'cpu')
  t.regex(cpu.description, /^cpu:/)
  try {
    const cuda = await createBackend('cuda')
    t.is(cuda.kind, 'cuda')
    t.log(`cuda available: ${cuda.description}`)
    cuda.dispose()
  } catch (err) {
    t.true(err instanceof BackendUnavailableError, `unexpected ${String(err)}`)
    t.log(`cuda unavailable here: ${(err as Error).message}`)
  }
  await t.throwsAsync(createBackend('tpu' as 'cpu'), { instanceOf: BackendUnavailableError })
})
