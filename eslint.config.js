// ESLint: the community style (neostandard, with TypeScript) plus the codebase's import boundaries (issue 12).
// `npm run lint` lints src/, simulator/, test/, bench/ and scripts/; scripts/test.sh runs it after the type check.
import neostandard from 'neostandard'
import { importX, createNodeResolver } from 'eslint-plugin-import-x'

/**
 * The tools: what a bank runs around the product, never inside it (folders and files). test/architecture.test.ts
 * checks serve's whole import closure against the same list; test/lint.test.ts checks the rule below applies to
 * every other file of src/.
 */
export const TOOLS = [
  'simulator', 'src/demo', 'src/load', 'src/samples', 'src/aws/local-endpoint.ts', 'src/hsm/init.ts',
  'src/audit/query.ts', 'src/cli', 'bench', 'test'
]
/** src/cli/ is the tools' command line, except what `pix-proxy serve` loads. */
export const CLI_RUNTIME = ['serve.ts', 'io.ts']

// Boundaries: import-x/no-restricted-paths. Chosen over core no-restricted-imports because it resolves each import
// to the file it names, so one rule holds whatever the relative spelling ('../x', '../../src/x', dynamic import());
// over dependency-cruiser because it is one more rule in the one linter (same run, same editor squiggles, same
// eslint-disable discipline). Zones name folders and files (no globs), relative to this directory. An import of a
// file that does not exist is not checked (tsc reports it).

/** The runtime (what `serve` loads) never imports a tool. */
const RUNTIME_ZONES = [
  {
    target: '.',
    from: TOOLS.filter((p) => p !== 'src/cli'),
    message: 'The runtime (what `serve` loads) never imports a tool (TOOLS in eslint.config.js).'
  },
  {
    target: '.',
    from: 'src/cli',
    except: CLI_RUNTIME,
    message: 'The runtime never imports the command line\'s tool commands; only src/cli/serve.ts and io.ts are runtime.'
  }
]

const AUDIT_XML = 'src/audit/ never imports the XML parser (src/xmldsig/, which parses; @xmldom/xmldom, xml-crypto).'
/** src/audit/ never parses XML: it reads the facts from the tree the proxy already parsed (src/audit/facts.ts). */
const AUDIT_XML_ZONES = [
  { target: '.', from: 'src/xmldsig', message: AUDIT_XML },
  { target: '.', from: ['node_modules/@xmldom', 'node_modules/xml-crypto'], message: AUDIT_XML }
]
// TODO(issue 12): src/audit/facts.ts imports src/xmldsig/xml.ts (the parser's module) for the tree's types and two
// tree walkers (childElements, textContent), never parseXml. Until the tree moves to a module of its own, facts.ts
// alone may import xml.ts, and no-restricted-imports below keeps it from importing parseXml.
const AUDIT_XML_ZONES_FACTS = [{ ...AUDIT_XML_ZONES[0], except: ['xml.ts'] }, AUDIT_XML_ZONES[1]]

/** simulator/ (BACEN's stand-in) shares the core (xmldsig, pki, errors, PIX message reading), never the proxy. */
const SIMULATOR_ZONES = [
  {
    target: '.',
    from: ['src/routes', 'src/plugins', 'src/app.ts'],
    message: 'simulator/ never imports the proxy (src/routes, src/plugins, src/app.ts); it may share the core.'
  }
]

const boundaries = (zones) => ({ 'import-x/no-restricted-paths': ['error', { zones, basePath: import.meta.dirname }] })
/** The runtime's files: src/ but its tools. */
const runtimeIgnores = [
  ...TOOLS.filter((p) => p !== 'src/cli').map((p) => p.endsWith('.ts') ? p : `${p}/**`),
  `src/cli/!(${CLI_RUNTIME.map((f) => f.replace(/\.ts$/, '')).join('|')}).ts`
]

export default [
  ...neostandard({ ts: true, ignores: ['dist/**', '.tools/**', 'infra/**', 'docs/**', 'docker/**', '.local/**'] }),
  {
    rules: {
      // The code marks a promise deliberately not awaited (a timer's tick, a fire-and-forget close) with a `void`
      // statement, typescript-eslint's no-floating-promises convention; `void` as a value stays forbidden.
      'no-void': ['error', { allowAsStatement: true }],
      // Where `resolve` is node:path's, a Promise's resolver is named resolvePromise, resolveStop...
      'promise/param-names': ['error', { resolvePattern: '^_?resolve', rejectPattern: '^_?reject$' }]
    }
  },
  {
    files: ['**/*.ts', '**/*.mjs'],
    plugins: { 'import-x': importX },
    settings: { 'import-x/resolver-next': [createNodeResolver()] }
  },
  // The boundaries, by the files they hold for. For one rule, a later matching block replaces an earlier block's
  // options: each block lists every zone its files need.
  { files: ['src/**/*.ts'], ignores: runtimeIgnores, rules: boundaries(RUNTIME_ZONES) },
  { files: ['src/audit/**/*.ts'], ignores: runtimeIgnores, rules: boundaries([...RUNTIME_ZONES, ...AUDIT_XML_ZONES]) },
  { files: ['src/audit/query.ts'], rules: boundaries(AUDIT_XML_ZONES) },
  {
    files: ['src/audit/facts.ts'],
    rules: {
      ...boundaries([...RUNTIME_ZONES, ...AUDIT_XML_ZONES_FACTS]),
      'no-restricted-imports': ['error', {
        paths: [{
          name: '../xmldsig/xml.ts',
          importNames: ['parseXml'],
          message: 'src/audit/ never parses XML: read the tree the proxy already parsed.'
        }]
      }]
    }
  },
  { files: ['simulator/**/*.ts'], rules: boundaries(SIMULATOR_ZONES) }
]
