/**
 * The gateway's rows in the audit trail (src/audit/gateway.ts): a call whose outcome was never recorded (the gateway
 * died after forwarding it) is still shipped on the next start, with the client's identity, a null status and
 * PIXPROXY_ERR_AUDIT_INCOMPLETE; and a complete one keeps every value through the spool's carrier columns.
 */
import { join } from 'node:path'
import t from 'tap'
import { Errors } from '../../core/errors.ts'
import { gatewayRequestHalf, gatewayResponseHalf } from '../../src/audit/gateway.ts'
import type { GatewayCallStart } from '../../src/audit/gateway.ts'
import { AuditService } from '../../src/audit/service.ts'
import type { AuditSettings } from '../../src/audit/service.ts'
import { queryAudit } from '../../tools/audit/query.ts'

const quiet = { info: () => {}, warn: () => {}, error: () => {} }

const start = (id: string): GatewayCallStart => ({
  id,
  request_date: '2026-05-06T07:08:09.010Z',
  client_subject: 'CN=app.exemplo.com.br, O=Banco, serialNumber=11222333000181',
  client_serial: '0A1B',
  client_thumbprint: 'thumb-' + id,
  client_cnpj: '11222333000181',
  client_organisation_id: 'org-1',
  client_software_statement_id: 'ss-1',
  route: 'POST /open-banking/payments/v4/*',
  method: 'POST',
  path: '/open-banking/payments/v4/pix/payments',
  request_bytes: 321,
  instance_id: 'gw-1'
})

t.test('begun and never ended: shipped after a restart as incomplete; ended: every value kept', async (t) => {
  const dir = t.testdir()
  const settings: AuditSettings = {
    enabled: true,
    spoolDir: join(dir, 'spool'),
    spoolShared: false,
    spoolMaxBytes: 8 * 1024 * 1024,
    sink: 'parquet',
    parquetDir: join(dir, 'lake'),
    firehoseStreams: { spi: 's', dict: 'd', gateway: 'g' },
    flushMs: 10
  }
  const first = await AuditService.open(settings, quiet)
  await first.begin(gatewayRequestHalf(start('open-call')))
  await first.begin(gatewayRequestHalf(start('done-call')))
  await first.end('done-call', gatewayResponseHalf({ status: 201, error_code: null, latency_ms: 12.3456, response_bytes: 99 }))
  // The process "dies" with one call open: closing leaves it in the spool, as a crash would.
  await first.close(60_000)
  const second = await AuditService.open(settings, quiet)
  await second.close(60_000)

  const rows: Array<Record<string, unknown>> = []
  for await (const r of queryAudit(join(dir, 'lake'), 'SELECT * EXCLUDE (year, month, day, hour) FROM gateway ORDER BY id')) rows.push(r)
  t.same(rows, [
    {
      id: 'done-call',
      request_date: '2026-05-06T07:08:09.010Z',
      client_subject: 'CN=app.exemplo.com.br, O=Banco, serialNumber=11222333000181',
      client_serial: '0A1B',
      client_thumbprint: 'thumb-done-call',
      client_cnpj: '11222333000181',
      client_organisation_id: 'org-1',
      client_software_statement_id: 'ss-1',
      route: 'POST /open-banking/payments/v4/*',
      method: 'POST',
      path: '/open-banking/payments/v4/pix/payments',
      status: 201,
      error_code: null,
      latency_ms: 12.346,
      request_bytes: 321,
      response_bytes: 99,
      instance_id: 'gw-1'
    },
    {
      id: 'open-call',
      request_date: '2026-05-06T07:08:09.010Z',
      client_subject: 'CN=app.exemplo.com.br, O=Banco, serialNumber=11222333000181',
      client_serial: '0A1B',
      client_thumbprint: 'thumb-open-call',
      client_cnpj: '11222333000181',
      client_organisation_id: 'org-1',
      client_software_statement_id: 'ss-1',
      route: 'POST /open-banking/payments/v4/*',
      method: 'POST',
      path: '/open-banking/payments/v4/pix/payments',
      status: null,
      error_code: Errors.AUDIT_INCOMPLETE.code,
      latency_ms: null,
      request_bytes: 321,
      response_bytes: null,
      instance_id: 'gw-1'
    }
  ], 'both calls traceable to the client; the unfinished one marked incomplete')
  const [part] = await (async () => { const out = []; for await (const r of queryAudit(join(dir, 'lake'), 'SELECT year, month, day, hour FROM gateway LIMIT 1')) out.push(r); return out })()
  t.same(part, { year: '2026', month: '05', day: '06', hour: '07' }, 'partitioned by request_date, in UTC')
})
