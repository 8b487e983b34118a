/**
 * The gateway's audit spool shared by its tasks (PIXGW_AUDIT_SPOOL_SHARED=true: one EFS file system for every ECS
 * task): rows a gateway made durable and never shipped (it died: its slot's lock names a process that is gone) are
 * adopted by another gateway started on the same root, and shipped, read back with DuckDB from Parquet. The dead
 * gateway is a real one over real mutual-TLS handshakes, its trail the proxy's spool (slot-001) with nothing shipping
 * it; one of its calls dies between its two halves (the outcome never written), as a task killed mid-call leaves it.
 * No timing: the test waits for the adopting gateway's own log line saying the slot was shipped, and closing the
 * gateway ships its own row before it returns.
 */
import { spawnSync } from 'node:child_process'
import { mkdtemp, readdir, writeFile } from 'node:fs/promises'
import { hostname } from 'node:os'
import { join } from 'node:path'
import pino from 'pino'
import t from 'tap'
import { Errors } from '../../core/errors.ts'
import { icpBrasilIdentity } from '../../core/pki/icp-brasil.ts'
import { AuditSpool } from '../../src/audit/spool.ts'
import { slotName } from '../../src/audit/slots.ts'
import { journalAuditSink } from '../../src/gateway/audit.ts'
import { startGateway } from '../../src/gateway/gateway.ts'
import { openGatewayAudit } from '../../src/gateway/server.ts'
import { auditFixture, GUARD, rowsOf } from './fixtures/audit.ts'
import { attempt, gatewayConfig } from './helpers.ts'

const { dir, pki, backend } = await auditFixture(t, 'pix-gw-audit-shared-')

/** A pid that belonged to a process which has exited (and was reaped). */
function deadPid (): number {
  const r = spawnSync(process.execPath, ['-e', 'process.stdout.write(String(process.pid))'])
  return Number(r.stdout.toString())
}

type Line = Record<string, unknown>

/**
 * A logger whose lines a test can read, and wait on (the audit thread's lines come through it): `until(p)` resolves
 * with the lines once `p` holds of them, checked again at every new line.
 */
function waitingLogger (): { logger: pino.Logger, lines: Line[], until: (p: (lines: Line[]) => boolean) => Promise<Line[]> } {
  const lines: Line[] = []
  const waiters = new Set<{ p: (lines: Line[]) => boolean, resolve: (lines: Line[]) => void }>()
  const logger = pino({ level: 'debug' }, {
    write: (s: string) => {
      lines.push(JSON.parse(s) as Line)
      for (const w of waiters) {
        if (!w.p(lines)) continue
        waiters.delete(w)
        w.resolve(lines)
      }
    }
  })
  const until = async (p: (lines: Line[]) => boolean): Promise<Line[]> => {
    if (p(lines)) return lines
    return await new Promise((resolve) => { waiters.add({ p, resolve }) })
  }
  return { logger, lines, until }
}

const ADOPTED = 'adopted the audit spool slot of a process that is gone'
/** The rows shipped by the adoptions logged so far. */
const adoptedShipped = (lines: Line[]): number => lines.filter((l) => l.msg === ADOPTED).reduce((n, l) => n + (l.shipped as number), 0)

