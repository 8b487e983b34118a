/**
 * The import boundaries (eslint.config.js, import-x/no-restricted-paths) fail a deliberate violation: virtual files,
 * linted with ESLint's Node API as if they sat at the given path, importing real files of the repository (the rule
 * resolves an import to its file, so what it names must exist).
 * - the runtime (what `serve` loads) never imports a tool;
 * - simulator/ never imports the proxy (src/routes, src/plugins, src/app.ts), only the shared core;
 * - src/audit/ never imports the XML parser.
 */
import { readdir } from 'node:fs/promises'
import { join, resolve } from 'node:path'
import { pathToFileURL } from 'node:url'
import { ESLint } from 'eslint'
import t from 'tap'

const ROOT = resolve(import.meta.dirname, '..')
const eslint = new ESLint({ cwd: ROOT })
const BOUNDARY = 'import-x/no-restricted-paths'

/** The rules a virtual file at `path` breaks ("rule: message"), all rules included: a good file is clean. */
async function lint (path: string, code: string): Promise<string[]> {
  const [result] = await eslint.lintText(code, { filePath: join(ROOT, path) })
  return (result?.messages ?? []).map((m) => `${m.ruleId ?? 'fatal'}: ${m.message}`)
}
const rules = (messages: string[]): string[] => messages.map((m) => m.slice(0, m.indexOf(':')))

t.test('the runtime never imports a tool', async (t) => {
  let m = await lint('src/routes/x.ts', "import { startSimulator } from '../../simulator/server.ts'\n\nexport const x = startSimulator\n")
  t.same(rules(m), [BOUNDARY], 'a route importing the simulator')
  t.match(m[0], /"\.\.\/\.\.\/simulator\/server\.ts" imported in restricted zone\. The runtime/)
  m = await lint('src/app.ts', "export async function x (): Promise<unknown> {\n  return await import('./load/engine.ts')\n}\n")
  t.same(rules(m), [BOUNDARY], 'a dynamic import of the load tool')
  m = await lint('src/plugins/x.ts', "import * as demo from '../cli/demo.ts'\n\nexport const x = demo\n")
  t.same(rules(m), [BOUNDARY], 'a plugin importing a command of the tools\' command line')
  m = await lint('src/audit/worker2.ts', "import * as q from './query.ts'\n\nexport const x = q\n")
  t.same(rules(m), [BOUNDARY], 'the audit runtime importing the audit query tool')

  t.same(await lint('src/routes/x.ts', "import { Errors } from '../errors.ts'\nimport { readInputFile } from '../cli/io.ts'\n\nexport const x = [Errors, readInputFile]\n"), [],
    'a route importing the core and src/cli/io.ts (runtime)')
  t.same(await lint('src/load/x.ts', "import { startSimulator } from '../../simulator/server.ts'\n\nexport const x = startSimulator\n"), [],
    'a tool may import a tool')
})

t.test('simulator/ never imports the proxy, only the shared core', async (t) => {
  for (const spec of ['../src/forwarding/pipeline.ts', '../src/plugins/crypto.ts', '../src/app.ts']) {
    const m = await lint('simulator/x.ts', `import * as p from '${spec}'\n\nexport const x = p\n`)
    t.same(rules(m), [BOUNDARY], spec)
    t.match(m[0], /simulator\/ never imports the proxy/)
  }
  t.same(await lint('simulator/x.ts', "import * as a from '../src/xmldsig/index.ts'\nimport * as b from '../src/pki/x509.ts'\nimport * as c from '../src/errors.ts'\n\nexport const x = [a, b, c]\n"), [],
    'the core: xmldsig, pki, errors')
})

t.test('src/audit/ never imports the XML parser', async (t) => {
  let m = await lint('src/audit/x.ts', "import { parseXml } from '../xmldsig/xml.ts'\n\nexport const x = parseXml\n")
  t.same(rules(m), [BOUNDARY], 'the parser')
  t.match(m[0], /src\/audit\/ never imports the XML parser/)
  m = await lint('src/audit/x.ts', "import { DOMParser } from '@xmldom/xmldom'\n\nexport const x = DOMParser\n")
  t.same(rules(m), [BOUNDARY], 'another XML parser')
  // TODO(issue 12): facts.ts's exception (eslint.config.js): the tree from xml.ts, never its parser functions.
  m = await lint('src/audit/facts.ts', "import { parseXml } from '../xmldsig/xml.ts'\n\nexport const x = parseXml\n")
  t.same(rules(m), ['no-restricted-imports'], 'facts.ts importing parseXml')
  t.same(await lint('src/audit/facts.ts', "import { childElements } from '../xmldsig/xml.ts'\nimport type { XmlElement } from '../xmldsig/xml.ts'\n\nexport const x = (e: XmlElement) => childElements(e)\n"), [],
    'facts.ts reading the tree')
})

t.test('the runtime rule holds for every runtime file of src/, and for no tool', async (t) => {
  const { TOOLS, CLI_RUNTIME } = await import(pathToFileURL(join(ROOT, 'eslint.config.js')).href) as { TOOLS: string[], CLI_RUNTIME: string[] }
  const isTool = (f: string): boolean => !CLI_RUNTIME.some((c) => f === `src/cli/${c}`) && TOOLS.some((p) => f === p || f.startsWith(`${p}/`))
  const files = (await readdir(join(ROOT, 'src'), { recursive: true })).filter((f) => f.endsWith('.ts')).map((f) => `src/${f}`)
  const wrong: string[] = []
  for (const f of files) {
    const config = await eslint.calculateConfigForFile(join(ROOT, f)) as { rules?: Record<string, [unknown, { zones?: Array<{ message?: string }> }?]> }
    const zones = config.rules?.[BOUNDARY]?.[1]?.zones ?? []
    const runtime = zones.some((z) => z.message?.startsWith('The runtime') === true)
    if (runtime === isTool(f)) wrong.push(`${f}: ${isTool(f) ? 'tool' : 'runtime'}, runtime rule ${runtime ? 'on' : 'off'}`)
  }
  t.same(wrong, [], `${files.length} files of src/`)
})
