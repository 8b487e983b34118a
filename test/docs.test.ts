/**
 * References to documentation stay true: every `*.md` a source, test, benchmark or document names exists in this
 * repository, every `docs/bacen.md §N.N` names a section that exists, every `<doc> "Heading"` a heading that
 * exists, and nothing cites the reference notes the project was researched from (they are not in the repository;
 * docs/bacen.md and docs/hsm-and-tls.md hold what the code relies on, with public sources).
 */
import t from 'tap'
import { existsSync } from 'node:fs'
import { readdir, readFile, stat } from 'node:fs/promises'
import { dirname, join, relative } from 'node:path'
import { fileURLToPath } from 'node:url'

const ROOT = fileURLToPath(new URL('..', import.meta.url))
const SCANNED = ['src', 'core', 'tools', 'bench', 'docs', 'test', 'README.md']
const SKIP_DIRS = new Set(['node_modules', 'dist', '.git', '.c8', '.tap', '.local', '__pycache__'])
const SELF = relative(ROOT, fileURLToPath(import.meta.url))

interface TextFile { readonly path: string, readonly text: string }

async function walk (rel: string, out: TextFile[]): Promise<void> {
  const abs = join(ROOT, rel)
  const st = await stat(abs)
  if (st.isDirectory()) {
    for (const e of await readdir(abs, { withFileTypes: true })) {
      if (e.isDirectory() && SKIP_DIRS.has(e.name)) continue
      await walk(join(rel, e.name), out)
    }
    return
  }
  if (!st.isFile() || st.size > 2 * 1024 * 1024) return
  const buf = await readFile(abs)
  if (buf.includes(0)) return // binary
  out.push({ path: rel, text: buf.toString('utf8') })
}

const files: TextFile[] = []
for (const s of SCANNED) if (existsSync(join(ROOT, s))) await walk(s, files)

