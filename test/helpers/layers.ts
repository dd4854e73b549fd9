// The layer rules of the tree and a pure checker for them (test/layers.test.ts runs it on the
// real files). Imports are found with TypeScript's own scanner, so comments, strings, template
// literals and regular expressions never yield a false import.
import { posix } from 'node:path'
import { SyntaxKind } from 'typescript/unstable/ast'
import { createScanner, tokenIsIdentifierOrKeyword, type Scanner } from 'typescript/unstable/ast/scanner'

/**
 * The source folders, lowest first, and what each may import. A source folder imports only
 * folders below it, and only through their top-level `index.ts`; inside one folder, files import
 * each other directly. gpu and mesh sit side by side and do not import each other; node (the
 * worker) never imports sim or cli; nothing but bench itself imports bench.
 */
export const SOURCE_LAYERS: Readonly<Record<string, readonly string[]>> = {
  core: [],
  codec: ['core'],
  gpu: ['core', 'codec'],
  mesh: ['core', 'codec'],
  snapshot: ['core', 'codec', 'gpu', 'mesh'],
  node: ['core', 'codec', 'gpu', 'mesh', 'snapshot'],
  sim: ['core', 'codec', 'gpu', 'mesh', 'snapshot', 'node'],
  cli: ['core', 'codec', 'gpu', 'mesh', 'snapshot', 'node', 'sim'],
  bench: ['core', 'codec', 'gpu', 'mesh', 'snapshot', 'node', 'sim', 'cli']
}

/**
 * Folders outside the layers. `test` may import any file of any folder (unit tests reach
 * internals) except bench; `bin` and `scripts` are entry points that may import cli (through
 * its index.ts). Nothing imports these folders from a source folder.
 */
export const ENTRY_FOLDERS: Readonly<Record<string, { readonly mayImport: readonly string[]; readonly internals: boolean }>> = {
  test: { mayImport: ['core', 'codec', 'gpu', 'mesh', 'snapshot', 'node', 'sim', 'cli', 'bin', 'scripts'], internals: true },
  bin: { mayImport: ['cli'], internals: false },
  scripts: { mayImport: ['cli'], internals: false }
}

/**
 * What bench/ may take from test/: the process harnesses under test/helpers/ (e.g. the collective
 * worker processes), so a benchmark and a test drive the same workers instead of two copies.
 */
export const BENCH_MAY_USE = 'test/helpers/'

/** The folders whose files the layer test reads (bin holds JavaScript). */
export const SCANNED_FOLDERS: readonly string[] = [...Object.keys(SOURCE_LAYERS), ...Object.keys(ENTRY_FOLDERS)]

/** How a module names another one. `url` is `new URL('./x.ts', import.meta.url)` (a spawned worker or a computed import). */
export type ImportKind = 'import' | 'import type' | 'export from' | 'dynamic import' | 'url'

/** One import found in a file. */
export interface FoundImport {
  /** 1-based line of the specifier. */
  line: number
  kind: ImportKind
  specifier: string
}

/** The rule a violation breaks (stable ids, for tests and docs). */
export type LayerRule = 'upward' | 'sibling' | 'node-above' | 'bench' | 'index-only' | 'outside'

/** One broken rule: the importing file, the line and the import as written. */
export interface LayerViolation {
  file: string
  line: number
  specifier: string
  rule: LayerRule
  message: string
}

/** Token kinds after which a `/` divides; anywhere else it starts a regular expression. */
const ENDS_OPERAND = new Set<SyntaxKind>([
  SyntaxKind.NumericLiteral,
  SyntaxKind.BigIntLiteral,
  SyntaxKind.StringLiteral,
  SyntaxKind.NoSubstitutionTemplateLiteral,
  SyntaxKind.TemplateTail,
  SyntaxKind.RegularExpressionLiteral,
  SyntaxKind.CloseParenToken,
  SyntaxKind.CloseBracketToken,
  SyntaxKind.CloseBraceToken,
  SyntaxKind.PlusPlusToken,
  SyntaxKind.MinusMinusToken
])

/** Keywords followed by an expression (`return /x/`); every other word (`number`, `this`, a name) ends an operand. */
const BEFORE_EXPRESSION = new Set<SyntaxKind>([
  SyntaxKind.ReturnKeyword,
  SyntaxKind.TypeOfKeyword,
  SyntaxKind.CaseKeyword,
  SyntaxKind.ThrowKeyword,
  SyntaxKind.DeleteKeyword,
  SyntaxKind.VoidKeyword,
  SyntaxKind.InKeyword,
  SyntaxKind.OfKeyword,
  SyntaxKind.InstanceOfKeyword,
  SyntaxKind.NewKeyword,
  SyntaxKind.YieldKeyword,
  SyntaxKind.AwaitKeyword,
  SyntaxKind.ElseKeyword,
  SyntaxKind.DoKeyword
])

