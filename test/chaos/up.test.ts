import test from 'ava'
import { execFile } from 'node:child_process'
import { fileURLToPath } from 'node:url'

// `zeromesh up`, the README's main job, end to end: real worker processes on loopback, the
// default model and corpus, and a worker SIGKILLed mid-run.
const bin = fileURLToPath(new URL('../../bin/zeromesh.js', import.meta.url))

function up (args: string[]): Promise<{ code: number, out: string }> {
  return new Promise(resolve => {
    execFile(process.execPath, [bin, 'up', ...args], { timeout: 170_000 }, (err, stdout, stderr) => {
      resolve({ code: err === null ? 0 : (typeof err.code === 'number' ? err.code : 1), out: stdout + stderr })
    })
  })
}

const heldOut = (out: string): string | undefined => /held-out loss of the final weights: (\S+)/.exec(out)?.[1]

test.serial('zeromesh up trains on 4 worker processes; a SIGKILLed rank is replaced by the spare and the result is bit-identical', async t => {
  const clean = await up(['--nodes', '4', '--steps', '16'])
  t.is(clean.code, 0, clean.out)
  const losses = [...clean.out.matchAll(/loss (\d+\.\d+)/g)].map(m => Number(m[1]))
  t.log(clean.out.split('\n').filter(l => /step|training done|held-out/.test(l)).slice(-3).join('\n'))
  t.true(losses.length >= 2 && losses.at(-1)! < losses[0]! * 0.8, `loss went down: ${losses.join(', ')}`)

  const hurt = await up(['--nodes', '4', '--steps', '16', '--kill-at', '6'])
  t.is(hurt.code, 0, hurt.out)
  t.regex(hurt.out, /killed w\d \(rank \d\) with SIGKILL at step \d+/)
  t.regex(hurt.out, /recovered: a spare took rank \d from the erasure-coded snapshots/)
  t.log(hurt.out.split('\n').filter(l => /killed|recovered|held-out/.test(l)).join('\n'))
  t.truthy(heldOut(clean.out))
  t.is(heldOut(hurt.out), heldOut(clean.out), 'the final weights score exactly as without the kill')
})

test('zeromesh up refuses bad flags with exit 2', async t => {
  for (const args of [['--nodes', '0'], ['--device', 'tpu'], ['--steps', '10', '--kill-at', '10'], ['--model', 'huge']]) {
    const r = await up(args)
    t.is(r.code, 2, `${args.join(' ')}: ${r.out}`)
  }
})
