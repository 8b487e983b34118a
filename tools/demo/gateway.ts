/**
 * The gateway's part of `pix-proxy demo`: an ICP-Brasil-shaped PKI (tools/token/icp-pki.ts), a backend stub that
 * records what reaches it, the gateway between them, and the flows the issue names: a valid client reaches the
 * backend with its identity headers (a forged copy of them never does); a path off the allowlist is refused; each bad
 * certificate, TLS 1.1 and a suite Open Finance does not permit are refused at the handshake. Each flow's result says
 * what was seen. The gateway audits through its own trail as `pix-proxy gateway` does (openGatewayAudit: a spool in
 * the demo's directory, Parquet under the proxy's lake, log/gateway/), and the last flow finds this run's rows with
 * DuckDB: one per call that reached the HTTP layer (a handshake refused is no call, only a log line and a metric).
 */
import { randomUUID } from 'node:crypto'
import { once } from 'node:events'
import { readFile } from 'node:fs/promises'
import { createServer, request } from 'node:https'
import type { IncomingHttpHeaders } from 'node:http'
import type { AddressInfo } from 'node:net'
import { join } from 'node:path'
import type { SecureVersion } from 'node:tls'
import pino from 'pino'
import { icpBrasilIdentity } from '../../core/pki/icp-brasil.ts'
import { quoteLiteral } from '../../src/audit/parquet.ts'
import { loadGatewayConfig } from '../../src/gateway/config.ts'
import { startGateway } from '../../src/gateway/gateway.ts'
import { openGatewayAudit } from '../../src/gateway/server.ts'
import { queryAudit } from '../audit/query.ts'
import { generateIcpPki } from '../token/icp-pki.ts'
import type { IcpClientKind } from '../token/icp-pki.ts'

export interface GatewayFlowResult {
  readonly name: string
  readonly ok: boolean
  readonly status?: number
  readonly ms: number
  readonly detail?: string
}

interface Call { readonly ok: boolean, readonly status?: number, readonly code?: string }

/**
 * Runs the gateway flows in this process and tears everything down; never throws for a failed flow. The gateway's
 * audit spool is `<dir>/audit/gateway-spool`, its rows go to `<lake>/log/gateway/` (the proxy's lake: one
 * `pix-proxy audit query --dir` sees both).
 */
