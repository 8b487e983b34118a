import t from 'tap'
import type { Test } from 'tap'
import { createSecretsManagerClient, createSsmClient } from '../src/aws/clients.ts'
import type { AwsClientOptions } from '../src/aws/config.ts'
import { startLocalAwsEndpoint } from '../tools/aws-local/endpoint.ts'
import type { LocalAwsEndpoint, LocalParameter } from '../tools/aws-local/endpoint.ts'
import { CONFIG_KEYS, loadConfig, ssmParameterName } from '../src/config.ts'
import { fetchPin, loadConfigSources } from '../src/config-sources.ts'
import type { SSMClient } from '@aws-sdk/client-ssm'
import type { SecretsManagerClient } from '@aws-sdk/client-secrets-manager'
import { rejection } from './helpers/rejection.ts'

const CREDS = { accessKeyId: 'AKIDLOCALTEST', secretAccessKey: 'local-secret-key' }
const PATH = '/pix/proxy/'

/** A complete, valid configuration as SSM parameters (PEM-file keys; paths need not exist for loadConfig). */
const SETTINGS: Record<string, string> = {
  PIXPROXY_ISPB: '99999004',
  PIXPROXY_SIGNING_KEY_FILE: '/run/keys/sign.pem',
  PIXPROXY_SIGNING_CERT_FILE: '/run/keys/sign.crt',
  PIXPROXY_TLS_KEY_FILE: '/run/keys/tls.pem',
  PIXPROXY_TLS_CERT_FILE: '/run/keys/tls.crt',
  PIXPROXY_TLS_CA_FILE: '/run/keys/ca.pem',
  PIXPROXY_BACEN_SIGNING_CERTS_FILE: '/run/keys/bcb.pem',
  PIXPROXY_DICT_URL: 'https://dict.example:16522',
  PIXPROXY_SPI_URL: 'https://icom.example:16522',
  PIXPROXY_LISTEN_PORT: '9443',
  PIXPROXY_LOG_LEVEL: 'warn',
  PIXPROXY_HSM_POOL_SIZE: '8',
  PIXPROXY_UPSTREAM_CONNECTIONS: '32',
  PIXPROXY_SPI_MAX_IN_FLIGHT: '6',
  PIXPROXY_SPI_QUEUE_MAX: '500',
  PIXPROXY_SPI_QUEUE_TIMEOUT_MS: '4000',
  PIXPROXY_MAX_BODY_BYTES: '2097152',
  PIXPROXY_SHUTDOWN_TIMEOUT_MS: '20000',
  PIXPROXY_INSTANCE_ID: 'task-1',
  PIXPROXY_INVALID_SIGNATURE_POLICY: 'flag',
  PIXPROXY_UPSTREAM_CONNECT_TIMEOUT_MS: '3000',
  PIXPROXY_UPSTREAM_HEADERS_TIMEOUT_MS: '8000',
  PIXPROXY_UPSTREAM_BODY_TIMEOUT_MS: '8000'
}
const asParameters = (s: Record<string, string>): LocalParameter[] => Object.entries(s).map(([k, value]) => ({ name: ssmParameterName(k), value }))

interface Setup { ep: LocalAwsEndpoint, ssm: SSMClient, sm: SecretsManagerClient, opts: AwsClientOptions }

async function setup (t: Test, parameters: LocalParameter[] = asParameters(SETTINGS), client: Partial<AwsClientOptions> = {}): Promise<Setup> {
  const ep = await startLocalAwsEndpoint({ credentials: { [CREDS.accessKeyId]: CREDS.secretAccessKey }, parameters })
  t.teardown(() => ep.close())
  const opts: AwsClientOptions = { endpoint: ep.url, region: 'sa-east-1', credentials: CREDS, ...client }
  const ssm = createSsmClient(opts)
  const sm = createSecretsManagerClient(opts)
  t.teardown(() => { ssm.destroy(); sm.destroy() })
  return { ep, ssm, sm, opts }
}

const pathCalls = (ep: LocalAwsEndpoint): number => ep.calls.filter((c) => c.target === 'AmazonSSM.GetParametersByPath').length

