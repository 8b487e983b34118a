// Writes docs/errors.md from core/errors.ts (npm run docs:errors). test/errors.test.ts fails when they differ.
import { writeFileSync } from 'node:fs'
import { renderErrorsDoc } from '../tools/docs/errors-doc.ts'

writeFileSync(new URL('../docs/errors.md', import.meta.url), renderErrorsDoc())
