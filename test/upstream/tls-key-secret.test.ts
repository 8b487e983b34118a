// The mTLS client key from AWS Secrets Manager (PIXPROXY_TLS_KEY_SECRET_ID), with the signing key in KMS: real
// mutual TLS to the BACEN simulator with the key read from the local Secrets Manager, rotation by PutSecretValue on
// the refresh trigger and on SIGHUP's reload, refusal of unusable versions, and the key never on disk or in a log.
import t from 'tap'
import { createPrivateKey, generateKeyPairSync } from 'node:crypto'
import { mkdtempSync } from 'node:fs'
import { readdir, readFile, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { createInterface } from 'node:readline'
import { Writable } from 'node:stream'
import type { TLSSocket } from 'node:tls'
import pino from 'pino'
import { request } from 'undici'
import { PutSecretValueCommand } from '@aws-sdk/client-secrets-manager'
import { spawnProxyProcess, startLocalStack, PROXY_ISPB } from '../../tools/demo/stack.ts'
import type { LocalStack } from '../../tools/demo/stack.ts'
import { TLS_KEY_SECRET_NAME } from '../../tools/demo/kms-backend.ts'
import { parseTlsKeySecret } from '../../src/upstream/tls-key-secret.ts'
import { createSecretsManagerClient } from '../../src/aws/clients.ts'
import { loadConfig } from '../../src/config.ts'
import { scratchDir } from '../helpers/scratch.ts'

const rsaPem = (): string => generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey.export({ type: 'pkcs8', format: 'pem' }).toString()

t.test('parseTlsKeySecret: the two formats; every unusable value named by what is wrong, never quoted', async (t) => {
  const key = rsaPem()
  const body = key.split('\n')[3] as string
  t.same(parseTlsKeySecret('s', 'v1', key), { versionId: 'v1', keyPem: key, certPem: null }, 'the PEM key alone')
  t.same(parseTlsKeySecret('s', 'v1', `\n${key.trim()}\n\n`).keyPem, key, 'surrounding blank lines do not matter')
  const ec = generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey.export({ type: 'sec1', format: 'pem' }).toString()
  t.equal(parseTlsKeySecret('s', 'v1', ec).keyPem, ec, 'an EC (SEC1) key')
  const cert = '-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n'
  t.same(parseTlsKeySecret('s', 'v2', JSON.stringify({ key, certificate: cert })), { versionId: 'v2', keyPem: key, certPem: cert }, 'JSON with the certificate')
  t.same(parseTlsKeySecret('s', 'v2', JSON.stringify({ key })).certPem, null, 'JSON with only the key')

  const encrypted = generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey.export({ type: 'pkcs8', format: 'pem', cipher: 'aes-256-cbc', passphrase: 'x' }).toString()
  const broken = key.replace(body, body.slice(0, 20) + '!!!!' + body.slice(24))
  const cases: Array<[string, string, RegExp]> = [
    ['empty', '  \n', /is empty/],
    ['not PEM', 'hunter2', /is not PEM/],
    ['encrypted key', encrypted, /encrypted private key/],
    ['key and certificate as PEM', key + cert, /exactly one private key block.*use JSON/],
    ['two keys', key + key, /exactly one private key block/],
    ['a certificate, no key', cert, /exactly one private key block, found CERTIFICATE/],
    ['a damaged key', broken, /not a usable private key/],
    ['bad JSON', `{"key": ${JSON.stringify(key)}`, /not valid JSON/],
    ['JSON without key', JSON.stringify({ certificate: cert }), /no "key" string/],
    ['misspelt field', JSON.stringify({ key, cert }), /unknown field\(s\) "cert"/],
    ['certificate with a key in it', JSON.stringify({ key, certificate: cert + key }), /only PEM CERTIFICATE blocks, found CERTIFICATE, PRIVATE KEY/],
    ['certificate not a string', JSON.stringify({ key, certificate: 1 }), /must be a string/]
  ]
  for (const [name, value, why] of cases) {
    const err = t.throws(() => parseTlsKeySecret('pix/tls', 'v', value), { code: 'PIXPROXY_ERR_AWS_SECRET_UNUSABLE', message: /^secret pix\/tls cannot be used: / }, name) as Error
    t.match(err.message, why, name)
    t.notOk(err.message.includes(body.slice(0, 16)) || err.message.includes('hunter2'), `${name}: the value is not in the message`)
  }
})

t.test('config: the key secret is one of the three TLS key sources; the certificate may come from it; the refresh has a floor', async (t) => {
  const pem = '-----BEGIN CERTIFICATE-----\nx\n-----END CERTIFICATE-----\n'
  const base = { PIXPROXY_ISPB: '99999004', PIXPROXY_SIGNING_KMS_KEY_ID: 'alias/pix', PIXPROXY_SIGNING_CERT_FILE: pem, PIXPROXY_TLS_CA_FILE: pem, PIXPROXY_BACEN_SIGNING_CERTS_FILE: pem }
  const c = loadConfig({ ...base, PIXPROXY_TLS_KEY_SECRET_ID: 'pix/proxy/tls-key' })
  t.same(c.tls.keySecret, { secretId: 'pix/proxy/tls-key', refreshMs: 300_000 }, 'refreshed every 5 minutes by default')
  t.equal(c.tls.certFile, null, 'no certificate file needed: the secret may carry it')
  t.equal(c.hsm, null, 'and no HSM at all')
  t.equal(loadConfig({ ...base, PIXPROXY_TLS_KEY_SECRET_ID: 's', PIXPROXY_TLS_SECRET_REFRESH_MS: '0' }).tls.keySecret?.refreshMs, 0, '0: only on SIGHUP')
  t.throws(() => loadConfig({ ...base, PIXPROXY_TLS_KEY_SECRET_ID: 's', PIXPROXY_TLS_SECRET_REFRESH_MS: '500' }), { message: /PIXPROXY_TLS_SECRET_REFRESH_MS: 500 is too often/ })
  t.throws(() => loadConfig({ ...base, PIXPROXY_TLS_KEY_SECRET_ID: 's', PIXPROXY_TLS_KEY_FILE: pem }), { message: /set exactly one of PIXPROXY_TLS_KEY_LABEL \(HSM\), PIXPROXY_TLS_KEY_FILE \(PEM file\) and PIXPROXY_TLS_KEY_SECRET_ID \(AWS Secrets Manager\)/ })
  t.throws(() => loadConfig({ ...base, PIXPROXY_TLS_KEY_FILE: pem }), { message: /PIXPROXY_TLS_CERT_FILE is required unless the mTLS key secret/ })
})

// One stack for the rest: the signing key in the local KMS, the mTLS key in the local Secrets Manager. TMPDIR points at
// a directory of this test's own, so that "nothing written to disk" can be checked where a temporary file would go.
const ownTmp = mkdtempSync(join(tmpdir(), 'pix-proxy-tls-secret-tmp-'))
const savedTmp = process.env.TMPDIR
process.env.TMPDIR = ownTmp
const scratch = scratchDir()
const logLines: string[] = []
const capture = new Writable({ write (chunk: Buffer, _enc, done) { logLines.push(...chunk.toString('utf8').split('\n').filter((l) => l !== '')); done() } })
let refresh: (() => Promise<void>) | undefined
let refreshEveryMs: number | undefined
let refreshStopped = 0
let stack: LocalStack
/** SHA-256 fingerprints of the client certificates the simulator's TLS server was shown, connection by connection. */
const seen: string[] = []

t.before(async () => {
  stack = await startLocalStack({
    dir: scratch.dir,
    signer: 'kms',
    longPollMs: 300,
    proxyLogger: pino({ level: 'info' }, capture),
    scheduleSecretRefresh: (fn, everyMs) => {
      refresh = fn
      refreshEveryMs = everyMs
      return () => { refreshStopped++ }
    }
  })
  stack.simulator.app.server.on('secureConnection', (socket: TLSSocket) => {
    const peer = socket.getPeerCertificate()
    if (peer.fingerprint256 !== undefined) seen.push(peer.fingerprint256)
  })
})
t.teardown(async () => {
  await stack?.close()
  await scratch.remove()
  await rm(ownTmp, { recursive: true, force: true })
  if (savedTmp === undefined) delete process.env.TMPDIR
  else process.env.TMPDIR = savedTmp
})

async function policy (): Promise<number> {
  const r = await request(`${stack.proxyUrl}/api/v2/policies/ENTRIES_WRITE`, { headers: { 'pi-requestingparticipant': PROXY_ISPB } })
  await r.body.dump()
  return r.statusCode
}

async function putSecret (value: string): Promise<string> {
  const kms = stack.kms as NonNullable<LocalStack['kms']>
  const sm = createSecretsManagerClient({ endpoint: kms.aws.url, region: kms.aws.region, credentials: kms.credentials, maxAttempts: 1 })
  try {
    return (await sm.send(new PutSecretValueCommand({ SecretId: TLS_KEY_SECRET_NAME, SecretString: value }))).VersionId as string
  } finally {
    sm.destroy()
  }
}

async function reads (): Promise<Record<string, number>> {
  const text = await stack.proxy.metrics.registry.getSingleMetricAsString('pixproxy_tls_key_secret_reads_total')
  return Object.fromEntries([...text.matchAll(/outcome="(\w+)"\} (\d+)/g)].map((m) => [m[1] as string, Number(m[2])]))
}

