/**
 * `pix-proxy audit query "<SQL>" [--dir DIR] [--union-by-name]`: SQL over the local audit store (docs/audit.md),
 * the table being `audit`; prints one JSON object per result row, one per line.
 */
import { once } from 'node:events'
import { parseArgs } from 'node:util'
import { queryAudit } from '../audit/query.ts'
import { ConfigSchema } from '../config.ts'
import type { CliIo } from './io.ts'
import { usageError } from './io.ts'

/** The store the proxy writes to when run from the same directory with the same environment. */
const DEFAULT_DIR = ConfigSchema.properties.PIXPROXY_AUDIT_PARQUET_DIR.default as string

export const QUERY_USAGE = `usage: pix-proxy audit query "<SQL>" [--dir DIR] [--union-by-name]
  run one read-only SQL statement over the audit rows under DIR (default: $PIXPROXY_AUDIT_PARQUET_DIR, else
  ${DEFAULT_DIR}); the table is \`audit\`, partition columns year, month, day, hour are zero-padded strings;
  prints JSON lines, one per row
  --union-by-name   read Parquet files written before a column was added to the schema (slower)`

const USAGE = QUERY_USAGE

type AuditIo = Pick<CliIo, 'stdout' | 'env'>

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
  const fromEnv = io.env.PIXPROXY_AUDIT_PARQUET_DIR
  const dir = values.dir ?? (fromEnv === undefined || fromEnv === '' ? DEFAULT_DIR : fromEnv)
  for await (const row of queryAudit(dir, positionals[0] as string, { unionByName: values['union-by-name'] })) {
    // Results can be large (whole XML bodies): respect the pipe's back-pressure.
    if (!io.stdout.write(JSON.stringify(row) + '\n')) await once(io.stdout, 'drain')
  }
  return 0
}
