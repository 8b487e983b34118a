import { mkdtempSync } from 'node:fs'
import { rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'

/**
 * A directory for a local stack. Not `t.testdir()`: tap may remove that while the stack is still closing and
 * writing its audit spool there (ENOTEMPTY in teardown). Remove this one after the stack has closed.
 */
export function scratchDir (prefix = 'pix-proxy-test-'): { readonly dir: string, remove (): Promise<void> } {
  const dir = mkdtempSync(join(tmpdir(), prefix))
  return { dir, remove: async () => { await rm(dir, { recursive: true, force: true }) } }
}
