import { createRequire } from 'node:module'

const require = createRequire(import.meta.url)

/** The package version, read from package.json (works from source and from dist/). */
export const VERSION: string = findVersion()

function findVersion(): string {
  for (const rel of ['../package.json', '../../package.json']) {
    try {
      const pkg = require(rel) as { name?: string; version?: string }
      if (pkg.name === 'zeromesh' && typeof pkg.version === 'string') return pkg.version
    } catch {}
  }
  return '0.0.0-unknown'
}
