// NCCL between two processes on two GPUs of one host (the intra-host tier), `npm run bench -- nccl`:
//   nccl.init        seconds for both ranks to join (rank 0's unique id relayed over stdin)
//   nccl.check       each collective on f32 and bf16 compared exactly with the known sum
//   nccl.allreduce   median seconds per all-reduce of f32 buffers, algorithm and bus bandwidth,
//                    beside the device-to-device copy bandwidth measured in the same process
// One JSON object per line on stdout, and in $OUT/nccl.jsonl when $OUT is set. Where the host has
// fewer than two GPUs or no NCCL it prints one line saying why and exits 0.
// Env: BENCH_NCCL_SIZES (comma-separated f32 element counts, default 262144,4194304,67108864).
import { appendFileSync } from 'node:fs'
import { join } from 'node:path'
import { ncclRanksUnavailable, runNcclRanks } from '../test/helpers/nccl-ranks.ts'

const NRANKS = 2
const out = process.env['OUT']
const emit = (line: Record<string, unknown>): void => {
  const s = JSON.stringify(line)
  process.stdout.write(`${s}\n`)
  if (out !== undefined) appendFileSync(join(out, 'nccl.jsonl'), `${s}\n`)
}
const sizes = (process.env['BENCH_NCCL_SIZES'] ?? '262144,4194304,67108864').split(',').map(Number)

const why = ncclRanksUnavailable(NRANKS)
if (why !== undefined) {
  process.stderr.write(`bench nccl: skipping: ${why}\n`)
  emit({ bench: 'nccl', skipped: why })
} else {
  await runNcclRanks(NRANKS, sizes, line => {
    if (typeof line['id'] !== 'string') emit(line)
  })
}
