import t from 'tap'
import { writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { CONFIG_KEYS, ConfigSchema, describePemSetting, envNameFromParameter, isInlinePem, loadConfig, PEM_SETTINGS, readPemSetting, readPemSettingSync, ssmParameterName } from '../src/config.ts'
import { PixProxyError } from '../core/errors.ts'

const base = {
  PIXPROXY_ISPB: '99999004',
  PIXPROXY_SIGNING_KEY_FILE: '/k.pem',
  PIXPROXY_SIGNING_CERT_FILE: '/c.pem',
  PIXPROXY_TLS_KEY_FILE: '/k.pem',
  PIXPROXY_TLS_CERT_FILE: '/c.pem',
  PIXPROXY_TLS_CA_FILE: '/ca.pem',
  PIXPROXY_BACEN_SIGNING_CERTS_FILE: '/bcb.pem'
}

function problems (env: Record<string, string>): string {
  try {
    loadConfig(env)
  } catch (err) {
    if (err instanceof PixProxyError && err.code === 'PIXPROXY_ERR_CONFIG_INVALID') return err.message
    throw err
  }
  return ''
}

t.test('defaults and conversions', async (t) => {
  const c = loadConfig({ ...base, PIXPROXY_LISTEN_PORT: '9000', PIXPROXY_SPI_MAX_IN_FLIGHT: '3', UNRELATED: 'x' })
  t.equal(c.listen.port, 9000)
  t.equal(c.listen.host, '127.0.0.1')
  t.equal(c.spi.maxInFlight, 3)
  t.equal(c.spi.queueTimeoutMs, 5000)
  t.equal(c.dict.url, 'https://dict-h.pi.rsfn.net.br:16522')
  t.equal(c.invalidSignaturePolicy, 'reject')
  t.equal(c.hsm, null, 'no HSM when both keys are PEM files')
  t.equal(c.inbound.tls, null)
})

t.test('every problem is reported at once, with the offending value', async (t) => {
  const msg = problems({ PIXPROXY_ISPB: 'abc', PIXPROXY_LISTEN_PORT: 'eighty', PIXPROXY_TYPO: '1' })
  t.match(msg, /PIXPROXY_TYPO is not a pix-proxy setting/)
  t.match(msg, /PIXPROXY_LISTEN_PORT: must be a whole number written in decimal digits \(got "eighty"\)/)
  t.match(msg, /PIXPROXY_ISPB: .*\(got "abc"\)/)
  t.match(msg, /PIXPROXY_SIGNING_CERT_FILE: Expected required property/)
})

t.test('range and enum checks', async (t) => {
  t.match(problems({ ...base, PIXPROXY_LISTEN_PORT: '70000' }), /PIXPROXY_LISTEN_PORT/)
  t.match(problems({ ...base, PIXPROXY_INVALID_SIGNATURE_POLICY: 'ignore' }), /PIXPROXY_INVALID_SIGNATURE_POLICY/)
  t.match(problems({ ...base, PIXPROXY_DICT_URL: 'http://dict' }), /PIXPROXY_DICT_URL/)
  t.match(problems({ ...base, PIXPROXY_DICT_URL: 'https://dict/api' }), /PIXPROXY_DICT_URL/, 'an origin, not a path')
})

t.test('span export: off unless PIXPROXY_OTLP_ENDPOINT is set; traces go to its /v1/traces', async (t) => {
  t.equal(loadConfig(base).otlp, null, 'off by default')
  t.equal(loadConfig({ ...base, PIXPROXY_OTLP_ENDPOINT: '' }).otlp, null, 'set to nothing is off')
  t.equal(loadConfig({ ...base, OTEL_EXPORTER_OTLP_ENDPOINT: 'http://127.0.0.1:4318' }).otlp, null, 'the standard variable does not turn it on')
  t.same(loadConfig({ ...base, PIXPROXY_OTLP_ENDPOINT: 'http://127.0.0.1:4318' }).otlp, { tracesUrl: 'http://127.0.0.1:4318/v1/traces' })
  t.same(loadConfig({ ...base, PIXPROXY_OTLP_ENDPOINT: 'https://collector.internal/otlp/' }).otlp, { tracesUrl: 'https://collector.internal/otlp/v1/traces' }, 'a base path kept, one slash')
  t.match(problems({ ...base, PIXPROXY_OTLP_ENDPOINT: 'grpc://127.0.0.1:4317' }), /PIXPROXY_OTLP_ENDPOINT/, 'OTLP/HTTP only')
  t.match(problems({ ...base, PIXPROXY_OTLP_ENDPOINT: 'http://127.0.0.1:4318?x=1' }), /PIXPROXY_OTLP_ENDPOINT/)
  t.match(problems({ ...base, PIXPROXY_OTLP_ENDPOINT: 'http://' }), /PIXPROXY_OTLP_ENDPOINT/)
  const creds = problems({ ...base, PIXPROXY_OTLP_ENDPOINT: 'https://user:s3cret@collector.internal' })
  t.match(creds, /PIXPROXY_OTLP_ENDPOINT: credentials in the URL/)
  t.notMatch(creds, /s3cret/, 'and the password is not echoed')
})

t.test('cross-field rules', async (t) => {
  t.match(problems({ ...base, PIXPROXY_SIGNING_KEY_LABEL: 'pix-sign' }), /exactly one of PIXPROXY_SIGNING_KEY_LABEL/)
  const { PIXPROXY_SIGNING_KEY_FILE: _a, ...noSignKey } = base
  const hsmMsg = problems({ ...noSignKey, PIXPROXY_SIGNING_KEY_LABEL: 'pix-sign' })
  t.match(hsmMsg, /PIXPROXY_HSM_MODULE_PATH is required/)
  t.match(hsmMsg, /PIXPROXY_HSM_TOKEN_LABEL is required/)
  t.match(hsmMsg, /exactly one of PIXPROXY_HSM_PIN_FILE and PIXPROXY_HSM_PIN_SECRET_ID/)
  const ok = loadConfig({ ...noSignKey, PIXPROXY_SIGNING_KEY_LABEL: 'pix-sign', PIXPROXY_HSM_MODULE_PATH: '/m.so', PIXPROXY_HSM_TOKEN_LABEL: 't', PIXPROXY_HSM_PIN_FILE: '/pin' })
  t.same(ok.hsm, { modulePath: '/m.so', tokenLabel: 't', pinFile: '/pin', pinSecretId: null, poolSize: 4, acquireTimeoutMs: 2000 })
  t.match(problems({ ...base, PIXPROXY_INBOUND_TLS_CERT_FILE: '/x' }), /go together/)
  t.match(problems({ ...base, PIXPROXY_INBOUND_CLIENT_ALLOWLIST: 'nope' }), /not a SHA-256 fingerprint/)
  const fp = Array.from({ length: 32 }, () => 'ab').join(':')
  t.match(problems({ ...base, PIXPROXY_INBOUND_CLIENT_ALLOWLIST: fp }), /needs PIXPROXY_INBOUND_CLIENT_CA_FILE/)
  const inbound = loadConfig({ ...base, PIXPROXY_INBOUND_TLS_CERT_FILE: '/c', PIXPROXY_INBOUND_TLS_KEY_FILE: '/k', PIXPROXY_INBOUND_CLIENT_CA_FILE: '/ca', PIXPROXY_INBOUND_CLIENT_ALLOWLIST: ` ${fp} ` })
  t.same(inbound.inbound.clientAllowlist, [fp.toUpperCase()])
  t.match(problems({ ...base, PIXPROXY_LISTEN_PORT: '9000', PIXPROXY_OPS_LISTEN_PORT: '9000' }), /PIXPROXY_OPS_LISTEN_PORT: 9000 is the callers' port/)
})

t.test('the signing key in AWS KMS: exclusive with the HSM label and the PEM file; a key id, key ARN, alias or alias ARN', async (t) => {
  const { PIXPROXY_SIGNING_KEY_FILE: _a, ...noSignKey } = base
  t.equal(loadConfig(base).signing.kmsKeyId, null)
  const ids = [
    '1234abcd-12ab-34cd-56ef-1234567890ab',
    'mrk-1234abcd12ab34cd56ef1234567890ab',
    'arn:aws:kms:sa-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab',
    'alias/pix-proxy/signing',
    'arn:aws:kms:sa-east-1:111122223333:alias/pix-proxy-signing'
  ]
  for (const id of ids) {
    const c = loadConfig({ ...noSignKey, PIXPROXY_SIGNING_KMS_KEY_ID: id })
    t.same(c.signing, { keyLabel: null, kmsKeyId: id, keyFile: null, certFile: '/c.pem' }, id)
    t.equal(c.hsm, null, `${id}: no HSM needed for the signing key`)
  }
  for (const bad of ['pix-sign', 'key/1234abcd-12ab-34cd-56ef-1234567890ab', 'arn:aws:kms:sa-east-1:1111:alias/x', 'alias/']) {
    t.match(problems({ ...noSignKey, PIXPROXY_SIGNING_KMS_KEY_ID: bad }), /PIXPROXY_SIGNING_KMS_KEY_ID: .* is not a KMS key id, key ARN, alias name/, bad)
  }
  const both = problems({ ...base, PIXPROXY_SIGNING_KMS_KEY_ID: 'alias/pix' })
  t.match(both, /set exactly one of PIXPROXY_SIGNING_KEY_LABEL \(HSM\), PIXPROXY_SIGNING_KMS_KEY_ID \(AWS KMS\) and PIXPROXY_SIGNING_KEY_FILE \(PEM file\)/)
  t.match(problems({ ...noSignKey, PIXPROXY_SIGNING_KMS_KEY_ID: 'alias/pix', PIXPROXY_SIGNING_KEY_LABEL: 'pix-sign' }), /set exactly one of PIXPROXY_SIGNING_KEY_LABEL/)
  t.match(problems(noSignKey), /set exactly one of PIXPROXY_SIGNING_KEY_LABEL/, 'none is also a problem')
  const withTlsInHsm = loadConfig({ ...noSignKey, PIXPROXY_SIGNING_KMS_KEY_ID: 'alias/pix', PIXPROXY_TLS_KEY_FILE: '', PIXPROXY_TLS_KEY_LABEL: 'pix-tls', PIXPROXY_HSM_MODULE_PATH: '/m.so', PIXPROXY_HSM_TOKEN_LABEL: 't', PIXPROXY_HSM_PIN_FILE: '/pin' })
  t.ok(withTlsInHsm.hsm !== null, 'the mTLS key stays in the HSM while XMLDSig signs in KMS')
})

t.test('the operations listener: none unless a port is set; loopback unless told otherwise', async (t) => {
  t.equal(loadConfig(base).ops, null)
  t.equal(loadConfig({ ...base, PIXPROXY_OPS_LISTEN_PORT: '' }).ops, null, 'set to nothing: none (turns off an image default)')
  t.same(loadConfig({ ...base, PIXPROXY_OPS_LISTEN_PORT: '9464' }).ops, { host: '127.0.0.1', port: 9464 })
  t.same(loadConfig({ ...base, PIXPROXY_OPS_LISTEN_PORT: '0', PIXPROXY_LISTEN_PORT: '0' }).ops, { host: '127.0.0.1', port: 0 }, 'both ephemeral is fine')
  t.same(loadConfig({ ...base, PIXPROXY_OPS_LISTEN_PORT: '9464', PIXPROXY_OPS_LISTEN_HOST: '0.0.0.0' }).ops, { host: '0.0.0.0', port: 9464 })
  t.match(problems({ ...base, PIXPROXY_OPS_LISTEN_PORT: 'metrics' }), /PIXPROXY_OPS_LISTEN_PORT: must be a whole number written in decimal digits/)
  t.match(problems({ ...base, PIXPROXY_OPS_LISTEN_PORT: '65536' }), /PIXPROXY_OPS_LISTEN_PORT/)
})

t.test('SSM parameter names map one to one onto the settings', async (t) => {
  t.equal(ssmParameterName('PIXPROXY_DICT_URL'), '/pix/proxy/dict-url')
  t.equal(envNameFromParameter('/pix/proxy/hsm-pin-file'), 'PIXPROXY_HSM_PIN_FILE')
  t.equal(envNameFromParameter('/pix/proxy/not-a-setting'), undefined)
  t.equal(envNameFromParameter('/other/dict-url'), undefined)
  for (const k of CONFIG_KEYS) {
    t.equal(envNameFromParameter(ssmParameterName(k)), k, k)
    t.ok((ConfigSchema.properties[k] as { description?: string }).description, `${k} is described`)
  }
})

t.test('PEM settings take a path or the PEM text itself; the text is never echoed', async (t) => {
  const pem = '-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n'
  const file = join(t.testdir(), 'c.pem')
  await writeFile(file, pem)
  t.equal(await readPemSetting(file), pem, 'a path is read')
  t.equal(await readPemSetting(pem), pem, 'PEM text is used as is')
  t.equal(await readPemSetting('\n  ' + pem), '\n  ' + pem, 'leading white space (an SSM value pasted with a newline) still counts as PEM')
  t.equal(readPemSettingSync(file), pem)
  t.equal(readPemSettingSync(pem), pem)
  t.notOk(isInlinePem('/etc/pix/-----BEGIN '), 'a path containing the marker is still a path')
  t.equal(describePemSetting('-----BEGIN PRIVATE KEY-----\nsecret'), '(inline PEM)', 'a key given inline never reaches a message')
  t.equal(describePemSetting(file), file)
  await t.rejects(readPemSetting(join(t.testdir(), 'missing.pem')), { code: 'ENOENT' }, 'a missing file is an error, not an empty PEM')
  for (const k of PEM_SETTINGS) {
    t.ok(k.endsWith('_FILE') && CONFIG_KEYS.includes(k), `${k} is a setting`)
    t.match((ConfigSchema.properties[k] as { description: string }).description, /PEM text itself/, `${k} documents it`)
  }
})

t.test('docs/configuration.md is the rendering of the schema (run npm run docs:config after a change)', async (t) => {
  const { readFile } = await import('node:fs/promises')
  const { renderConfigDoc } = await import('../tools/docs/config-doc.ts')
  t.equal(await readFile(new URL('../docs/configuration.md', import.meta.url), 'utf8'), renderConfigDoc())
})

t.test('off loopback, callers must be authenticated by inbound mutual TLS with a client CA and an allowlist', async (t) => {
  const { isLoopbackHost } = await import('../src/config.ts')
  for (const h of ['127.0.0.1', '127.1.2.3', '::1', '[::1]', 'localhost', '::ffff:127.0.0.1']) t.ok(isLoopbackHost(h), `${h} is loopback`)
  for (const h of ['0.0.0.0', '::', '10.0.0.5', '192.168.1.1', '::ffff:10.0.0.1', '128.0.0.1', 'proxy', '']) t.notOk(isLoopbackHost(h), `${h} is not`)
  const fp = 'AB:'.repeat(31) + 'AB'
  const mtls = { PIXPROXY_INBOUND_TLS_CERT_FILE: '/c.pem', PIXPROXY_INBOUND_TLS_KEY_FILE: '/k.pem', PIXPROXY_INBOUND_CLIENT_CA_FILE: '/ca.pem', PIXPROXY_INBOUND_CLIENT_ALLOWLIST: fp }
  t.throws(() => loadConfig({ ...base, PIXPROXY_LISTEN_HOST: '0.0.0.0' }), {
    code: 'PIXPROXY_ERR_CONFIG_INVALID',
    message: /PIXPROXY_LISTEN_HOST 0\.0\.0\.0 is not loopback.*PIXPROXY_INBOUND_TLS_CERT_FILE and PIXPROXY_INBOUND_TLS_KEY_FILE, PIXPROXY_INBOUND_CLIENT_CA_FILE, PIXPROXY_INBOUND_CLIENT_ALLOWLIST/
  }, 'an open signing service refuses to start, naming what is missing')
  const { PIXPROXY_INBOUND_CLIENT_ALLOWLIST: _a, ...noAllowlist } = mtls
  t.throws(() => loadConfig({ ...base, ...noAllowlist, PIXPROXY_LISTEN_HOST: '10.0.0.5' }), { message: /set PIXPROXY_INBOUND_CLIENT_ALLOWLIST \(/ }, 'TLS and a CA without an allowlist are not enough')
  const ok = loadConfig({ ...base, ...mtls, PIXPROXY_LISTEN_HOST: '0.0.0.0' })
  t.equal(ok.unauthenticatedCallers, false, 'with all three it starts')
  const optedOut = loadConfig({ ...base, PIXPROXY_LISTEN_HOST: '0.0.0.0', PIXPROXY_ALLOW_UNAUTHENTICATED_CALLERS: 'true' })
  t.equal(optedOut.unauthenticatedCallers, true, 'the deliberate opt-out starts, and says so (the app logs a warning at every start)')
  t.equal(loadConfig({ ...base, PIXPROXY_LISTEN_HOST: '127.0.0.1' }).unauthenticatedCallers, false, 'loopback needs nothing')
})

t.test('EMF request metrics: off by default; on with a namespace and a service dimension', async (t) => {
  t.equal(loadConfig(base).emf, null)
  t.same(loadConfig({ ...base, PIXPROXY_METRICS_EMF: 'true' }).emf, { namespace: 'PixProxy', service: 'pix-proxy' })
  t.same(loadConfig({ ...base, PIXPROXY_METRICS_EMF: 'true', PIXPROXY_METRICS_EMF_NAMESPACE: 'PixProxy/prod', PIXPROXY_METRICS_EMF_SERVICE: 'pix-proxy-prod' }).emf, { namespace: 'PixProxy/prod', service: 'pix-proxy-prod' })
  t.match(problems({ ...base, PIXPROXY_METRICS_EMF: 'yes' }), /PIXPROXY_METRICS_EMF/)
  t.match(problems({ ...base, PIXPROXY_METRICS_EMF_NAMESPACE: '' }), /PIXPROXY_METRICS_EMF_NAMESPACE/)
})

t.test('an integer setting must be written in decimal digits: nothing is truncated or reinterpreted', async (t) => {
  // TypeBox's Convert alone turns "1.5" into 1, "1e3" into 1 and "0x10" into 16: a port, a deadline or a pool size
  // that is not what the operator wrote. Each is refused, named once, with the value given.
  for (const v of ['1.5', '1e3', '0x10', '1.0', ' 5', '5 ', '+5', '1_000', 'Infinity']) {
    const msg = problems({ ...base, PIXPROXY_SPI_MAX_IN_FLIGHT: v })
    t.match(msg, `PIXPROXY_SPI_MAX_IN_FLIGHT: must be a whole number written in decimal digits (got ${JSON.stringify(v)})`, v)
    t.equal(msg.split('PIXPROXY_SPI_MAX_IN_FLIGHT').length - 1, 1, `${v}: reported once`)
  }
  t.equal(loadConfig({ ...base, PIXPROXY_SPI_MAX_IN_FLIGHT: '06' }).spi.maxInFlight, 6, 'leading zeros are still decimal')
  t.match(problems({ ...base, PIXPROXY_SPI_MAX_IN_FLIGHT: '-1' }), /PIXPROXY_SPI_MAX_IN_FLIGHT: Expected integer to be greater or equal to/, 'a negative one meets the range check')
  t.equal(loadConfig({ ...base, PIXPROXY_OPS_LISTEN_PORT: '' }).ops?.port ?? null, null, 'an optional number set to empty is still unset')
})
