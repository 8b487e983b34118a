// Writes docs/configuration.md from src/config.ts (npm run docs:config). test/config.test.ts fails when they differ.
import { writeFileSync } from 'node:fs'
import { renderConfigDoc } from '../tools/docs/config-doc.ts'

writeFileSync(new URL('../docs/configuration.md', import.meta.url), renderConfigDoc())
