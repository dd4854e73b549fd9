// The layer rules (test/helpers/layers.ts, SOURCE_LAYERS and ENTRY_FOLDERS): first the checker
// on small synthetic trees, one breaking and one keeping each rule, so it cannot pass by
// finding nothing; then the real tree.
import test from 'ava'
import { readdirSync, readFileSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import { join, relative } from 'node:path'
import { checkLayers, findImports, formatViolation, SCANNED_FOLDERS, type LayerRule, type LayerViolation } from './helpers/layers.ts'

const tree = (files: Record<string, string>): Map<string, string> => new Map(Object.entries(files))
const one = (file: string, text: string): LayerViolation[] => checkLayers(tree({ [file]: text }))

/** A tree with one file and one import: the import breaks `rule`, and the violation names the file, the line and the specifier. */
const breaks = test.macro((t, file: string, specifier: string, rule: LayerRule) => {
  const v = one(file, `// header\nimport { x } from '${specifier}'\n`)
  t.is(v.length, 1, v.map(formatViolation).join('\n'))
  t.like(v[0], { file, line: 2, specifier, rule })
  t.true(formatViolation(v[0]!).includes(`${file}:2: '${specifier}'`))
})

/** A tree with one file and one import that keeps every rule. */
const keeps = test.macro((t, file: string, specifier: string) => {
  t.deepEqual(one(file, `import { x } from '${specifier}'\n`).map(formatViolation), [])
})

// A folder imports only folders below it.
test('core importing codec breaks the order', breaks, 'core/rng.ts', '../codec/index.ts', 'upward')
test('codec importing core keeps it', keeps, 'codec/frame.ts', '../core/index.ts')
test('snapshot importing node breaks the order', breaks, 'snapshot/store.ts', '../node/index.ts', 'upward')
test('sim importing cli breaks the order', breaks, 'sim/train-run.ts', '../cli/index.ts', 'upward')
test('cli importing sim keeps it', keeps, 'cli/sim.ts', '../sim/index.ts')
// gpu and mesh sit side by side.
test('gpu importing mesh is a sibling import', breaks, 'gpu/backend.ts', '../mesh/index.ts', 'sibling')
test('mesh importing gpu is a sibling import', breaks, 'mesh/collective/ring.ts', '../../gpu/index.ts', 'sibling')
test('snapshot importing gpu keeps it', keeps, 'snapshot/capture.ts', '../gpu/index.ts')
test('snapshot importing mesh keeps it', keeps, 'snapshot/service.ts', '../mesh/index.ts')
// The worker never imports the simulator or the commands.
test('node importing sim is the worker reaching up', breaks, 'node/cli.ts', '../sim/index.ts', 'node-above')
test('node importing cli is the worker reaching up', breaks, 'node/train/run.ts', '../../cli/index.ts', 'node-above')
test('sim importing node keeps it', keeps, 'sim/train-run.ts', '../node/index.ts')
// Nothing imports bench.
test('a test importing bench breaks the bench rule', breaks, 'test/chaos/collective-processes.test.ts', '../../bench/_collective-procs.ts', 'bench')
test('cli importing bench breaks the bench rule', breaks, 'cli/up.ts', '../bench/index.ts', 'bench')
test('bench importing itself keeps it', keeps, 'bench/collective.ts', './_collective-procs.ts')
test('bench importing cli keeps it', keeps, 'bench/train.ts', '../cli/index.ts')
test('bench reusing a test harness keeps it', keeps, 'bench/collective.ts', '../test/helpers/collective-procs.ts')
test('bench importing a test file breaks the outside rule', breaks, 'bench/collective.ts', '../test/mesh/lp.test.ts', 'outside')
// Cross-folder imports go through the top-level index.ts.
test('sim importing core/clock.ts goes past the index', breaks, 'sim/net.ts', '../core/clock.ts', 'index-only')
test('node importing mesh/collective/index.ts goes past the top-level index', breaks, 'node/trainer.ts', '../mesh/collective/index.ts', 'index-only')
test('sim importing node/trainer.ts goes past the index', breaks, 'sim/train-run.ts', '../node/trainer.ts', 'index-only')
test('a file importing a file of its own folder keeps it', keeps, 'mesh/collective/ring.ts', '../peernet.ts')
// Tests reach internals; launchers reach cli.
test('a test importing an internal file keeps it', keeps, 'test/mesh/ring.test.ts', '../../mesh/collective/ring.ts')
test('a test importing a test helper keeps it', keeps, 'test/mesh/ring.test.ts', '../helpers/seed.ts')
test('bin importing cli keeps it', keeps, 'bin/zeromesh.js', '../cli/index.ts')
test('scripts importing cli keeps it', keeps, 'scripts/build.ts', '../cli/index.ts')
test('bin importing node breaks the order', breaks, 'bin/zeromesh.js', '../node/cli.ts', 'upward')
test('a source folder importing test/ imports outside the layers', breaks, 'core/rng.ts', '../test/helpers/seed.ts', 'outside')

test('a launcher naming the built copy (dist/) is judged as the source it was built from', t => {
  const launcher = (to: string): string => `const built = new URL('${to}', import.meta.url)\n`
  t.deepEqual(one('bin/zeromesh.js', launcher('../dist/cli/index.js')), [])
  t.like(one('bin/zeromesh.js', launcher('../dist/node/cli.js'))[0], { file: 'bin/zeromesh.js', line: 1, specifier: '../dist/node/cli.js', rule: 'upward' })
})

test('every form of import is found, with its line; comments, strings, templates and regular expressions are not imports', t => {
  const text = [
    "import a from '../a.ts'", // 1
    "import type { B } from '../b.ts'", // 2
    'import {', // 3
    '  c,',
    '  d',
    "} from '../cd.ts'", // 6
    "export * from '../e.ts'", // 7
    "export type { F } from '../f.ts'", // 8
    "export * as g from '../g.ts'", // 9
    "const h = await import('../h.ts')", // 10
    "type I = import('../i.ts').I", // 11
    "const j = new URL('../j.ts', import.meta.url)", // 12
    "// import k from '../k.ts'",
    "/* export * from '../l.ts' */",
    'const m = \'import n from "../n.ts"\'',
    // biome-ignore lint/suspicious/noTemplateCurlyInString: the text of a template literal under test
    "const o = `import p from '../p.ts' ${ { q: 1 }.q } export * from '../r.ts'`",
    "const s = /'/g.test(x) ? 1 : 2 / 3",
    'const u = { import: 1 }.import; export { u }',
    "import v from '../v.ts'" // 19
  ].join('\n')
  t.deepEqual(
    findImports(text).map(i => `${i.line} ${i.kind} ${i.specifier}`),
    [
      '1 import ../a.ts',
      '2 import type ../b.ts',
      '6 import ../cd.ts',
      '7 export from ../e.ts',
      '8 export from ../f.ts',
      '9 export from ../g.ts',
      '10 dynamic import ../h.ts',
      '11 dynamic import ../i.ts',
      '12 url ../j.ts',
      '19 import ../v.ts'
    ]
  )
})

test('every violation of a tree is reported at once, sorted by file and line', t => {
  const v = checkLayers(
    tree({
      'sim/net.ts': "import { ManualClock } from '../core/clock.ts'\nimport { x } from '../core/index.ts'\n",
      'node/cli.ts': "import a from '../mesh/index.ts'\n\nconst { runScenario } = await import('../sim/index.ts')\n",
      'core/clock.ts': "import { Rng } from './rng.ts'\nexport { y } from '../codec/index.ts'\n",
      // A file outside the scanned folders is not judged, whatever it imports.
      'docs/notes.ts': "import x from '../cli/up/run.ts'\n"
    })
  )
  t.deepEqual(
    v.map(x => `${x.file}:${x.line} ${x.specifier} ${x.rule}`),
    ['core/clock.ts:2 ../codec/index.ts upward', 'node/cli.ts:3 ../sim/index.ts node-above', 'sim/net.ts:1 ../core/clock.ts index-only']
  )
})

const root = fileURLToPath(new URL('..', import.meta.url))

/** Every .ts (and bin's .js) file of the scanned folders, repo-relative path -> text. */
function readTree(): Map<string, string> {
  const files = new Map<string, string>()
  const walk = (dir: string): void => {
    for (const e of readdirSync(dir, { withFileTypes: true })) {
      if (e.name === 'node_modules' || e.name === 'dist') continue
      const path = join(dir, e.name)
      if (e.isDirectory()) walk(path)
      else if (/\.(ts|js)$/.test(e.name)) files.set(relative(root, path).split('\\').join('/'), readFileSync(path, 'utf8'))
    }
  }
  for (const folder of SCANNED_FOLDERS) {
    try {
      walk(join(root, folder))
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err // a folder the tree does not have yet (cli/)
    }
  }
  return files
}

test('the real tree is scanned: every folder, more than 100 files and their imports', t => {
  const files = readTree()
  t.true(files.size > 100, `${files.size} files`)
  for (const folder of ['core', 'codec', 'gpu', 'mesh', 'snapshot', 'node', 'sim', 'bench', 'test', 'bin', 'scripts']) {
    t.true(
      [...files.keys()].some(f => f.startsWith(`${folder}/`)),
      `${folder}/ scanned`
    )
  }
  const imports = [...files.values()].reduce((n, text) => n + findImports(text).length, 0)
  t.true(imports > 500, `${imports} imports`)
})

// Failing until the restructuring branches land (each violation is one of theirs); the merge
// turns this into a plain `test`.
test('the real tree keeps the layer rules', t => {
  const v = checkLayers(readTree())
  t.deepEqual(v.map(formatViolation), [], `${v.length} layer violations:\n${v.map(formatViolation).join('\n')}`)
})