/** URLs name other people's files (a repository's README.md, a third party's notes): not ours to check. */
const withoutUrls = (text: string): string => text.replace(/https?:\/\/[^\s)>'"`\]]+/g, '')

/** A `*.md` path (relative, possibly with ./ or ../), not glued to a longer path or word before it. */
const MD_REF = /(?<![\w./${}-])((?:\.{1,2}\/)*(?:[\w-]+\/)*[\w.-]+\.md)\b/g

/** Where a reference from `file` may point: next to the file, from the repository root, or in docs/. */
function resolveDoc (file: string, ref: string): string | null {
  for (const base of [dirname(file), '.', 'docs']) {
    const p = join(base, ref)
    if (!p.startsWith('..') && existsSync(join(ROOT, p))) return p
  }
  return null
}

function headings (markdown: string): string[] {
  return [...markdown.matchAll(/^#{1,6}\s+(.+?)\s*$/gm)].map((m) => m[1] as string)
}

t.test('the scan sees the project', async (t) => {
  t.ok(files.length > 100, `${files.length} files scanned`)
  for (const p of ['docs/bacen.md', 'docs/hsm-and-tls.md', 'src/routes/spi.ts', 'tools/simulator/app.ts']) {
    t.ok(files.some((f) => f.path === p), `${p} is scanned`)
  }
})

t.test('every referenced .md document exists in the repository', async (t) => {
  const missing: string[] = []
  let checked = 0
  for (const f of files) {
    if (f.path === SELF) continue // its examples are not references
    const lines = withoutUrls(f.text).split('\n')
    lines.forEach((line, i) => {
      for (const m of line.matchAll(MD_REF)) {
        checked++
        if (resolveDoc(f.path, m[1] as string) === null) missing.push(`${f.path}:${i + 1}: ${m[1] as string}`)
      }
    })
  }
  t.ok(checked > 50, `${checked} references checked`)
  t.same(missing, [], 'no reference to a document that is not in the repository')
})

t.test('every docs/bacen.md §section cited exists', async (t) => {
  const bacen = await readFile(join(ROOT, 'docs/bacen.md'), 'utf8')
  const sections = new Set(headings(bacen).map((h) => /^(\d+(?:\.\d+)*)\.?\s/.exec(h)?.[1]).filter((n) => n !== undefined))
  t.ok(sections.has('1') && sections.has('3.1'), 'numbered sections are found')
  // After "bacen.md": §N, §N.N, ranges (§2.7–2.8, §1–§3), joined by commas, "and" and (SPI)/(DICT) remarks.
  const CITATION = /bacen\.md((?:[\s*#/,]|and|\(?(?:SPI|DICT)\)?|§\s*\d+(?:\.\d+)*(?:\s*[–-]\s*§?\d+(?:\.\d+)*)?)*)/g
  const bad: string[] = []
  let cited = 0
  for (const f of files) {
    for (const m of f.text.matchAll(CITATION)) {
      for (const n of (m[1] as string).matchAll(/\d+(?:\.\d+)*/g)) {
        cited++
        if (!sections.has(n[0])) bad.push(`${f.path}: §${n[0]}`)
      }
    }
  }
  t.ok(cited > 20, `${cited} section citations checked`)
  t.same(bad, [], 'every cited section is a numbered heading of docs/bacen.md')
})

t.test('every <doc> "Heading" cited names a heading of that document', async (t) => {
  const bad: string[] = []
  for (const f of files) {
    for (const m of withoutUrls(f.text).matchAll(/((?:[\w-]+\/)*[\w.-]+\.md) "([^"\n]+)"/g)) {
      const target = resolveDoc(f.path, m[1] as string)
      if (target === null) continue // reported by the test above
      const heads = headings(await readFile(join(ROOT, target), 'utf8'))
      // A title may be cited without a heading's trailing remark, e.g. "(`src/tls/`)".
      if (!heads.some((h) => h === m[2] || h.startsWith(`${m[2] as string} (`))) bad.push(`${f.path}: ${m[1] as string} "${m[2] as string}"`)
    }
  }
  t.same(bad, [])
})

t.test('nothing cites the research notes or paths outside the repository', async (t) => {
  // Spelled in pieces so that this file does not match itself.
  const forbidden = [['pix', 'protocol'].join('-'), ['hsm-and-tls', 'notes'].join('-'), ['', 'work', 'shared'].join('/'), ['..', 'shared', ''].join('/')]
  const hits: string[] = []
  for (const f of files) {
    if (f.path === SELF) continue
    for (const word of forbidden) if (f.text.includes(word)) hits.push(`${f.path}: ${word}`)
  }
  t.same(hits, [])
})

t.test('docs/architecture.md matches the tree: every folder described, every path named exists, every plugin drawn is registered', async (t) => {
  const doc = await readFile(join(ROOT, 'docs/architecture.md'), 'utf8')
  // Every folder of the three trees (and the trees themselves) has a row of the "Where each concern lives" table.
  const rows = new Set([...doc.matchAll(/^\| `([^`]+)` \|/gm)].map((m) => (m[1] as string).replace(/\/$/, '')))
  const folders = ['src', 'core', 'tools']
  for (const tree of ['src', 'core', 'tools']) {
    for (const e of await readdir(join(ROOT, tree), { withFileTypes: true })) if (e.isDirectory()) folders.push(`${tree}/${e.name}`)
  }
  t.same(folders.filter((f) => !rows.has(f)), [], `${folders.length} folders, each with its row`)
  // Every repository path it names exists (files and folders, in backticks or in the call walkthroughs).
  const named = new Set([...doc.matchAll(/\b((?:src|core|tools|test)\/[A-Za-z0-9_./-]*[A-Za-z0-9_])/g)].map((m) => m[1] as string))
  t.same([...named].filter((p) => !existsSync(join(ROOT, p))).sort(), [], `${named.size} paths named`)
  // The picture's plugins are the ones src/ registers under those names.
  const picture = /```mermaid\n([\s\S]*?)```/.exec(doc)?.[1] ?? ''
  const drawn = new Set([...picture.matchAll(/\bpix-[a-z-]+\b/g)].map((m) => m[0]))
  const registered = new Set<string>()
  for (const f of await readdir(join(ROOT, 'src/plugins'))) {
    for (const m of (await readFile(join(ROOT, 'src/plugins', f), 'utf8')).matchAll(/name: '(pix-[a-z-]+)'/g)) registered.add(m[1] as string)
  }
  t.ok(drawn.size >= 8, `${drawn.size} plugins drawn`)
  t.same([...drawn].filter((n) => !registered.has(n)).sort(), [], 'each drawn plugin is registered under its name')
  t.same([...registered].filter((n) => !drawn.has(n)).sort(), [], 'and each registered plugin is drawn')
})