const endsOperand = (k: SyntaxKind | undefined): boolean =>
  k !== undefined && (ENDS_OPERAND.has(k) || (tokenIsIdentifierOrKeyword(k) && !BEFORE_EXPRESSION.has(k)))

interface Token {
  kind: SyntaxKind
  text: string
  value: string
  pos: number
}

/**
 * The tokens of a TypeScript or JavaScript file, trivia skipped. The scanner alone cannot tell
 * a regular expression from a division or see where a template's `${...}` ends (the parser
 * tells it); both are decided here from the previous token and a brace stack.
 */
export function tokenize(text: string): Token[] {
  const s: Scanner = createScanner(true)
  s.setText(text)
  const out: Token[] = []
  const braces: Array<'block' | 'template'> = []
  let prev: SyntaxKind | undefined
  for (let k = s.scan(); k !== SyntaxKind.EndOfFile; k = s.scan()) {
    if ((k === SyntaxKind.SlashToken || k === SyntaxKind.SlashEqualsToken) && !endsOperand(prev)) {
      k = s.reScanSlashToken()
    } else if (k === SyntaxKind.OpenBraceToken) {
      braces.push('block')
    } else if (k === SyntaxKind.TemplateHead) {
      braces.push('template')
    } else if (k === SyntaxKind.CloseBraceToken && braces.pop() === 'template') {
      k = s.reScanTemplateToken(false)
      if (k === SyntaxKind.TemplateMiddle) braces.push('template')
    }
    out.push({ kind: k, text: s.getTokenText(), value: s.getTokenValue(), pos: s.getTokenStart() })
    prev = k
  }
  return out
}

const isString = (t: Token | undefined): boolean =>
  t !== undefined && (t.kind === SyntaxKind.StringLiteral || t.kind === SyntaxKind.NoSubstitutionTemplateLiteral)
const isFrom = (t: Token | undefined): boolean => t !== undefined && t.kind === SyntaxKind.FromKeyword

/** Every import, re-export, literal dynamic import and `new URL('./x.ts', import.meta.url)` of a file's text. */
export function findImports(text: string): FoundImport[] {
  const toks = tokenize(text)
  const lines = lineStarts(text)
  const found: FoundImport[] = []
  const add = (t: Token, kind: ImportKind): void => {
    found.push({ line: lineOf(lines, t.pos), kind, specifier: t.value })
  }
  for (let i = 0; i < toks.length; i++) {
    const t = toks[i]!
    const before = toks[i - 1]
    if (before?.kind === SyntaxKind.DotToken || before?.kind === SyntaxKind.QuestionDotToken) continue
    if (t.kind === SyntaxKind.ImportKeyword) {
      const next = toks[i + 1]
      if (next?.kind === SyntaxKind.DotToken) continue // import.meta
      if (next?.kind === SyntaxKind.OpenParenToken) {
        if (isString(toks[i + 2])) add(toks[i + 2]!, 'dynamic import')
        continue
      }
      if (isString(next)) {
        add(next!, 'import')
        continue
      }
      const j = clauseEnd(toks, i + 1)
      if (j !== undefined) add(toks[j]!, next?.kind === SyntaxKind.TypeKeyword ? 'import type' : 'import')
    } else if (t.kind === SyntaxKind.ExportKeyword) {
      const next = toks[i + 1]
      const start = next?.kind === SyntaxKind.TypeKeyword ? i + 2 : i + 1
      const head = toks[start]
      if (head?.kind !== SyntaxKind.AsteriskToken && head?.kind !== SyntaxKind.OpenBraceToken) continue
      const j = clauseEnd(toks, start)
      if (j !== undefined) add(toks[j]!, 'export from')
    } else if (t.kind === SyntaxKind.NewKeyword && toks[i + 1]?.text === 'URL' && toks[i + 2]?.kind === SyntaxKind.OpenParenToken) {
      const spec = toks[i + 3]
      if (isString(spec) && /\.[cm]?[jt]s$/.test(spec!.value) && spec!.value.startsWith('.') && toks[i + 5]?.kind === SyntaxKind.ImportKeyword)
        add(spec!, 'url')
    }
  }
  return found
}

/**
 * From the first token of an import or export clause: the index of the `from` specifier, or
 * undefined when the statement has none (`export { a }`). A clause is a default name, `* as x`
 * and/or one `{ ... }` list, so `from` comes within a few tokens after the braces close.
 */
