/**
 * The truststore and CRLs as S3 objects (s3://bucket/key, as the gateway's Terraform sets them), read by the real SDK
 * S3 client from the local endpoint, which verifies every request's SigV4 signature: start-up from S3, a rotated CRL
 * applied at reload, conditional GETs (an unchanged object is a 304, not a transfer), a bad or unreadable new version
 * refused with the old material kept, a CRL re-read when it reaches its nextUpdate without any interval, and start-up
 * failing with the S3 error when an object is missing.
 */
import { once } from 'node:events'
import { mkdtemp, readFile, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import t from 'tap'
import type { Test } from 'tap'
import { Errors } from '../../core/errors.ts'
import { icpBrasilIdentity } from '../../core/pki/icp-brasil.ts'
import { createS3Client } from '../../src/aws/clients.ts'
import { loadGatewayConfig } from '../../src/gateway/config.ts'
import { startGateway } from '../../src/gateway/gateway.ts'
import type { Gateway } from '../../src/gateway/gateway.ts'
import { parseSourceLocation } from '../../src/gateway/sources.ts'
import { startLocalAwsEndpoint } from '../../tools/aws-local/endpoint.ts'
import { createGatewayPki, issueCrl } from '../helpers/gateway-pki.ts'
import { attempt, gatewayConfig, HOLDABLE_S3_SOURCES, holdableS3, startBackend, testLogger } from './helpers.ts'

const dir = await mkdtemp(join(tmpdir(), 'pix-gw-s3-'))
t.teardown(() => rm(dir, { recursive: true, force: true }))
const pki = await createGatewayPki(dir)
const backend = await startBackend(pki)
t.teardown(() => backend.close())
const credentials = { accessKeyId: 'AKIDGATEWAYTEST', secretAccessKey: 'gateway-test-secret' }
const aws = await startLocalAwsEndpoint({ credentials: { [credentials.accessKeyId]: credentials.secretAccessKey } })
t.teardown(() => aws.close())
const s3 = createS3Client({ endpoint: aws.url, region: aws.region, credentials, forcePathStyle: true, maxAttempts: 1 })
t.teardown(() => s3.destroy())

const BUCKET = 'bank-truststore'
const TRUSTSTORE = `s3://${BUCKET}/truststore/ca-bundle.pem`
const ROOT_CRL = `s3://${BUCKET}/crls/root.crl`
const INTERMEDIATE_CRL = `s3://${BUCKET}/crls/intermediate.crl`

/** Puts the test PKI's truststore and CRLs into the bucket (each put is a new version of the object). */
async function seed (prefix = ''): Promise<void> {
  aws.putObject(BUCKET, `${prefix}truststore/ca-bundle.pem`, await readFile(pki.files.truststore))
  aws.putObject(BUCKET, `${prefix}crls/root.crl`, await readFile(pki.files.rootCrl))
  aws.putObject(BUCKET, `${prefix}crls/intermediate.crl`, await readFile(pki.files.intermediateCrl))
}

async function start (t: Test, extra: Record<string, string> = {}, o: { now?: () => Date } = {}): Promise<Gateway> {
  const { logger } = testLogger()
  const config = gatewayConfig(pki, backend, { PIXGW_TRUSTSTORE: TRUSTSTORE, PIXGW_CRLS: `${ROOT_CRL},${INTERMEDIATE_CRL}`, ...extra })
  const gw = await startGateway({ config, logger, identify: icpBrasilIdentity, audit: { write: () => {} }, s3, ...o })
  t.teardown(() => gw.close())
  return gw
}

const s3Calls = (status: number): number => aws.calls.filter((c) => c.target === 'S3.GetObject' && c.status === status).length

async function reason (gw: Gateway, client: typeof pki.clients.valid): Promise<string> {
  const event = once(gw.events, 'refused') as Promise<[{ reason: string }]>
  const res = await attempt(gw.url, pki, { client })
  t.notOk(res.ok && res.status === 200, 'not admitted')
  return (await event)[0].reason
}

t.test('locations: s3://bucket/key or a path; a malformed s3 URI is a configuration error, not a path', async (t) => {
  t.same(parseSourceLocation('s3://bank-truststore/truststore/ca bundle.pem'), { kind: 's3', bucket: 'bank-truststore', key: 'truststore/ca bundle.pem' })
  t.same(parseSourceLocation('/etc/gw/ca.pem'), { kind: 'file', path: '/etc/gw/ca.pem' })
  for (const bad of ['s3://Bank/x', 's3://bucket', 's3://bucket/', 's3://ab/x', 's3:///key']) t.throws(() => parseSourceLocation(bad), /is not s3:\/\/bucket\/key/, bad)
  t.throws(() => gatewayConfig(pki, backend, { PIXGW_CRLS: `${ROOT_CRL},s3://UPPER/x.crl` }), { code: Errors.CONFIG_INVALID.code, message: /PIXGW_CRLS: s3:\/\/UPPER\/x\.crl is not s3:\/\/bucket\/key/ })
  t.equal(gatewayConfig(pki, backend, { PIXGW_S3_FORCE_PATH_STYLE: 'true' }).s3ForcePathStyle, true)
  t.equal(loadGatewayConfig({ ...baseEnv(), PIXGW_TRUSTSTORE: TRUSTSTORE }).s3ForcePathStyle, false, 'virtual-hosted by default, as AWS is addressed')
})

function baseEnv (): Record<string, string> {
  return { PIXGW_SERVER_CERT_FILE: pki.files.serverCert, PIXGW_SERVER_KEY_FILE: pki.files.serverKey, PIXGW_TRUSTSTORE: pki.files.truststore, PIXGW_CRLS: pki.files.rootCrl, PIXGW_BACKEND_URL: backend.url, PIXGW_ROUTES: 'GET /open-banking/*' }
}

t.test('from S3: start, admit and refuse as with files; a rotated CRL applies at reload; unchanged objects are 304s', async (t) => {
  await seed()
  const gw = await start(t)
  t.equal(gw.material.crls.length, 2)
  const ok = await attempt(gw.url, pki, { client: pki.clients.valid })
  t.ok(ok.ok && ok.status === 200, 'a valid client is admitted with the S3 truststore')
  t.equal(await reason(gw, pki.clients.revoked), 'cert_revoked', 'the S3 CRL revokes')

  const before304 = s3Calls(304)
  t.equal(await gw.reload(), 'unchanged', 'nothing changed in the bucket')
  t.equal(s3Calls(304) - before304, 3, 'each object was asked for with If-None-Match and answered 304 (no transfer)')

  // The CA revokes the valid client: a new version of its CRL object.
  aws.putObject(BUCKET, 'crls/intermediate.crl', issueCrl(pki.intermediate, { serials: [pki.clients.revoked.certificate.serial, pki.clients.valid.certificate.serial], number: 2 }))
  const before200 = s3Calls(200)
  t.equal(await gw.reload(), 'applied', 'the new CRL version is applied')
  t.equal(s3Calls(200) - before200, 1, 'only the changed object was transferred')
  t.equal(await reason(gw, pki.clients.valid), 'cert_revoked', 'the newly revoked client is refused')

  const m = await (await fetch(`${gw.opsUrl}/metrics`)).text()
  t.match(m, /pixgw_trust_source_reads_total\{result="fetched"\} 4\b/, '3 objects at start + 1 changed')
  t.match(m, /pixgw_trust_source_reads_total\{result="not-modified"\} 5\b/, '3 at the first reload, 2 at the second')
})

t.test('a bad new version, a missing object, an S3 outage and a wrong signature are refused; the material in use stays', async (t) => {
  await seed('b/')
  const gw = await start(t, { PIXGW_TRUSTSTORE: `s3://${BUCKET}/b/truststore/ca-bundle.pem`, PIXGW_CRLS: `s3://${BUCKET}/b/crls/root.crl,s3://${BUCKET}/b/crls/intermediate.crl` })
  const digest = gw.material.digest

  aws.putObject(BUCKET, 'b/truststore/ca-bundle.pem', 'not a certificate\n')
  t.equal(await gw.reload(), 'refused', 'garbage in the new version')
  aws.putObject(BUCKET, 'b/truststore/ca-bundle.pem', await readFile(pki.files.truststore))
  aws.deleteObject(BUCKET, 'b/crls/root.crl')
  t.equal(await gw.reload(), 'refused', 'a CRL object deleted')
  aws.putObject(BUCKET, 'b/crls/root.crl', await readFile(pki.files.rootCrl))
  aws.failCalls({ target: 'S3', errorType: 'SlowDown', status: 503, times: 1 })
  t.equal(await gw.reload(), 'refused', 'S3 throttling (the client here makes one attempt)')
  await aws.outage('503')
  t.equal(await gw.reload(), 'refused', 'S3 unavailable')
  await aws.restore()
  t.equal(gw.material.digest, digest, 'the material in use never changed')
  const ok = await attempt(gw.url, pki, { client: pki.clients.valid })
  t.ok(ok.ok && ok.status === 200, 'clients are still admitted with it')
  t.equal(await gw.reload(), 'unchanged', 'and once S3 answers again the same objects read as unchanged')

  const m = await (await fetch(`${gw.opsUrl}/metrics`)).text()
  t.match(m, /pixgw_trust_reloads_total\{result="refused"\} 4\b/)
  t.match(m, /pixgw_trust_source_reads_total\{result="failed"\} 3\b/, 'the missing object, the throttle and the outage')
})

t.test('start-up: a missing object or credentials S3 refuses fail with the S3 error, naming the object', async (t) => {
  const { logger } = testLogger()
  await t.rejects(startGateway({
    config: gatewayConfig(pki, backend, { PIXGW_TRUSTSTORE: `s3://${BUCKET}/nowhere/ca-bundle.pem`, PIXGW_CRLS: ROOT_CRL }),
    logger,
    identify: icpBrasilIdentity,
    audit: { write: () => {} },
    s3
  }), { code: Errors.AWS_S3_READ.code, message: /truststore from S3 \(s3:\/\/bank-truststore\/nowhere\/ca-bundle\.pem\): NoSuchKey/ })

  const stranger = createS3Client({ endpoint: aws.url, region: aws.region, credentials: { accessKeyId: credentials.accessKeyId, secretAccessKey: 'wrong' }, forcePathStyle: true, maxAttempts: 1 })
  t.teardown(() => stranger.destroy())
  await seed()
  await t.rejects(startGateway({
    config: gatewayConfig(pki, backend, { PIXGW_TRUSTSTORE: TRUSTSTORE, PIXGW_CRLS: ROOT_CRL }),
    logger,
    identify: icpBrasilIdentity,
    audit: { write: () => {} },
    s3: stranger
  }), { code: Errors.AWS_S3_READ.code, message: /SignatureDoesNotMatch/ }, 'the local endpoint checks the SDK\'s SigV4 signature as S3 does')
})

t.test('a CRL is re-read when it reaches its nextUpdate, with no reload interval and no SIGHUP', async (t) => {
  // The gateway's clock is the test's; OpenSSL's is real time, for which every CRL here stays fresh. Whole seconds: a
  // CRL's times are UTCTime.
  const base = Math.floor(Date.now() / 1000) * 1000
  const nextUpdate = new Date(base + 86_400_000)
  let clock = new Date(base)
  aws.putObject(BUCKET, 'n/truststore/ca-bundle.pem', await readFile(pki.files.truststore))
  aws.putObject(BUCKET, 'n/crls/root.crl', issueCrl(pki.root, { thisUpdate: new Date(base - 60_000), nextUpdate }))
  aws.putObject(BUCKET, 'n/crls/intermediate.crl', await readFile(pki.files.intermediateCrl))
  const gw = await start(t, { PIXGW_TRUSTSTORE: `s3://${BUCKET}/n/truststore/ca-bundle.pem`, PIXGW_CRLS: `s3://${BUCKET}/n/crls/root.crl,s3://${BUCKET}/n/crls/intermediate.crl`, PIXGW_RELOAD_INTERVAL_MS: '0' }, { now: () => clock })
  // A millisecond before the root CRL's nextUpdate by the gateway's clock: a forced reload schedules the next one for
  // just after it, about a second of real time away.
  clock = new Date(nextUpdate.getTime() - 1)
  t.equal(await gw.reload({ force: true }), 'applied')
  // Synchronously after that (the timer cannot run before this continuation ends): the CA publishes the successor,
  // and the test listens for the reload no one asks for.
  aws.putObject(BUCKET, 'n/crls/root.crl', issueCrl(pki.root, { thisUpdate: new Date(base), nextUpdate: new Date(base + 2 * 86_400_000), number: 2 }))
  const reloaded = once(gw.events, 'reloaded') as Promise<[string]>
  clock = new Date(nextUpdate.getTime() + 1_000)
  const [result] = await reloaded
  t.equal(result, 'applied', 'the successor was read and applied')
  t.equal(gw.material.crls[0]?.nextUpdate?.getTime(), base + 2 * 86_400_000, 'the new root CRL is in use')
  const ok = await attempt(gw.url, pki, { client: pki.clients.valid })
  t.ok(ok.ok && ok.status === 200, 'clients are admitted under the fresh CRL')
})

t.test('reloads run one at a time: one that read a CRL before a revocation cannot finish last and undo it', async (t) => {
  // An in-process S3 whose GetObject of root.crl can be held, so that reload A is caught between its reads.
  const { s3: fake, reads, put, hold } = await holdableS3(pki)
  const { logger } = testLogger()
  const gw = await startGateway({
    config: gatewayConfig(pki, backend, HOLDABLE_S3_SOURCES),
    logger,
    identify: icpBrasilIdentity,
    audit: { write: () => {} },
    s3: fake
  })
  t.teardown(() => gw.close())
  const held = hold()
  reads.length = 0
  // Reload A (the interval's, say) reads the truststore and the intermediate CRL, then waits on the root CRL.
  const a = gw.reload()
  await held.reached
  // The CA revokes the client; SIGHUP asks for reload B while A is still reading.
  put('int.crl', issueCrl(pki.intermediate, { serials: [pki.clients.valid.certificate.serial, pki.clients.revoked.certificate.serial], number: 2 }))
  const b = gw.reload({ force: true })
  held.release()
  t.same([await a, await b], ['unchanged', 'applied'], 'A found nothing new; B, after it, applied the revocation')
  t.same(reads, ['trust.pem', 'int.crl', 'root.crl', 'trust.pem', 'int.crl', 'root.crl'], 'B read nothing before A had finished')
  t.match(await attempt(gw.url, pki, { client: pki.clients.valid }), { ok: false }, 'the revoked client stays refused')
})
