/**
 * The gateway seen by an independent TLS client, `openssl s_client`: what Node's own client showed in
 * gateway.test.ts holds for another implementation too (a valid client is answered; a revoked certificate, TLS 1.1
 * and a suite Open Finance does not permit get no answer). Each run ends when the gateway closes the connection.
 */
import { spawn } from 'node:child_process'
import { once } from 'node:events'
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import t from 'tap'
import { icpBrasilIdentity } from '../../core/pki/icp-brasil.ts'
import { startGateway } from '../../src/gateway/gateway.ts'
import { createGatewayPki } from '../helpers/gateway-pki.ts'
import type { Issued } from '../helpers/gateway-pki.ts'
import { gatewayConfig, startBackend, testLogger } from './helpers.ts'

const dir = await mkdtemp(join(tmpdir(), 'pix-gw-openssl-'))
t.teardown(() => rm(dir, { recursive: true, force: true }))
const pki = await createGatewayPki(dir)
const backend = await startBackend(pki)
t.teardown(() => backend.close())
const { logger } = testLogger()
const gw = await startGateway({ config: gatewayConfig(pki, backend), logger, identify: icpBrasilIdentity, audit: { write: () => {} } })
t.teardown(() => gw.close())
const port = new URL(gw.url).port

async function files (name: string, c: Issued): Promise<{ cert: string, key: string }> {
  const cert = join(dir, `${name}.pem`)
  const key = join(dir, `${name}.key`)
  await writeFile(cert, pki.chainOf(c))
  await writeFile(key, c.keyPem, { mode: 0o600 })
  return { cert, key }
}

/** s_client with `args`, sending one GET with Connection: close; resolves with its exit code and stdout. */
async function sClient (args: string[]): Promise<{ code: number | null, out: string }> {
  return await new Promise((resolve, reject) => {
    const p = spawn('openssl', ['s_client', '-connect', `127.0.0.1:${port}`, '-servername', 'localhost', '-CAfile', pki.files.serverCa, '-verify_return_error', '-quiet', ...args], { stdio: ['pipe', 'pipe', 'pipe'] })
    let out = ''
    p.stdout.on('data', (d: Buffer) => { out += d.toString('utf8') })
    p.stderr.resume()
    p.on('error', reject)
    p.on('close', (code) => resolve({ code, out }))
    p.stdin.on('error', () => {}) // the gateway may close first: the request is then never read
    p.stdin.end('GET /open-banking/accounts/v2/accounts HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n')
  })
}

t.test('a valid client is answered, over TLS 1.2 (each required suite) and TLS 1.3', async (t) => {
  const valid = await files('valid', pki.clients.valid)
  for (const extra of [['-tls1_3'], ['-tls1_2', '-cipher', 'ECDHE-RSA-AES128-GCM-SHA256'], ['-tls1_2', '-cipher', 'ECDHE-RSA-AES256-GCM-SHA384']]) {
    const r = await sClient(['-cert', valid.cert, '-key', valid.key, ...extra])
    t.match(r.out, /^HTTP\/1\.1 200 /m, `${extra.join(' ')}: 200`)
  }
})

t.test('refused: revoked, TLS 1.1, a suite not permitted, no certificate', async (t) => {
  const valid = await files('valid', pki.clients.valid)
  const revoked = await files('revoked', pki.clients.revoked)
  const cases: Array<[string, string[], string]> = [
    ['revoked', ['-cert', revoked.cert, '-key', revoked.key], 'cert_revoked'],
    ['TLS 1.1', ['-cert', valid.cert, '-key', valid.key, '-tls1_1', '-cipher', 'DEFAULT@SECLEVEL=0'], 'unsupported_protocol'],
    ['TLS 1.2 AES128-SHA256', ['-cert', valid.cert, '-key', valid.key, '-tls1_2', '-cipher', 'AES128-SHA256'], 'no_shared_cipher'],
    ['TLS 1.2 ECDHE-RSA-AES128-SHA256', ['-cert', valid.cert, '-key', valid.key, '-tls1_2', '-cipher', 'ECDHE-RSA-AES128-SHA256'], 'no_shared_cipher'],
    ['no certificate', [], 'no_certificate']
  ]
  for (const [name, args, reason] of cases) {
    // The gateway decides before it closes the connection, so its event is there by the time s_client ends.
    const refused = once(gw.events, 'refused') as Promise<[{ reason: string }]>
    const r = await sClient(args)
    t.notMatch(r.out, /HTTP\/1\.1/, `${name}: no HTTP answer`)
    t.equal((await refused)[0].reason, reason, `${name}: refused by the gateway as ${reason}`)
  }
})