t.test('a shared spool: the rows a dead gateway left in its slot are adopted and shipped by the next gateway', async (t) => {
  const root = await mkdtemp(join(dir, 'shared-'))
  const spoolRoot = join(root, 'spool')
  const store = join(root, 'lake')
  const client = pki.clients.valid

  // The gateway that dies: its rows in slot-001 of the shared root (slot-000 stays free, so the next gateway claims
  // it and must adopt slot-001 rather than replay it as its own). Nothing ships them: no pipeline runs on this spool.
  const deadSlot = join(spoolRoot, slotName(1))
  const spool = await AuditSpool.open({ dir: deadSlot, maxBytes: 64 * 1024 * 1024, groupCommitMs: 0 })
  let spoolClosed = false
  t.teardown(async () => { if (!spoolClosed) await spool.close() })
  const journal = journalAuditSink(spool)
  // The payment call's outcome is never written: the task died after forwarding it, before its end half.
  const dying = { ...journal, write: async (row: Parameters<typeof journal.write>[0]) => { if (row.method !== 'POST') await journal.write(row) } }
  const first = await startGateway({ config: gatewayConfig(pki, backend, GUARD), logger: waitingLogger().logger, identify: icpBrasilIdentity, audit: dying, instanceId: 'gw-dead' })
  let firstClosed = false
  t.teardown(async () => { if (!firstClosed) await first.close() })
  const ok = await attempt(first.url, pki, { client, path: '/open-banking/accounts/v2/accounts' })
  t.ok(ok.ok && ok.status === 200, 'forwarded by the gateway that dies')
  const paid = await attempt(first.url, pki, { client, method: 'POST', path: '/open-banking/payments/v4/pix/payments', body: '{"x":1}', headers: { 'content-type': 'application/json' } })
  t.ok(paid.ok && paid.status === 200, 'forwarded; its outcome never reaches the spool')
  const no = await attempt(first.url, pki, { client, path: '/admin/secrets' })
  t.ok(no.ok && no.status === 404, 'refused by the allowlist')
  // Closing the gateway waits for the rows being written (the refusal's, written after its answer).
  await first.close()
  firstClosed = true
  t.match(spool.stats(), { pendingRows: 3 }, 'three rows durable in the dead gateway\'s slot, none shipped')
  await spool.close()
  spoolClosed = true
  // As if it had been killed: its lock names a process that is gone.
  await writeFile(join(deadSlot, 'spool.lock'), JSON.stringify({ pid: deadPid(), host: hostname(), token: 'dead-gateway' }))

  // The next gateway on the same root: it claims slot-000 and adopts slot-001.
  const next = waitingLogger()
  const config = gatewayConfig(pki, backend, { PIXGW_AUDIT_SPOOL_SHARED: 'true', PIXGW_AUDIT_SPOOL_DIR: spoolRoot, PIXGW_AUDIT_PARQUET_DIR: store, PIXGW_AUDIT_FLUSH_MS: '10', ...GUARD })
  t.equal(config.audit.spoolShared, true)
  const audit = await openGatewayAudit(config, next.logger)
  const gw = await startGateway({ config, logger: next.logger, identify: icpBrasilIdentity, audit, instanceId: 'gw-next' })
  let closed = false
  t.teardown(async () => { if (!closed) await gw.close() })
  // Not a slot of the shared root: nothing would ever adopt slot-001, so stop here rather than wait for it.
  if (!t.match(next.lines.find((l) => l.msg === 'gateway audit trail ready'), { spool: join(spoolRoot, slotName(0)), replayedRows: 0 }, 'its own slot is slot-000, empty')) return
  // The first sweep runs at start. It ships the slot within its own deadline (10 s): on a machine slow enough to
  // miss it, what is left is shipped by the next sweep, a minute later; so wait for all three, however many sweeps.
  const adoptions = (await next.until((lines) => adoptedShipped(lines) >= 3)).filter((l) => l.msg === ADOPTED)
  t.match(adoptions[0], { dir: deadSlot, replayedRows: 3 }, 'the dead gateway\'s slot adopted: its three rows replayed')
  t.match(adoptions.at(-1), { dir: deadSlot, left: 0 }, 'and shipped, none left')
  t.equal((await audit.worker.status()).adoptedRows, adoptedShipped(adoptions), 'counted in the trail\'s status')
  const own = await attempt(gw.url, pki, { client, path: '/open-banking/consents/v3/consents' })
  t.ok(own.ok && own.status === 200, 'the next gateway serves calls of its own')
  await gw.close()
  closed = true

  // DISTINCT: a sweep whose deadline passed during a sink call may ship a row again with the next (identical rows,
  // docs/audit.md); with one sweep, as on an unloaded machine, there is one of each.
  const rows = await rowsOf(store, 'SELECT DISTINCT method, path, status, error_code, instance_id FROM gateway ORDER BY path')
  t.same(rows, [
    { method: 'GET', path: '/admin/secrets', status: 404, error_code: Errors.GATEWAY_ROUTE_NOT_ALLOWED.code, instance_id: 'gw-dead' },
    { method: 'GET', path: '/open-banking/accounts/v2/accounts', status: 200, error_code: null, instance_id: 'gw-dead' },
    { method: 'GET', path: '/open-banking/consents/v3/consents', status: 200, error_code: null, instance_id: 'gw-next' },
    { method: 'POST', path: '/open-banking/payments/v4/pix/payments', status: null, error_code: Errors.AUDIT_INCOMPLETE.code, instance_id: 'gw-dead' }
  ], 'every row of the dead gateway shipped (its call cut short with a null status and PIXPROXY_ERR_AUDIT_INCOMPLETE), with the next one\'s own')
  t.same(await readdir(deadSlot), [], 'the adopted slot is drained: its spool files deleted, its lock released')
})