const getSecretValueCalls = (): number => (stack.kms?.aws.calls ?? []).filter((c) => c.target === 'secretsmanager.GetSecretValue' && c.status === 200).length

t.test('mutual TLS with the key from Secrets Manager and the signature from KMS: the simulator sees the secret\'s certificate', async (t) => {
  const kms = stack.kms as NonNullable<LocalStack['kms']>
  t.equal(stack.proxy.crypto.keyStore, null, 'no HSM in use')
  t.ok(stack.proxy.crypto.kmsSigner !== null, 'signing through KMS')
  t.equal(stack.proxy.upstreams.agent.certificate.fingerprint256, kms.tls.certificate.fingerprint256, 'the agent presents the certificate from the secret')
  t.equal(refreshEveryMs, 300_000, 'the refresh is scheduled at PIXPROXY_TLS_SECRET_REFRESH_MS')
  t.equal(await policy(), 200)
  t.equal(seen.at(-1), kms.tls.certificate.fingerprint256, 'the simulator\'s TLS server was shown that certificate')
  t.ok(kms.aws.calls.some((c) => c.target === 'secretsmanager.GetSecretValue' && c.status === 200), 'read through GetSecretValue, SigV4 verified')
})

t.test('the refresh trigger: the same VersionId changes nothing; a new key and certificate are rotated to without dropping a request', async (t) => {
  const kms = stack.kms as NonNullable<LocalStack['kms']>
  const before = await reads()
  const calls = getSecretValueCalls()
  await (refresh as () => Promise<void>)()
  t.equal(getSecretValueCalls(), calls + 1, 'the secret was read')
  t.equal((await reads()).unchanged, (before.unchanged ?? 0) + 1, 'counted unchanged')
  t.equal(stack.proxy.upstreams.agent.certificate.fingerprint256, kms.tls.certificate.fingerprint256, 'and nothing rotated')

  // A request in flight across the rotation: an ICOM long poll that the simulator holds open.
  const polled = new Promise<void>((resolve) => {
    const onRequest = (req: { url?: string }): void => {
      if (req.url?.includes('/stream/start') === true) {
        stack.simulator.app.server.off('request', onRequest)
        resolve()
      }
    }
    stack.simulator.app.server.on('request', onRequest)
  })
  const inFlight = request(`${stack.proxyUrl}/api/v1/out/${PROXY_ISPB}/stream/start`, { headers: { accept: 'multipart/mixed' } })
  await polled
  const version = await putSecret(kms.nextTls.secretString)
  await (refresh as () => Promise<void>)()
  t.equal(stack.proxy.upstreams.agent.certificate.fingerprint256, kms.nextTls.certificate.fingerprint256, 'the agent holds the new certificate')
  t.equal((await reads()).rotated, (before.rotated ?? 0) + 1, 'counted rotated')
  t.ok(logLines.some((l) => l.includes('"mTLS certificate rotated"') && l.includes(version)), 'logged with the secret\'s VersionId')
  const res = await inFlight
  await res.body.dump()
  t.ok(res.statusCode === 200 || res.statusCode === 204, `the request in flight finished on its connection (${res.statusCode})`)
  t.equal(await policy(), 200, 'a request after the rotation succeeds')
  t.equal(seen.at(-1), kms.nextTls.certificate.fingerprint256, 'on a new connection the simulator sees the new certificate')
  await (refresh as () => Promise<void>)()
  t.equal((await reads()).unchanged, (before.unchanged ?? 0) + 2, 'the new version, read again, is unchanged')
})

