/**
 * Rules of the codebase's shape, enforced here (and, file by file, by eslint.config.js's import boundaries,
 * test/lint.test.ts) so that they hold without anyone remembering them:
 * - what `serve` loads (the product) never imports a tool: the simulator, the demo, the load tool, the samples, the
 *   command line's other commands, the local AWS endpoint;
 * - one forwarding pipeline: only src/forwarding/pipeline.ts sends a request to BACEN (Upstream.request), so every
 *   call goes through `Forwarding.forward()`, which owns its audit row and decides its outcome class (docs/outcomes.md).
 */
import { readdir, readFile } from 'node:fs/promises'
import { dirname, join, relative, resolve } from 'node:path'
import { pathToFileURL } from 'node:url'
import t from 'tap'

const ROOT = resolve(import.meta.dirname, '..')

/** Relative imports of a TypeScript file (static and dynamic), resolved to repository paths. */
async function importsOf (file: string): Promise<string[]> {
  const text = await readFile(join(ROOT, file), 'utf8')
  const out: string[] = []
  for (const m of text.matchAll(/(?:^|\n)\s*(?:import|export)\s[^'"]*?from\s+'(\.[^']+)'|import\(\s*'(\.[^']+)'\s*\)/g)) {
    const spec = m[1] ?? m[2]
    if (spec === undefined) continue
    out.push(relative(ROOT, resolve(ROOT, dirname(file), spec)))
  }
  return out
}

/** Every repository file reachable by relative imports from `entry`. */
async function closure (entry: string): Promise<Set<string>> {
  const seen = new Set<string>()
  const todo = [entry]
  while (todo.length > 0) {
    const f = todo.pop() as string
    if (seen.has(f)) continue
    seen.add(f)
    for (const d of await importsOf(f)) if (d.endsWith('.ts')) todo.push(d)
  }
  return seen
}

/**
 * The tools: what a bank runs around the product, never inside it. One list, TOOLS in eslint.config.js (folders and
 * files), whose import-x/no-restricted-paths rule checks each runtime file's imports; this test checks the closure.
 */
const { TOOLS, CLI_RUNTIME } = await import(pathToFileURL(join(ROOT, 'eslint.config.js')).href) as { TOOLS: string[], CLI_RUNTIME: string[] }
function isTool (f: string): boolean {
  if (CLI_RUNTIME.some((c) => f === `src/cli/${c}`)) return false
  return TOOLS.some((p) => f === p || f.startsWith(`${p}/`))
}

t.test('what serve loads never imports a tool', async (t) => {
  // The container's entrypoint runs src/server.ts; `pix-proxy serve` runs src/cli/serve.ts.
  const product = new Set([...await closure('src/server.ts'), ...await closure('src/cli/serve.ts')])
  t.ok(product.has('src/forwarding/pipeline.ts') && product.has('src/app.ts'), `the closure is the product (${product.size} files)`)
  const tools = [...product].filter(isTool).sort()
  t.same(tools, [], 'no tool in the product\'s import closure')
})

t.test('one forwarding pipeline: only forwarding/pipeline.ts sends requests to BACEN', async (t) => {
  const files = (await readdir(join(ROOT, 'src'), { recursive: true })).filter((f) => f.endsWith('.ts')).map((f) => `src/${f}`)
  const senders: string[] = []
  for (const f of files) {
    const text = await readFile(join(ROOT, f), 'utf8')
    // Upstream.request through the upstreams (by name or index) or a variable holding one.
    if (/\bupstreams(\.(dict|spi)|\[[^\]]+\])\.request\(|\bupstream\.request\(/.test(text)) senders.push(f)
  }
  t.same(senders, ['src/forwarding/pipeline.ts'], 'every call to BACEN goes through the pipeline')
  // And the routes reach BACEN only through forward() (audited, outcome-classed), never a bare send(): the one
  // unaudited send is the ICOM batcher's post (icom/icom.ts), whose messages are each forward()ed with it as their
  // policy's send.
  for (const f of ['src/routes/dict.ts', 'src/routes/spi.ts']) {
    const text = await readFile(join(ROOT, f), 'utf8')
    const forwards = [...text.matchAll(/\.forwarding\.forward\(/g)].length
    const bare = [...text.matchAll(/\.forwarding\.send\(/g)].length
    t.ok(forwards >= 1, `${f}: its calls go through forward() (${forwards})`)
    t.equal(bare, 0, `${f}: no bare send()`)
  }
})