export async function runGatewayFlows (dir: string, lake: string, log: (m: string) => void): Promise<GatewayFlowResult[]> {
  const pki = await generateIcpPki(join(dir, 'gateway-pki'))
  const [rootsPem, serverChain, serverKey] = await Promise.all([readFile(pki.rootsFile, 'utf8'), readFile(pki.server.chainFile, 'utf8'), readFile(pki.server.keyFile, 'utf8')])
  const seen: IncomingHttpHeaders[] = []
  const backend = createServer({ cert: serverChain, key: serverKey }, (req, res) => {
    seen.push(req.headers)
    req.resume()
    req.on('end', () => res.writeHead(200, { 'content-type': 'application/json' }).end('{"data":{}}'))
  })
  backend.listen(0, '127.0.0.1')
  await once(backend, 'listening')
  const config = loadGatewayConfig({
    PIXGW_LISTEN_PORT: '0',
    PIXGW_OPS_LISTEN_PORT: '0',
    PIXGW_SERVER_CERT_FILE: pki.server.chainFile,
    PIXGW_SERVER_KEY_FILE: pki.server.keyFile,
    PIXGW_TRUSTSTORE: pki.trustBundleFile,
    PIXGW_CRLS: pki.crlFile,
    PIXGW_BACKEND_URL: `https://localhost:${(backend.address() as AddressInfo).port}`,
    PIXGW_BACKEND_CA_FILE: pki.rootsFile,
    PIXGW_ROUTES: 'GET /open-banking/*',
    PIXGW_RELOAD_INTERVAL_MS: '0',
    PIXGW_AUDIT_SINK: 'parquet',
    PIXGW_AUDIT_SPOOL_DIR: join(dir, 'audit', 'gateway-spool'),
    PIXGW_AUDIT_PARQUET_DIR: lake,
    PIXGW_AUDIT_FLUSH_MS: '200',
    // Half of it bounds the audit's final shipping at close: a hang guard, generous for a loaded machine.
    PIXGW_SHUTDOWN_TIMEOUT_MS: '60000'
  })
  const logger = pino({ level: 'silent' })
  // This run's rows, apart from earlier runs' in a reused directory.
  const instanceId = `demo-gateway-${randomUUID()}`
  const audit = await openGatewayAudit(config, logger)
  const gw = await startGateway({ config, logger, identify: icpBrasilIdentity, audit, instanceId }).catch(async (err: unknown) => {
    await audit.close?.()
    throw err
  })
  log(`gateway listening on ${gw.url} (backend stub behind it)`)
  const url = new URL('/open-banking/accounts/v2/accounts', gw.url)
  // Calls the gateway answered over HTTP: each is an audit row.
  let answered = 0
  const call = async (kind: IcpClientKind | null, o: { path?: string, minVersion?: SecureVersion, maxVersion?: SecureVersion, ciphers?: string, headers?: Record<string, string> } = {}): Promise<Call> => {
    const client = kind === null ? null : pki.clients[kind]
    const [cert, key] = client === null ? [undefined, undefined] : await Promise.all([readFile(client.chainFile, 'utf8'), readFile(client.keyFile, 'utf8')])
    return await new Promise<Call>((resolve) => {
      const req = request({ host: url.hostname, port: url.port, path: url.pathname, servername: 'localhost', ca: rootsPem, agent: false, ...(cert === undefined ? {} : { cert, key }), ...o }, (res) => {
        answered++
        res.resume()
        res.on('end', () => resolve({ ok: true, status: res.statusCode ?? 0 }))
        res.on('error', (err: Error & { code?: string }) => resolve({ ok: false, code: err.code ?? err.message }))
      })
      req.on('error', (err: Error & { code?: string }) => resolve({ ok: false, code: err.code ?? err.message }))
      req.end()
    })
  }
  const results: GatewayFlowResult[] = []
  const flow = async (name: string, run: () => Promise<{ ok: boolean, status?: number, detail: string }>): Promise<void> => {
    const started = Date.now()
    const r = await run().catch((err: unknown) => ({ ok: false, detail: (err as Error).message }))
    results.push({ name, ms: Date.now() - started, ...r })
    log(`${r.ok ? 'ok  ' : 'FAIL'} ${name}: ${r.detail}`)
  }
  /** A refusal, with the reason the gateway gave (its event fires before the client sees the connection end). */
  const refused = async (kind: IcpClientKind | null, expected: string | null, o: Parameters<typeof call>[1] = {}): Promise<{ ok: boolean, detail: string }> => {
    const event = once(gw.events, 'refused') as Promise<[{ reason: string }]>
    const before = seen.length
    const r = await call(kind, o)
    const [{ reason }] = await event
    const ok = !r.ok && (expected === null || reason === expected) && seen.length === before
    return { ok, detail: `client ${r.ok ? `answered ${r.status}` : `saw ${r.code}`}; gateway: ${reason}` }
  }
  try {
    const valid = pki.clients.valid
    await flow('gateway: valid client reaches the backend with its identity', async () => {
      const r = await call('valid', { headers: { 'x-ofb-client-cnpj': '00000000000000', 'x-ssl-client-cert': 'forged' } })
      const h = seen.at(-1) ?? {}
      const ok = r.ok && r.status === 200 && h['x-ofb-client-cnpj'] === valid.cnpj && h['x-ofb-organisation-id'] === valid.organisationId &&
        h['x-ofb-software-statement-id'] === valid.softwareStatementId && typeof h['x-ssl-client-cert'] === 'string' && h['x-ssl-client-cert'] !== 'forged'
      return { ok, ...(r.status === undefined ? {} : { status: r.status }), detail: `status ${r.status ?? r.code}; backend saw cnpj ${String(h['x-ofb-client-cnpj'])}, organisation ${String(h['x-ofb-organisation-id'])}` }
    })
    await flow('gateway: forged identity headers are replaced, never passed', async () => {
      const h = seen.at(-1) ?? {}
      const ok = h['x-ofb-client-cnpj'] === valid.cnpj && decodeURIComponent(String(h['x-ssl-client-cert'])).includes('BEGIN CERTIFICATE')
      return { ok, detail: 'the forged x-ofb-client-cnpj and x-ssl-client-cert did not reach the backend' }
    })
    await flow('gateway: path off the allowlist refused, never forwarded', async () => {
      const before = seen.length
      const r = await call('valid', { path: '/admin/accounts' })
      return { ok: r.status === 404 && seen.length === before, ...(r.status === undefined ? {} : { status: r.status }), detail: `status ${r.status ?? r.code}; the backend saw ${seen.length - before} requests` }
    })
    await flow('gateway: revoked certificate refused', async () => await refused('revoked', 'cert_revoked'))
    await flow('gateway: expired certificate refused', async () => await refused('expired', 'cert_has_expired'))
    // The foreign CA copies the intermediate's name; OpenSSL reports the last error of the chain it tried, so any
    // reason is a refusal here (test/gateway pins the reasons).
    await flow('gateway: foreign CA refused', async () => await refused('foreign', null))
    await flow('gateway: certificate without clientAuth refused', async () => await refused('noClientAuth', 'invalid_purpose'))
    await flow('gateway: no client certificate refused', async () => await refused(null, 'no_certificate'))
    await flow('gateway: TLS 1.1 refused', async () => await refused('valid', 'unsupported_protocol', { minVersion: 'TLSv1', maxVersion: 'TLSv1.1', ciphers: 'DEFAULT:@SECLEVEL=0' }))
    await flow('gateway: TLS 1.2 suite not permitted by Open Finance refused', async () => await refused('valid', 'no_shared_cipher', { maxVersion: 'TLSv1.2', ciphers: 'AES128-SHA256' }))
  } finally {
    // Closing ships the audit rows still in the spool (the gateway's shutdown does the same).
    await gw.close()
    backend.closeAllConnections()
    await new Promise<void>((resolve) => backend.close(() => resolve()))
  }
  await flow('gateway: audit rows for every call that reached HTTP, queried with DuckDB', async () => {
    const ids = new Set<string>()
    const statuses: string[] = []
    for await (const r of queryAudit(lake, `SELECT DISTINCT id, status, error_code FROM gateway WHERE instance_id = ${quoteLiteral(instanceId)} ORDER BY id`)) {
      ids.add(String(r.id))
      statuses.push(`${String(r.status)} ${String(r.error_code ?? '')}`.trim())
    }
    for (const s of statuses.sort()) log(`  gateway audit: ${s}`)
    log(`  try: node dist/tools/cli/main.js audit query --dir ${lake} "SELECT request_date, client_cnpj, method, path, status, error_code FROM gateway ORDER BY request_date"`)
    return { ok: ids.size === answered && answered > 0, detail: `${ids.size} of ${answered} gateway calls audited in ${lake}` }
  })
  return results
}
