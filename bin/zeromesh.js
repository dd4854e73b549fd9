#!/usr/bin/env node
// Launcher. In a source checkout it runs the TypeScript sources directly (Node >= 22.18 strips
// types); in an installed package, where Node refuses to strip types under node_modules and
// only the built dist/ ships, it runs the emitted JavaScript.
import { existsSync } from 'node:fs'

const source = new URL('../cli/index.ts', import.meta.url)
const built = new URL('../dist/cli/index.js', import.meta.url)
const useSource = existsSync(source)

if (useSource && !process.features.typescript) {
  process.stderr.write(
    `zeromesh: Node ${process.versions.node} cannot run TypeScript sources; ` +
      'run it through npm (npx zeromesh, npm start), which uses the Node 24 the package depends on\n'
  )
  process.exit(1)
}
const { main } = await import((useSource ? source : built).href)
process.exitCode = await main(process.argv.slice(2))
