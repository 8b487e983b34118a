/**
 * The gateway over the ICP-Brasil-shaped PKI of tools/token/icp-pki.ts (Open Finance subject attributes, the CNPJ
 * in the SAN otherName and the subject): the backend receives the CNPJ, organisation id and software statement id
 * the certificate carries, and a subject with non-ASCII letters reaches it percent-encoded instead of breaking the
 * call.
 */
import { X509Certificate } from 'node:crypto'
import { mkdtemp, readFile, rm } from 'node:fs/promises'
import { request } from 'node:https'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import t from 'tap'
import { icpBrasilIdentity } from '../../core/pki/icp-brasil.ts'
import type { GatewayAuditRow } from '../../src/gateway/audit.ts'
import { loadGatewayConfig } from '../../src/gateway/config.ts'
import { startGateway } from '../../src/gateway/gateway.ts'
import { generateIcpPki } from '../../tools/token/icp-pki.ts'
import { createGatewayPki } from '../helpers/gateway-pki.ts'
import { startBackend, testLogger } from './helpers.ts'

const dir = await mkdtemp(join(tmpdir(), 'pix-gw-icp-'))
t.teardown(() => rm(dir, { recursive: true, force: true }))
const icp = await generateIcpPki(join(dir, 'icp'))
// The backend stub only needs some server certificate its CA file names.
const stubPki = await createGatewayPki(dir)
const backend = await startBackend(stubPki)
t.teardown(() => backend.close())

t.test('the identity read from an Open Finance client certificate reaches the backend, and only that', async (t) => {
  const rows: GatewayAuditRow[] = []
  const { logger } = testLogger()
  const gw = await startGateway({
    config: loadGatewayConfig({
      PIXGW_LISTEN_PORT: '0',
      PIXGW_OPS_LISTEN_PORT: '0',
      PIXGW_SERVER_CERT_FILE: icp.server.chainFile,
      PIXGW_SERVER_KEY_FILE: icp.server.keyFile,
      PIXGW_TRUSTSTORE: icp.trustBundleFile,
      PIXGW_CRLS: icp.crlFile,
      PIXGW_BACKEND_URL: backend.url,
      PIXGW_BACKEND_CA_FILE: stubPki.files.serverCa,
      PIXGW_ROUTES: 'GET /open-banking/*',
      PIXGW_RELOAD_INTERVAL_MS: '0'
    }),
    logger,
    identify: icpBrasilIdentity,
    audit: { write: (r) => { rows.push(r) } }
  })
  t.teardown(() => gw.close())
  t.equal(gw.material.crls.length, 2, 'both CRLs of the bundle file are loaded (node:tls would read only the first)')
  const valid = icp.clients.valid
  const status = await new Promise<number>((resolve, reject) => {
    const u = new URL('/open-banking/consents/v3/consents', gw.url)
    void Promise.all([readFile(icp.rootsFile, 'utf8'), readFile(valid.chainFile, 'utf8'), readFile(valid.keyFile, 'utf8')]).then(([ca, cert, key]) => {
      const req = request({ host: u.hostname, port: u.port, path: u.pathname, servername: 'localhost', ca, cert, key, agent: false, headers: { 'x-ofb-organisation-id': 'OFBBR-forged', 'x-ofb-software-statement-id': 'forged' } }, (res) => {
        res.resume()
        res.on('end', () => resolve(res.statusCode ?? 0))
      })
      req.on('error', reject)
      req.end()
    }, reject)
  })
  t.equal(status, 200)
  const call = backend.calls.at(-1)
  t.equal(call?.headers['x-ofb-client-cnpj'], valid.cnpj, 'the CNPJ')
  t.equal(call?.headers['x-ofb-organisation-id'], valid.organisationId, 'the organisation id, not the forged one')
  t.equal(call?.headers['x-ofb-software-statement-id'], valid.softwareStatementId, 'the software statement id, not the forged one')
  const cert = new X509Certificate(await readFile(valid.certFile))
  t.equal(decodeURIComponent(String(call?.headers['x-ssl-client-subject'])), cert.subject.replace(/\n/g, ', '), 'the subject, percent-encoded')
  t.match(rows.at(-1), { client_cnpj: valid.cnpj, client_organisation_id: valid.organisationId, client_software_statement_id: valid.softwareStatementId, status: 200 }, 'the audit row names the client')
})