t.test('a version whose key does not match its certificate, or that cannot be parsed, is refused: the current key stays', async (t) => {
  const kms = stack.kms as NonNullable<LocalStack['kms']>
  const current = stack.proxy.upstreams.agent.certificate.fingerprint256
  const before = await reads()
  const foreignKey = rsaPem()
  await putSecret(JSON.stringify({ key: foreignKey, certificate: kms.tls.certificate.pem }))
  await (refresh as () => Promise<void>)()
  t.equal((await reads()).refused, (before.refused ?? 0) + 1, 'counted refused')
  t.ok(logLines.some((l) => l.includes('mTLS key secret refresh refused') && l.includes('PIXPROXY_ERR_TLS_KEY_CERT_MISMATCH')), 'logged as an error with its code')
  t.equal(stack.proxy.upstreams.agent.certificate.fingerprint256, current, 'the current certificate stays')
  t.equal(await policy(), 200, 'and traffic continues on it')
  await t.rejects(stack.proxy.upstreams.reloadCertificates(), { code: 'PIXPROXY_ERR_TLS_KEY_CERT_MISMATCH' }, 'SIGHUP\'s reload refuses it too')

  await putSecret('{"key": "-----BEGIN PRIVATE KEY-----')
  await t.rejects(stack.proxy.upstreams.refreshKeySecret(), { code: 'PIXPROXY_ERR_AWS_SECRET_UNUSABLE' }, 'unparseable')
  t.equal((await reads()).refused, (before.refused ?? 0) + 3)

  await putSecret(JSON.stringify({ key: kms.tls.keyPem }))
  await t.rejects(stack.proxy.upstreams.refreshKeySecret(), { code: 'PIXPROXY_ERR_AWS_SECRET_UNUSABLE', message: /no certificate and PIXPROXY_TLS_CERT_FILE is unset/ }, 'no certificate anywhere')

  kms.aws.failCalls({ target: 'secretsmanager.GetSecretValue', errorType: 'AccessDeniedException', times: 3 })
  await t.rejects(stack.proxy.upstreams.refreshKeySecret(), { code: 'PIXPROXY_ERR_AWS_SECRET_READ' }, 'Secrets Manager unreadable')
  kms.aws.clearFaults()
  t.equal((await reads()).failed, (before.failed ?? 0) + 1, 'counted failed')
  t.equal(stack.proxy.upstreams.agent.certificate.fingerprint256, current, 'through all of it the current certificate stayed')
  t.equal(await policy(), 200)
})

