/**
 * Rules of the codebase's shape, enforced here (and, file by file, by eslint.config.js's import boundaries,
 * test/lint.test.ts) so that they hold without anyone remembering them:
 * - what `serve` loads (the product, src/) never imports a tool (tools/: the simulator, the demo, the load tool, the
 *   samples, the command line's other commands, the local AWS endpoint); core/ imports only core/; the simulator only
 *   core/;
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
 * The three trees (eslint.config.js TOOLS and CORE, docs/architecture.md): src/ the product, core/ what the product
 * and the tools share, tools/ (with bench/ and test/) everything else. import-x/no-restricted-paths checks each file's
 * own imports; this test checks the whole closure of what `serve` loads.
 */
const { TOOLS, CORE } = await import(pathToFileURL(join(ROOT, 'eslint.config.js')).href) as { TOOLS: string[], CORE: string[] }
const under = (dirs: string[], f: string): boolean => dirs.some((p) => f.startsWith(`${p}/`))

t.test('what serve and gateway load is src/ and core/ only, never a tool', async (t) => {
  // The container's entrypoint runs src/server.ts; `pix-proxy serve` runs src/cli/serve.ts. The product has a second
  // entry point, the inbound mTLS gateway (`pix-proxy gateway`: src/cli/gateway.ts -> src/gateway/server.ts): the
  // product is the union of both closures, and the gateway's alone is held to the same rules.
  const serve = new Set([...await closure('src/server.ts'), ...await closure('src/cli/serve.ts')])
  const gateway = new Set([...await closure('src/gateway/server.ts'), ...await closure('src/cli/gateway.ts')])
  t.ok(gateway.has('src/gateway/gateway.ts') && gateway.has('src/gateway/config.ts'), `the gateway's closure is the gateway (${gateway.size} files)`)
  t.notOk(gateway.has('src/app.ts') || gateway.has('src/forwarding/pipeline.ts'), 'the gateway does not load the PIX proxy')
  t.ok(gateway.has('src/audit/remote.ts'), "the gateway's audit trail runs in the audit worker thread, as the proxy's does")
  t.notOk([...serve].some((f) => f.startsWith('src/gateway/')), 'serve does not load the gateway')
  const product = new Set([...serve, ...gateway])
  t.ok(product.has('src/forwarding/pipeline.ts') && product.has('src/app.ts'), `the closure is the product (${product.size} files)`)
  t.same([...product].filter((f) => under(TOOLS, f)).sort(), [], 'no tool in the product\'s import closure')
  t.same([...product].filter((f) => !under(['src', ...CORE], f)).sort(), [], 'nothing outside src/ and core/')
  // And src/ holds nothing serve does not load: what is in src/ ships and runs.
  const src = (await readdir(join(ROOT, 'src'), { recursive: true })).filter((f) => f.endsWith('.ts')).map((f) => `src/${f}`)
  const notLoaded = src.filter((f) => !product.has(f) && f !== 'src/http/tracing-otel.ts' && f !== 'src/audit/worker.ts' && f !== 'src/audit/ship-worker.ts')
  t.same(notLoaded, [], 'every file of src/ is the product, served by serve or gateway (tracing-otel.ts and the audit threads are loaded lazily)')
})

t.test('core/ imports only core/', async (t) => {
  const files = (await readdir(join(ROOT, 'core'), { recursive: true })).filter((f) => f.endsWith('.ts')).map((f) => `core/${f}`)
  const outside: string[] = []
  for (const f of files) for (const d of await importsOf(f)) if (!d.startsWith('core/')) outside.push(`${f} -> ${d}`)
  t.same(outside, [], `${files.length} files of core/`)
})

t.test('the simulator (BACEN\'s stand-in) imports only core/', async (t) => {
  const sim = (await readdir(join(ROOT, 'tools/simulator'), { recursive: true })).filter((f) => f.endsWith('.ts')).map((f) => `tools/simulator/${f}`)
  const outside: string[] = []
  for (const f of sim) for (const d of await importsOf(f)) if (!d.startsWith('core/') && !d.startsWith('tools/simulator/')) outside.push(`${f} -> ${d}`)
  t.same(outside, [], `${sim.length} files of tools/simulator/`)
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
