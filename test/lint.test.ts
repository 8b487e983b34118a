/**
 * The import boundaries (eslint.config.js, import-x/no-restricted-paths) fail a deliberate violation: virtual files,
 * linted with ESLint's Node API as if they sat at the given path, importing real files of the repository (the rule
 * resolves an import to its file, so what it names must exist).
 * - the runtime (src/, what `serve` loads) never imports a tool (tools/, bench/, test/);
 * - core/ imports only core/;
 * - tools/simulator/ never imports the proxy (src/) or another tool, only core/;
 * - src/audit/ never imports the XML parser.
 */
import { readdir } from 'node:fs/promises'
import { join, resolve } from 'node:path'
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

t.test('the runtime (src/) never imports a tool', async (t) => {
  let m = await lint('src/routes/x.ts', "import { startSimulator } from '../../tools/simulator/server.ts'\n\nexport const x = startSimulator\n")
  t.same(rules(m), [BOUNDARY], 'a route importing the simulator')
  t.match(m[0], /"\.\.\/\.\.\/tools\/simulator\/server\.ts" imported in restricted zone\. The runtime/)
  m = await lint('src/app.ts', "export async function x (): Promise<unknown> {\n  return await import('../tools/load/engine.ts')\n}\n")
  t.same(rules(m), [BOUNDARY], 'a dynamic import of the load tool')
  m = await lint('src/plugins/x.ts', "import * as demo from '../../tools/cli/demo.ts'\n\nexport const x = demo\n")
  t.same(rules(m), [BOUNDARY], 'a plugin importing a command of the tools\' command line')
  m = await lint('src/audit/worker2.ts', "import * as q from '../../tools/audit/query.ts'\n\nexport const x = q\n")
  t.same(rules(m), [BOUNDARY], 'the audit runtime importing the audit query tool')
  m = await lint('src/routes/x.ts', "import * as h from '../../test/helpers/pki.ts'\n\nexport const x = h\n")
  t.same(rules(m), [BOUNDARY], 'the runtime importing a test helper')

  t.same(await lint('src/routes/x.ts', "import { Errors } from '../../core/errors.ts'\nimport { readInputFile } from '../cli/io.ts'\n\nexport const x = [Errors, readInputFile]\n"), [],
    'a route importing the core and src/cli/io.ts (runtime)')
  t.same(await lint('tools/load/x.ts', "import { startSimulator } from '../simulator/server.ts'\nimport { buildApp } from '../../src/app.ts'\n\nexport const x = [startSimulator, buildApp]\n"), [],
    'a tool may import a tool and the product (the demo starts the proxy)')
})

t.test('core/ imports only core/', async (t) => {
  for (const spec of ['../../src/app.ts', '../../tools/samples/messages.ts', '../../test/helpers/pki.ts']) {
    const m = await lint('core/pix/x.ts', `import * as p from '${spec}'\n\nexport const x = p\n`)
    t.same(rules(m), [BOUNDARY], spec)
    t.match(m[0], /core\/ imports only core\//)
  }
  t.same(await lint('core/pix/x.ts', "import { parseXml } from '../xmldsig/xml.ts'\nimport { Errors } from '../errors.ts'\n\nexport const x = [parseXml, Errors]\n"), [], 'core importing core')
})

t.test('the simulator never imports the proxy or another tool, only the shared core', async (t) => {
  for (const spec of ['../../src/forwarding/pipeline.ts', '../../src/plugins/crypto.ts', '../../src/app.ts']) {
    const m = await lint('tools/simulator/x.ts', `import * as p from '${spec}'\n\nexport const x = p\n`)
    t.same(rules(m), [BOUNDARY], spec)
    t.match(m[0], /simulator\/ never imports the proxy/)
  }
  const m = await lint('tools/simulator/x.ts', "import * as s from '../samples/messages.ts'\n\nexport const x = s\n")
  t.same(rules(m), [BOUNDARY], 'another tool')
  t.match(m[0], /never imports another tool/)
  t.same(await lint('tools/simulator/x.ts', "import * as a from '../../core/xmldsig/index.ts'\nimport * as b from '../../core/pki/x509.ts'\nimport * as c from '../../core/errors.ts'\nimport * as d from './pki.ts'\n\nexport const x = [a, b, c, d]\n"), [],
    'the core (xmldsig, pki, errors) and its own files')
})

t.test('src/audit/ never imports the XML parser', async (t) => {
  let m = await lint('src/audit/x.ts', "import { parseXml } from '../../core/xmldsig/xml.ts'\n\nexport const x = parseXml\n")
  t.same(rules(m), [BOUNDARY], 'the parser')
  t.match(m[0], /src\/audit\/ never imports the XML parser/)
  m = await lint('src/audit/x.ts', "import { DOMParser } from '@xmldom/xmldom'\n\nexport const x = DOMParser\n")
  t.same(rules(m), [BOUNDARY], 'another XML parser')
  t.same(await lint('src/audit/x.ts', "import type { MessageFacts } from '../../core/pix/facts.ts'\n\nexport type X = MessageFacts\n"), [],
    'the facts the routes read, as data')
})

t.test('every file of src/ has the runtime rule, and core/ and the simulator theirs', async (t) => {
  const zonesOf = async (f: string): Promise<string[]> => {
    const config = await eslint.calculateConfigForFile(join(ROOT, f)) as { rules?: Record<string, [unknown, { zones?: Array<{ message?: string }> }?]> }
    return (config.rules?.[BOUNDARY]?.[1]?.zones ?? []).map((z) => z.message ?? '')
  }
  const wrong: string[] = []
  for (const [dir, want] of [['src', /^The runtime/], ['core', /^core\/ imports only core/], ['tools/simulator', /^tools\/simulator\/ never imports the proxy/]] as const) {
    const files = (await readdir(join(ROOT, dir), { recursive: true })).filter((f) => f.endsWith('.ts')).map((f) => `${dir}/${f}`)
    for (const f of files) if (!(await zonesOf(f)).some((z) => want.test(z))) wrong.push(f)
  }
  t.same(wrong, [])
})
