/**
 * `pix-proxy audit query "<SQL>" [--dir DIR] [--union-by-name]`: SQL over the local audit store (docs/audit.md),
 * the table being `audit`; prints one JSON object per result row, one per line. Without --dir (and without
 * PIXPROXY_AUDIT_PARQUET_DIR) it reads serve's default store, or the demo's when only that one exists.
 */
import { once } from 'node:events'
import { existsSync } from 'node:fs'
import { join } from 'node:path'
import { parseArgs } from 'node:util'
import { queryAudit } from '../audit/query.ts'
import { ConfigSchema } from '../../src/config.ts'
import { DEMO_DEFAULT_DIR } from '../demo/paths.ts'
import type { CliIo } from '../../src/cli/io.ts'
import { usageError } from '../../src/cli/io.ts'

/** The store `pix-proxy serve` writes to when run from the same directory with the same environment. */
const SERVE_DIR = ConfigSchema.properties.PIXPROXY_AUDIT_PARQUET_DIR.default as string
/** The store `make demo` (`pix-proxy demo` with its default --dir) writes to. */
export const DEMO_DIR = join(DEMO_DEFAULT_DIR, 'audit', 'lake')

export const QUERY_USAGE = `usage: pix-proxy audit query "<SQL>" [--dir DIR] [--union-by-name]
  run one read-only SQL statement over the audit rows under DIR; the tables are \`audit\` (PIX rows) and
  \`gateway\` (pix-proxy gateway's rows), partition columns year, month, day, hour are zero-padded strings;
  prints JSON lines, one per row
  --dir DIR         default: $PIXPROXY_AUDIT_PARQUET_DIR; else ${SERVE_DIR} (what serve writes) when it exists;
                    else ${DEMO_DIR} (what make demo writes; a note on stderr says so)
  --union-by-name   read Parquet files written before a column was added to the schema (slower)`

const USAGE = QUERY_USAGE

type AuditIo = Pick<CliIo, 'stdout' | 'env'> & Partial<Pick<CliIo, 'stderr'>>

/**
 * The store a bare `audit query` reads: the environment's, else serve's when it has one, else the demo's when it
 * has one (so that `make demo` then `audit query` just works), else serve's (whose absence is then the error).
 */
export function defaultAuditDir (env: NodeJS.ProcessEnv, exists: (dir: string) => boolean = existsSync): { dir: string, why?: string } {
  const fromEnv = env.PIXPROXY_AUDIT_PARQUET_DIR
  if (fromEnv !== undefined && fromEnv !== '') return { dir: fromEnv }
  if (!exists(SERVE_DIR) && exists(DEMO_DIR)) return { dir: DEMO_DIR, why: `no ${SERVE_DIR} (pix-proxy serve's store): reading ${DEMO_DIR}, the demo's; --dir chooses` }
  return { dir: SERVE_DIR }
}

/** Runs `pix-proxy audit <sub>`; resolves to the exit code. PixProxyErrors propagate to the caller's reporter. */
export async function auditCommand (argv: string[], io: AuditIo): Promise<number> {
  const [sub, ...rest] = argv
  switch (sub) {
    case 'query': return await query(rest, io)
    case undefined: case 'help': case '--help': case '-h':
      io.stdout.write(USAGE + '\n')
      return sub === undefined ? 2 : 0
    default:
      throw usageError(`unknown audit command ${sub}\n${USAGE}`)
  }
}

async function query (argv: string[], io: AuditIo): Promise<number> {
  const { values, positionals } = parseArgs({
    args: argv,
    options: {
      dir: { type: 'string' },
      'union-by-name': { type: 'boolean', default: false }
    },
    strict: true,
    allowPositionals: true
  })
  if (positionals.length !== 1) throw usageError(`audit query takes the SQL as one argument (quote it)\n${USAGE}`)
  let dir = values.dir
  if (dir === undefined) {
    const chosen = defaultAuditDir(io.env)
    if (chosen.why !== undefined) io.stderr?.write(`[audit] ${chosen.why}\n`)
    dir = chosen.dir
  }
  for await (const row of queryAudit(dir, positionals[0] as string, { unionByName: values['union-by-name'] })) {
    // Results can be large (whole XML bodies): respect the pipe's back-pressure.
    if (!io.stdout.write(JSON.stringify(row) + '\n')) await once(io.stdout, 'drain')
  }
  return 0
}