t.test('every parameter under the path, over several pages, becomes a setting loadConfig accepts', async (t) => {
  t.ok(Object.keys(SETTINGS).length > 20, 'more than two pages of 10')
  const { ep, ssm } = await setup(t)
  const { source, origins, hsmPin } = await loadConfigSources({ env: {}, ssm: { client: ssm, path: PATH } })
  t.same(source, SETTINGS)
  t.equal(pathCalls(ep), Math.ceil(Object.keys(SETTINGS).length / 10), 'followed NextToken to the end')
  t.ok(Object.values(origins).every((o) => o === 'ssm'))
  t.equal(hsmPin, null)
  const config = loadConfig(source)
  t.equal(config.listen.port, 9443)
  t.equal(config.dict.url, 'https://dict.example:16522')
  t.equal(config.invalidSignaturePolicy, 'flag')
})

t.test('precedence: a set environment variable beats SSM, SSM beats the schema default', async (t) => {
  const { ssm } = await setup(t)
  const env = { PIXPROXY_LISTEN_PORT: '7000', PIXPROXY_SPI_URL: '', HOME: '/root', AWS_SECRET_ACCESS_KEY: 'not copied' }
  const { source, origins } = await loadConfigSources({ env, ssm: { client: ssm, path: PATH } })
  t.equal(source.PIXPROXY_LISTEN_PORT, '7000')
  t.equal(origins.PIXPROXY_LISTEN_PORT, 'env')
  t.equal(source.PIXPROXY_SPI_URL, '', 'set to empty still wins: unset it to let SSM decide')
  t.equal(origins.PIXPROXY_SPI_URL, 'env')
  t.equal(source.PIXPROXY_DICT_URL, 'https://dict.example:16522')
  t.equal(origins.PIXPROXY_DICT_URL, 'ssm')
  t.notOk('HOME' in source, 'only PIXPROXY_* settings are carried')
  t.notOk('AWS_SECRET_ACCESS_KEY' in source)
  const config = loadConfig({ ...source, PIXPROXY_SPI_URL: undefined })
  t.equal(config.listen.port, 7000)
  t.equal(config.spi.queueMax, 500, 'from SSM')
  t.equal(config.tls.minVersion, 'TLSv1.2', 'set nowhere: the schema default')
})

t.test('without SSM the environment is the source', async (t) => {
  const { source, origins } = await loadConfigSources({ env: { PIXPROXY_ISPB: '1', OTHER: 'x' } })
  t.same(source, { PIXPROXY_ISPB: '1' })
  t.same(origins, { PIXPROXY_ISPB: 'env' })
})

t.test('unknown parameter names under the path are refused, all named at once', async (t) => {
  const { ssm } = await setup(t, [
    ...asParameters(SETTINGS),
    { name: '/pix/proxy/dict-ulr', value: 'https://typo:1' },
    { name: '/pix/proxy/spi_url', value: 'https://underscore:1' },
    { name: '/pix/proxy/legacy/dict-url', value: 'https://nested:1' },
    { name: '/pix/other/ignored', value: 'not under the path' }
  ])
  const e = await rejection(loadConfigSources({ env: {}, ssm: { client: ssm, path: PATH } }))
  t.equal(e.code, 'PIXPROXY_ERR_AWS_SSM_UNKNOWN_PARAMETER')
  t.match(e.message, '/pix/proxy/dict-ulr')
  t.match(e.message, '/pix/proxy/spi_url (did you mean /pix/proxy/spi-url?)')
  t.match(e.message, '/pix/proxy/legacy/dict-url')
  t.notMatch(e.message, '/pix/other/ignored')
  const env = Object.fromEntries(CONFIG_KEYS.map((k) => [k, 'x']))
  t.equal((await rejection(loadConfigSources({ env, ssm: { client: ssm, path: PATH } }))).code, 'PIXPROXY_ERR_AWS_SSM_UNKNOWN_PARAMETER', 'even when the environment overrides everything')
})

t.test('SecureString parameters are read decrypted', async (t) => {
  const { ssm } = await setup(t, [{ name: '/pix/proxy/ispb', value: '12345678', type: 'SecureString' }])
  const { source } = await loadConfigSources({ env: {}, ssm: { client: ssm, path: PATH } })
  t.equal(source.PIXPROXY_ISPB, '12345678')
})

t.test('another path prefix maps the same way', async (t) => {
  const { ssm } = await setup(t, [{ name: '/pix/proxy-hml/dict-url', value: 'https://hml:1' }, { name: '/pix/proxy/dict-url', value: 'https://prd:1' }])
  const { source } = await loadConfigSources({ env: {}, ssm: { client: ssm, path: '/pix/proxy-hml/' } })
  t.same(source, { PIXPROXY_DICT_URL: 'https://hml:1' })
})

