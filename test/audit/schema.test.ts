// The audit schema and its documentation: docs/audit.md carries the table rendered from AUDIT_COLUMNS.
import t from 'tap'
import { readFile } from 'node:fs/promises'
import { DUCKDB_TYPES, renderAuditColumnsTable } from '../../src/audit/parquet.ts'
import { AUDIT_COLUMNS, PARTITION_KEYS, partitionOf } from '../../src/audit/schema.ts'

const doc = async (): Promise<string> => await readFile(new URL('../../docs/audit.md', import.meta.url), 'utf8')

t.test('docs/audit.md holds the column table rendered from AUDIT_COLUMNS (refresh: see the doc)', async (t) => {
  const text = await doc()
  const m = /<!-- audit-columns:begin -->\n([\s\S]*?)\n<!-- audit-columns:end -->/.exec(text)
  t.ok(m, 'the doc has the table markers')
  t.equal(m?.[1], renderAuditColumnsTable())
})

t.test('the table has one line per column, in schema order, with both types', async (t) => {
  const lines = renderAuditColumnsTable().split('\n').slice(2)
  t.equal(lines.length, AUDIT_COLUMNS.length)
  AUDIT_COLUMNS.forEach((c, i) => {
    t.match(lines[i], new RegExp(`^\\| \`${c.name}\` \\| \`${c.type}\` \\| \`${DUCKDB_TYPES[c.type]}\` \\| ${c.required ? 'yes' : 'no'} \\| `), c.name)
  })
})

t.test('column names are unique, usable unquoted in SQL, and clash with no partition column', async (t) => {
  const names = AUDIT_COLUMNS.map((c) => c.name)
  t.equal(new Set(names).size, names.length)
  for (const n of names) t.match(n, /^[a-z][a-z0-9_]*$/)
  for (const k of PARTITION_KEYS) t.notOk(names.includes(k), k)
})

t.test('partitionOf is UTC and zero-padded, also at the last millisecond of a year', async (t) => {
  t.same(partitionOf('2026-12-31T23:59:59.999Z'), { year: '2026', month: '12', day: '31', hour: '23' })
  t.same(partitionOf('2027-01-01T00:00:00.000Z'), { year: '2027', month: '01', day: '01', hour: '00' })
  t.same(partitionOf('2026-03-04T21:00:00.000-03:00'), { year: '2026', month: '03', day: '05', hour: '00' })
})
