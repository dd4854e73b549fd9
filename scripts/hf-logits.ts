// Our logits of a few tokens under a checkpoint (an HF GPT-2 dir or a zeromesh export), as a
// .npy file [tokens, vocabulary] of little-endian f32, for scripts/hf-transformers-check.py.
// Usage: node scripts/hf-logits.ts <checkpoint> <id,id,...> <out.npy> [cpu|cuda]
import { writeFileSync } from 'node:fs'
import { modelLogits } from '../cli/index.ts'

const [from, idList, out, device = 'cpu'] = process.argv.slice(2)
if (from === undefined || idList === undefined || out === undefined || (device !== 'cpu' && device !== 'cuda')) {
  process.stderr.write('usage: node scripts/hf-logits.ts <checkpoint dir or file> <id,id,...> <out.npy> [cpu|cuda]\n')
  process.exit(2)
}
const ids = idList.split(',').map(Number)
const { config, logits } = await modelLogits({ from }, ids, device)
const V = config.vocabSize
// .npy version 1.0: magic, version, u16 header length, a Python dict literal padded to 64 bytes.
let header = `{'descr': '<f4', 'fortran_order': False, 'shape': (${ids.length}, ${V}), }`
header += ' '.repeat(63 - ((10 + header.length) % 64)) + '\n'
const head = Buffer.alloc(10)
head.write('\x93NUMPY', 0, 'latin1')
head.writeUInt8(1, 6)
head.writeUInt8(0, 7)
head.writeUInt16LE(header.length, 8)
const data = Buffer.alloc(ids.length * V * 4)
logits.forEach((row, t) => Buffer.from(row.buffer, row.byteOffset, V * 4).copy(data, t * V * 4))
writeFileSync(out, Buffer.concat([head, Buffer.from(header, 'latin1'), data]))
process.stdout.write(`${JSON.stringify({ out, tokens: ids.length, vocab: V, device })}\n`)