t.test('SIGHUP\'s reload reads the secret and rotates back to the first identity; requests before and after succeed', async (t) => {
  const kms = stack.kms as NonNullable<LocalStack['kms']>
  t.equal(await policy(), 200)
  await putSecret(kms.tls.secretString)
  await stack.proxy.upstreams.reloadCertificates()
  t.equal(stack.proxy.upstreams.agent.certificate.fingerprint256, kms.tls.certificate.fingerprint256)
  t.equal(await policy(), 200)
  t.equal(seen.at(-1), kms.tls.certificate.fingerprint256, 'the simulator sees the first certificate again')
})

t.test('pix-proxy serve as its own process: kill -HUP re-reads the secret and the simulator sees the new certificate', async (t) => {
  const kms = stack.kms as NonNullable<LocalStack['kms']>
  await putSecret(kms.tls.secretString)
  // The production entry point (src/server.ts) configured from the environment: the SDK finds the local endpoint
  // there, as it finds the task role's on ECS. Its own audit directories; its TMPDIR is this test's too.
  const child = spawnProxyProcess(stack, {
    AWS_ENDPOINT_URL: kms.aws.url,
    AWS_REGION: kms.aws.region,
    AWS_ACCESS_KEY_ID: kms.credentials.accessKeyId,
    AWS_SECRET_ACCESS_KEY: kms.credentials.secretAccessKey,
    TMPDIR: ownTmp,
    PIXPROXY_AUDIT_SPOOL_DIR: join(scratch.dir, 'serve', 'spool'),
    PIXPROXY_AUDIT_PARQUET_DIR: join(scratch.dir, 'serve', 'lake')
  })
  t.teardown(async () => {
    if (child.child.exitCode === null && child.child.signalCode === null) child.child.kill('SIGTERM')
    await child.exited
  })
  const lines: string[] = []
  let onLine: (() => void) | undefined
  createInterface({ input: child.child.stdout as NodeJS.ReadableStream }).on('line', (l) => { lines.push(l); onLine?.() })
  const logged = async (what: string): Promise<string> => await new Promise((resolve) => {
    const check = (): void => {
      const hit = lines.find((l) => l.includes(what))
      if (hit !== undefined) resolve(hit)
    }
    onLine = check
    check()
  })
  const url = await child.url
  const policyVia = async (): Promise<number> => {
    const r = await request(`${url}/api/v2/policies/ENTRIES_WRITE`, { headers: { 'pi-requestingparticipant': PROXY_ISPB } })
    await r.body.dump()
    return r.statusCode
  }
  t.equal(await policyVia(), 200, 'mutual TLS with the key from the secret')
  t.equal(seen.at(-1), kms.tls.certificate.fingerprint256)
  const version = await putSecret(kms.nextTls.secretString)
  child.child.kill('SIGHUP')
  const rotatedLine = await logged('mTLS certificate rotated')
  t.match(rotatedLine, version, 'rotated to the new version')
  t.equal(await policyVia(), 200, 'a request after the rotation succeeds')
  t.equal(seen.at(-1), kms.nextTls.certificate.fingerprint256, 'the simulator sees the new certificate')
  child.child.kill('SIGTERM')
  t.equal(await child.exited, 0, 'and it stops cleanly')
  t.notOk(lines.some((l) => l.includes(kms.nextTls.keyPem.split('\n')[10] as string) || l.includes(kms.tls.keyPem.split('\n')[10] as string)), 'no log line of the process holds a key')
})

