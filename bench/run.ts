// `npm run bench -- <name>` runs bench/<name>.ts. Each prints JSON lines on stdout.
import { readdirSync } from 'node:fs'

const names = readdirSync(new URL('.', import.meta.url))
  .filter(f => f.endsWith('.ts') && f !== 'run.ts' && f !== 'harness.ts' && !f.startsWith('_'))
  .map(f => f.slice(0, -3))
const name = process.argv[2]
if (name === undefined || !names.includes(name)) {
  process.stderr.write(`usage: npm run bench -- <name>   (one of: ${names.join(', ')})\n`)
  process.exit(2)
}
process.stderr.write(`bench ${name}: node ${process.versions.node}, ${process.arch}\n`)
await import(`./${name}.ts`)
