// ESLint: the community style (neostandard, with TypeScript) (issue 12).
// `npm run lint` lints src/, simulator/, test/, bench/ and scripts/; scripts/test.sh runs it after the type check.
import neostandard from 'neostandard'

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
  }
]