t.test('bad paths and unreachable or throttled SSM', async (t) => {
  const { ep, ssm } = await setup(t)
  for (const path of ['/pix/proxy', 'pix/proxy/', '/pix proxy/']) {
    t.equal((await rejection(loadConfigSources({ env: {}, ssm: { client: ssm, path } }))).code, 'PIXPROXY_ERR_AWS_SSM_PATH_INVALID', path)
  }
  // Two throttled calls are absorbed by the start-up client's three attempts.
  ep.failCalls({ target: 'AmazonSSM', errorType: 'ThrottlingException', times: 2 })
  const before = pathCalls(ep)
  const { source } = await loadConfigSources({ env: {}, ssm: { client: ssm, path: PATH } })
  t.equal(source.PIXPROXY_ISPB, '99999004')
  t.equal(ep.calls.filter((c) => c.errorType === 'ThrottlingException').length, 2)
  t.equal(pathCalls(ep) - before, 2 + Math.ceil(Object.keys(SETTINGS).length / 10))

  ep.failCalls({ target: 'AmazonSSM', errorType: 'AccessDeniedException', message: 'not authorized to perform ssm:GetParametersByPath' })
  const denied = await rejection(loadConfigSources({ env: {}, ssm: { client: ssm, path: PATH } }))
  t.equal(denied.code, 'PIXPROXY_ERR_AWS_SSM_READ')
  t.match(denied.message, /AccessDeniedException: not authorized/)
  t.equal((denied.cause as Error).name, 'AccessDeniedException')
  ep.clearFaults()

  await ep.outage('refuse')
  const down = await rejection(loadConfigSources({ env: {}, ssm: { client: ssm, path: PATH } }))
  t.equal(down.code, 'PIXPROXY_ERR_AWS_SSM_READ')
})

t.test('fetchPin: SecretString hit, miss, binary, empty, trailing newline', async (t) => {
  const { ep, sm } = await setup(t, [])
  const arn = ep.putSecret({ name: 'pix/hsm-pin', string: '87654321\n' })
  t.equal(await fetchPin('pix/hsm-pin', sm), '87654321', 'one trailing newline dropped, as for PIN files')
  t.equal(await fetchPin(arn, sm), '87654321', 'by ARN')
  ep.putSecret({ name: 'spaces', string: ' 12 34 ' })
  t.equal(await fetchPin('spaces', sm), ' 12 34 ', 'otherwise verbatim')

  const miss = await rejection(fetchPin('pix/nope', sm))
  t.equal(miss.code, 'PIXPROXY_ERR_AWS_SECRET_NOT_FOUND')
  t.match(miss.message, 'pix/nope')
  ep.putSecret({ name: 'bin', binary: Buffer.from('1234') })
  const bin = await rejection(fetchPin('bin', sm))
  t.equal(bin.code, 'PIXPROXY_ERR_AWS_SECRET_UNUSABLE')
  t.match(bin.message, /binary/)
  ep.putSecret({ name: 'empty', string: '\n' })
  t.equal((await rejection(fetchPin('empty', sm))).code, 'PIXPROXY_ERR_AWS_SECRET_UNUSABLE')
  ep.failCalls({ target: 'secretsmanager', errorType: 'AccessDeniedException' })
  const denied = await rejection(fetchPin('pix/hsm-pin', sm))
  t.equal(denied.code, 'PIXPROXY_ERR_AWS_SECRET_READ')
  t.notMatch(denied.message, '87654321')
})

t.test('loadConfigSources fetches the PIN named by the merged settings when given a secrets client', async (t) => {
  const { ep, ssm, sm } = await setup(t, [...asParameters(SETTINGS), { name: '/pix/proxy/hsm-pin-secret-id', value: 'pix/hsm-pin' }])
  ep.putSecret({ name: 'pix/hsm-pin', string: '1111' })
  const withPin = await loadConfigSources({ env: {}, ssm: { client: ssm, path: PATH }, secrets: { client: sm } })
  t.equal(withPin.hsmPin, '1111')
  t.notOk(Object.values(withPin.source).includes('1111'), 'the PIN is not a setting')
  t.equal((await loadConfigSources({ env: {}, ssm: { client: ssm, path: PATH } })).hsmPin, null, 'no secrets client, no fetch')
  const missing = await rejection(loadConfigSources({ env: { PIXPROXY_HSM_PIN_SECRET_ID: 'pix/other' }, ssm: { client: ssm, path: PATH }, secrets: { client: sm } }))
  t.equal(missing.code, 'PIXPROXY_ERR_AWS_SECRET_NOT_FOUND', 'a wrong secret id fails start-up, not the first HSM login')
})
