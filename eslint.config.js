// ESLint: the community style (neostandard, with TypeScript) plus the codebase's import boundaries (issue 12).
// `npm run lint` lints src/, core/, tools/, test/, bench/ and scripts/; scripts/test.sh runs it after the type check.
import neostandard from 'neostandard'
import { importX, createNodeResolver } from 'eslint-plugin-import-x'

/**
 * The three trees (docs/architecture.md): src/ is the product, what `serve` and the container's entrypoint load;
 * tools/ is what runs around it (the BACEN simulator, demo, load tool, local AWS endpoint, token and PKI set-up,
 * audit query, docs generators, the command line); core/ is what both share (XML and XMLDSig, PKI parsing and the test
 * CA, errors, the signer interface, PIX message reading). bench/ and test/ are tools too. test/architecture.test.ts
 * checks serve's whole import closure against the same lists; test/lint.test.ts proves each rule fails a violation.
 */
export const TOOLS = ['tools', 'bench', 'test']
export const CORE = ['core']

// Boundaries: import-x/no-restricted-paths. Chosen over core no-restricted-imports because it resolves each import
// to the file it names, so one rule holds whatever the relative spelling ('../x', '../../src/x', dynamic import());
// over dependency-cruiser because it is one more rule in the one linter (same run, same editor squiggles, same
// eslint-disable discipline). Zones name folders and files (no globs), relative to this directory. An import of a
// file that does not exist is not checked (tsc reports it).

/** The runtime (src/) never imports a tool. */
const RUNTIME_ZONES = [
  { target: '.', from: TOOLS, message: 'The runtime (src/, what `serve` loads) never imports a tool (tools/, bench/, test/).' }
]

/** The core shares nothing but itself: a tool or the product may use it without pulling in the other. */
const CORE_ZONES = [
  { target: '.', from: ['src', ...TOOLS], message: 'core/ imports only core/: it is what the product and the tools share.' }
]

const AUDIT_XML = 'src/audit/ never imports the XML parser (core/xmldsig/, @xmldom/xmldom, xml-crypto): it records the facts the routes read (core/pix/facts.ts).'
/** src/audit/ never parses XML: it records the facts read from the tree the proxy already parsed (core/pix/facts.ts). */
const AUDIT_XML_ZONES = [
  { target: '.', from: 'core/xmldsig', message: AUDIT_XML },
  { target: '.', from: ['node_modules/@xmldom', 'node_modules/xml-crypto'], message: AUDIT_XML }
]

/** tools/simulator/ (BACEN's stand-in, an independent peer) imports only the core, never the proxy or another tool. */
const SIMULATOR_ZONES = [
  { target: '.', from: 'src', message: 'tools/simulator/ never imports the proxy (src/); it shares only core/.' },
  { target: '.', from: 'tools', except: ['./simulator'], message: 'tools/simulator/ never imports another tool; it shares only core/.' }
]

const boundaries = (zones) => ({ 'import-x/no-restricted-paths': ['error', { zones, basePath: import.meta.dirname }] })

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
  { files: ['src/**/*.ts'], rules: boundaries(RUNTIME_ZONES) },
  { files: ['src/audit/**/*.ts'], rules: boundaries([...RUNTIME_ZONES, ...AUDIT_XML_ZONES]) },
  { files: ['core/**/*.ts'], rules: boundaries(CORE_ZONES) },
  { files: ['tools/simulator/**/*.ts'], rules: boundaries(SIMULATOR_ZONES) }
]