function clauseEnd(toks: Token[], start: number): number | undefined {
  let depth = 0
  for (let i = start; i < toks.length && i < start + 4096; i++) {
    const k = toks[i]!.kind
    if (k === SyntaxKind.OpenBraceToken) depth++
    else if (k === SyntaxKind.CloseBraceToken) depth--
    else if (depth === 0 && isFrom(toks[i]) && isString(toks[i + 1])) return i + 1
    else if (depth === 0 && (k === SyntaxKind.SemicolonToken || k === SyntaxKind.EqualsToken || k === SyntaxKind.OpenParenToken)) return undefined
    if (depth < 0) return undefined
    // Past the clause (`export { a }` then the next statement) without a `from`.
    if (depth === 0 && k === SyntaxKind.CloseBraceToken && !isFrom(toks[i + 1])) return undefined
  }
  return undefined
}

function lineStarts(text: string): number[] {
  const starts = [0]
  for (let i = 0; i < text.length; i++) if (text.charCodeAt(i) === 10) starts.push(i + 1)
  return starts
}

function lineOf(starts: number[], pos: number): number {
  let lo = 0
  let hi = starts.length - 1
  while (lo < hi) {
    const mid = (lo + hi + 1) >> 1
    if (starts[mid]! <= pos) lo = mid
    else hi = mid - 1
  }
  return lo + 1
}

/** The top-level folder of a repo-relative path (`mesh/collective/ring.ts` -> `mesh`), or undefined for a file at the root. */
function topFolder(path: string): string | undefined {
  const i = path.indexOf('/')
  return i < 0 ? undefined : path.slice(0, i)
}

/** The rule an import from `from` (a folder) to `target` (a repo-relative path) breaks, if any. */
function judge(from: string, target: string): { rule: LayerRule; message: string } | undefined {
  const to = topFolder(target)
  if (to === from) return undefined
  if (to === 'bench') return { rule: 'bench', message: `nothing outside bench/ imports bench/ (${target})` }
  if (from === 'bench' && target.startsWith(BENCH_MAY_USE)) return undefined
  const entry = ENTRY_FOLDERS[from]
  const allowed = entry?.mayImport ?? SOURCE_LAYERS[from] ?? []
  if (to === undefined || (SOURCE_LAYERS[to] === undefined && !allowed.includes(to))) {
    return { rule: 'outside', message: `${from}/ imports ${target}, outside the folders it may import` }
  }
  if (!allowed.includes(to)) {
    if (from === 'node' && (to === 'sim' || to === 'cli')) return { rule: 'node-above', message: `node/ (the worker) never imports ${to}/` }
    if ((from === 'gpu' && to === 'mesh') || (from === 'mesh' && to === 'gpu')) return { rule: 'sibling', message: 'gpu/ and mesh/ do not import each other' }
    return { rule: 'upward', message: `${from}/ imports ${to}/, which is not below it (${from}/ may import: ${allowed.join(', ') || 'nothing'})` }
  }
  if (entry?.internals === true) return undefined
  if (SOURCE_LAYERS[to] !== undefined && target !== `${to}/index.ts`) {
    return { rule: 'index-only', message: `a cross-folder import goes through ${to}/index.ts, not ${target}` }
  }
  return undefined
}

/** A launcher's path into the build output (`dist/cli/index.js`) judged as the source it was built from (`cli/index.ts`). */
function builtToSource(target: string): string {
  return target.startsWith('dist/') ? target.slice('dist/'.length).replace(/\.js$/, '.ts') : target
}

/**
 * The layer violations of a tree, given as repo-relative path -> file text (pure: reads
 * nothing else). Files outside SCANNED_FOLDERS and non-relative specifiers (packages,
 * `node:`) are not judged. Sorted by file and line.
 */
export function checkLayers(files: ReadonlyMap<string, string>): LayerViolation[] {
  const out: LayerViolation[] = []
  for (const [file, text] of files) {
    const from = topFolder(file)
    if (from === undefined || !SCANNED_FOLDERS.includes(from)) continue
    for (const imp of findImports(text)) {
      if (!imp.specifier.startsWith('./') && !imp.specifier.startsWith('../')) continue
      const target = builtToSource(posix.normalize(posix.join(posix.dirname(file), imp.specifier)))
      const bad = target.startsWith('../') ? { rule: 'outside' as const, message: `${imp.specifier} leaves the repository` } : judge(from, target)
      if (bad !== undefined) out.push({ file, line: imp.line, specifier: imp.specifier, ...bad })
    }
  }
  return out.sort((a, b) => (a.file < b.file ? -1 : a.file > b.file ? 1 : a.line - b.line))
}

/** One line per violation: `file:line: import 'specifier': message [rule]`. */
export function formatViolation(v: LayerViolation): string {
  return `${v.file}:${v.line}: '${v.specifier}': ${v.message} [${v.rule}]`
}