t.test('never on disk: no file under TMPDIR or the stack\'s directory, and no log line, holds any key the secret held', async (t) => {
  const kms = stack.kms as NonNullable<LocalStack['kms']>
  // What a copy of each key would contain: a line of its PEM body, and a slice of its DER from the private part.
  const needles: Array<{ name: string, text: string, der: Buffer }> = [kms.tls, kms.nextTls].map((id, i) => {
    const der = createPrivateKey(id.keyPem).export({ type: 'pkcs8', format: 'der' })
    return { name: `identity ${i}`, text: id.keyPem.split('\n')[10] as string, der: der.subarray(der.length - 200, der.length - 152) }
  })
  // The audit pipeline keeps working in the background: a file or directory that goes away while this looks is skipped.
  const gone = (err: unknown): null => {
    if ((err as { code?: string }).code === 'ENOENT') return null
    throw err
  }
  const files: string[] = []
  const walk = async (dir: string): Promise<void> => {
    for (const e of (await readdir(dir, { withFileTypes: true }).catch(gone)) ?? []) {
      const p = join(dir, e.name)
      if (e.isDirectory()) await walk(p)
      else if (e.isFile()) files.push(p)
    }
  }
  await walk(ownTmp)
  await walk(scratch.dir)
  t.ok(files.length > 0, `${files.length} files looked at (the token, the audit spool, the simulator's log)`)
  for (const file of files) {
    const bytes = await readFile(file).catch(gone)
    if (bytes === null) continue
    for (const n of needles) {
      if (bytes.includes(n.der) || bytes.includes(n.text)) t.fail(`${file} holds the key of ${n.name}`)
    }
  }
  t.ok(logLines.length > 0)
  for (const n of needles) t.notOk(logLines.some((l) => l.includes(n.text)), `no log line holds the key of ${n.name}`)
})

t.test('close stops the refresh', async (t) => {
  t.equal(refreshStopped, 0)
  await stack.proxy.close()
  t.equal(refreshStopped, 1, 'the scheduler\'s stop was called')
})

t.test('start-up refuses a secret that carries a certificate when PIXPROXY_TLS_CERT_FILE is set too', async (t) => {
  const other = scratchDir()
  t.teardown(() => other.remove())
  const pem = (stack.kms as NonNullable<LocalStack['kms']>).tls.certificate.pem
  await t.rejects(startLocalStack({ dir: other.dir, signer: 'kms', settings: { PIXPROXY_TLS_CERT_FILE: pem } }), {
    code: 'PIXPROXY_ERR_AWS_SECRET_UNUSABLE',
    message: /holds a certificate and PIXPROXY_TLS_CERT_FILE is set too/
  })
})
