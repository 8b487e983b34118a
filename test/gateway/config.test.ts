/**
 * The gateway's settings: one schema, every problem reported at once with CONFIG_INVALID, the names the Terraform
 * sets accepted, docs/gateway.md's settings table in step with the schema, and the route allowlist's parsing and
 * matching (what a path must look like to be forwarded).
 */
import t from 'tap'
import { readFile } from 'node:fs/promises'
import { Errors } from '../../core/errors.ts'
import { GatewayConfigSchema, loadGatewayConfig } from '../../src/gateway/config.ts'
import { matchRoute, parseRoutes } from '../../src/gateway/routes.ts'

const BASE = {
  PIXGW_SERVER_CERT_FILE: '/run/gw/server.pem',
  PIXGW_SERVER_KEY_FILE: '/run/gw/server.key',
  PIXGW_TRUSTSTORE: '/run/gw/truststore.pem',
  PIXGW_CRLS: '/run/gw/a.crl, /run/gw/b.crl',
  PIXGW_BACKEND_URL: 'https://api.internal.example',
  PIXGW_ROUTES: 'GET /open-banking/*,POST /open-banking/payments/v4/*'
}

t.test('defaults, and the HSM settings shared with the proxy', async (t) => {
  const c = loadGatewayConfig({ ...BASE, PIXPROXY_ISPB: '12345678', HOME: '/root' })
  t.same(c.listen, { host: '127.0.0.1', port: 8443 }, 'loopback by default')
  t.same(c.ops, { host: '127.0.0.1', port: 8081 })
  t.equal(c.crlStalePolicy, 'fail-closed')
  t.same(c.crlFiles, ['/run/gw/a.crl', '/run/gw/b.crl'])
  t.equal(c.clientCertHeader, 'x-ssl-client-cert')
  t.same(c.serverKey, { kind: 'file', file: '/run/gw/server.key' })
  const h = loadGatewayConfig({ ...BASE, PIXGW_SERVER_KEY_FILE: undefined, PIXGW_SERVER_KEY_LABEL: 'gw-tls', PIXPROXY_HSM_MODULE_PATH: '/opt/cloudhsm/lib/libcloudhsm_pkcs11.so', PIXPROXY_HSM_TOKEN_LABEL: 'hsm1', PIXPROXY_HSM_PIN_FILE: '/run/secrets/pin' })
  t.same(h.serverKey, { kind: 'hsm', label: 'gw-tls', modulePath: '/opt/cloudhsm/lib/libcloudhsm_pkcs11.so', tokenLabel: 'hsm1', pinFile: '/run/secrets/pin', pinSecretId: null })
  const hs = loadGatewayConfig({ ...BASE, PIXGW_SERVER_KEY_FILE: undefined, PIXGW_SERVER_KEY_LABEL: 'gw-tls', PIXPROXY_HSM_MODULE_PATH: '/m.so', PIXPROXY_HSM_TOKEN_LABEL: 'hsm1', PIXPROXY_HSM_PIN_SECRET_ID: 'arn:aws:secretsmanager:sa-east-1:111122223333:secret:pin-AbCdEf' })
  t.same(hs.serverKey, { kind: 'hsm', label: 'gw-tls', modulePath: '/m.so', tokenLabel: 'hsm1', pinFile: null, pinSecretId: 'arn:aws:secretsmanager:sa-east-1:111122223333:secret:pin-AbCdEf' }, 'or the PIN in Secrets Manager')
  const named = loadGatewayConfig({ ...BASE, PIXGW_LISTEN_HOST: '0.0.0.0', PIXGW_LISTEN_PORT: '9443', PIXGW_OPS_LISTEN_PORT: '9081', PIXGW_CRL_STALE_POLICY: 'fail-open', PIXGW_BACKEND_CA_FILE: '/run/gw/backend-ca.pem', PIXGW_MAX_BODY_BYTES: '2048', PIXGW_AUDIT_FIREHOSE_STREAM: 'gw-audit' })
  t.match(named, { listen: { host: '0.0.0.0', port: 9443 }, ops: { port: 9081 }, crlStalePolicy: 'fail-open', backend: { caFile: '/run/gw/backend-ca.pem' }, maxBodyBytes: 2048, auditFirehoseStream: 'gw-audit' }, 'every setting the Terraform names is read')
})

t.test('the audit trail\'s settings: defaults, values, refusals', async (t) => {
  t.same(loadGatewayConfig(BASE).audit, { sink: 'parquet', spoolDir: '.local/audit/gateway-spool', spoolShared: false, spoolMaxBytes: 1024 * 1024 * 1024, parquetDir: '.local/audit/lake', flushMs: 1_000 }, 'defaults: local Parquet, a spool apart from the proxy\'s')
  const c = loadGatewayConfig({ ...BASE, PIXGW_AUDIT_SINK: 'firehose', PIXGW_AUDIT_SPOOL_DIR: '/mnt/efs/gw', PIXGW_AUDIT_SPOOL_MAX_BYTES: '2097152', PIXGW_AUDIT_PARQUET_DIR: '/data/lake', PIXGW_AUDIT_FLUSH_MS: '250' })
  t.same(c.audit, { sink: 'firehose', spoolDir: '/mnt/efs/gw', spoolShared: false, spoolMaxBytes: 2_097_152, parquetDir: '/data/lake', flushMs: 250 })
  const err = (() => { try { loadGatewayConfig({ ...BASE, PIXGW_AUDIT_SINK: 'log', PIXGW_AUDIT_SPOOL_MAX_BYTES: '1000' }) } catch (e) { return e as Error & { code?: string } } })()
  t.equal(err?.code, Errors.CONFIG_INVALID.code)
  t.match(err?.message, /PIXGW_AUDIT_SINK/, 'no sink that keeps nothing')
  t.match(err?.message, /PIXGW_AUDIT_SPOOL_MAX_BYTES/, 'a spool too small to be one')
})

t.test('PIXGW_AUDIT_SPOOL_SHARED: off by default, true or false, nothing else', async (t) => {
  t.equal(loadGatewayConfig(BASE).audit.spoolShared, false, 'a spool of its own unless told')
  t.equal(loadGatewayConfig({ ...BASE, PIXGW_AUDIT_SPOOL_SHARED: 'true' }).audit.spoolShared, true)
  t.equal(loadGatewayConfig({ ...BASE, PIXGW_AUDIT_SPOOL_SHARED: 'false' }).audit.spoolShared, false)
  for (const bad of ['yes', '1', 'TRUE', '']) {
    const err = (() => { try { loadGatewayConfig({ ...BASE, PIXGW_AUDIT_SPOOL_SHARED: bad }) } catch (e) { return e as Error & { code?: string } } })()
    t.equal(err?.code, Errors.CONFIG_INVALID.code, `${JSON.stringify(bad)} refused`)
    t.match(err?.message, /PIXGW_AUDIT_SPOOL_SHARED/, `${JSON.stringify(bad)}: the setting is named`)
  }
})

t.test('PIXGW_MAX_CONNECTION_AGE_MS: an hour by default, 0 = no limit, at most a week', async (t) => {
  t.equal(loadGatewayConfig(BASE).maxConnectionAgeMs, 3_600_000)
  t.equal(loadGatewayConfig({ ...BASE, PIXGW_MAX_CONNECTION_AGE_MS: '0' }).maxConnectionAgeMs, 0)
  t.equal(loadGatewayConfig({ ...BASE, PIXGW_MAX_CONNECTION_AGE_MS: '900000' }).maxConnectionAgeMs, 900_000)
  for (const bad of ['-1', '604800001', 'hour']) {
    t.throws(() => loadGatewayConfig({ ...BASE, PIXGW_MAX_CONNECTION_AGE_MS: bad }), { code: Errors.CONFIG_INVALID.code, message: /PIXGW_MAX_CONNECTION_AGE_MS/ }, `${bad} refused`)
  }
})

t.test('an integer setting is decimal digits: "1.5" is refused, naming the setting, never truncated to 1', async (t) => {
  for (const bad of ['1.5', '1e3', '0x10', '1.0', ' 5', '5 ', '+5', '', '1_000']) {
    t.throws(() => loadGatewayConfig({ ...BASE, PIXGW_MAX_CONNECTION_AGE_MS: bad }), {
      code: Errors.CONFIG_INVALID.code,
      message: `PIXGW_MAX_CONNECTION_AGE_MS: must be a whole number written in decimal digits (got ${JSON.stringify(bad)})`
    }, `${JSON.stringify(bad)} refused`)
  }
  // Every integer setting of the schema, each reported once, all at once.
  const ints = Object.entries(GatewayConfigSchema.properties).filter(([, p]) => (p as { type?: string }).type === 'integer').map(([k]) => k)
  t.ok(ints.length >= 10, `the schema's integer settings (${ints.length})`)
  try {
    loadGatewayConfig({ ...BASE, ...Object.fromEntries(ints.map((k) => [k, '1.5'])) })
    t.fail('accepted')
  } catch (e) {
    t.equal((e as { code?: string }).code, Errors.CONFIG_INVALID.code)
    const message = (e as Error).message
    for (const k of ints) t.equal(message.split(`${k}: `).length - 1, 1, `${k} named once`)
  }
  t.equal(loadGatewayConfig({ ...BASE, PIXGW_MAX_CONNECTION_AGE_MS: '0900000' }).maxConnectionAgeMs, 900_000, 'decimal digits are read as such')
  t.throws(() => loadGatewayConfig({ ...BASE, PIXGW_LISTEN_PORT: '-1' }), { code: Errors.CONFIG_INVALID.code, message: /PIXGW_LISTEN_PORT: Expected integer to be greater or equal to 0/ }, 'a negative number is the range check\'s')
})

t.test('every problem at once, with CONFIG_INVALID', async (t) => {
  const err = (src: Record<string, string | undefined>): string => {
    try {
      loadGatewayConfig(src)
    } catch (e) {
      t.equal((e as { code?: string }).code, Errors.CONFIG_INVALID.code)
      return (e as Error).message
    }
    t.fail('accepted')
    return ''
  }
  t.match(err({ ...BASE, PIXGW_LISTEN_PROT: '1' }), 'PIXGW_LISTEN_PROT is not a gateway setting', 'a misspelt setting is not ignored')
  t.match(err({ ...BASE, PIXGW_SERVER_KEY_LABEL: 'k' }), 'set exactly one of PIXGW_SERVER_KEY_LABEL')
  const hsm = err({ ...BASE, PIXGW_SERVER_KEY_FILE: undefined, PIXGW_SERVER_KEY_LABEL: 'k' })
  for (const k of ['PIXPROXY_HSM_MODULE_PATH', 'PIXPROXY_HSM_TOKEN_LABEL']) t.match(hsm, `${k} is required`)
  t.match(hsm, 'set exactly one of PIXPROXY_HSM_PIN_FILE and PIXPROXY_HSM_PIN_SECRET_ID')
  t.match(err({ ...BASE, PIXGW_SERVER_KEY_FILE: undefined, PIXGW_SERVER_KEY_LABEL: 'k', PIXPROXY_HSM_MODULE_PATH: '/m.so', PIXPROXY_HSM_TOKEN_LABEL: 't', PIXPROXY_HSM_PIN_FILE: '/p', PIXPROXY_HSM_PIN_SECRET_ID: 's' }), 'set exactly one of PIXPROXY_HSM_PIN_FILE and PIXPROXY_HSM_PIN_SECRET_ID', 'not both')
  t.match(err({ ...BASE, PIXGW_CRLS: '' }), 'at least one CRL is required', 'no CRL = no revocation check: refused')
  t.match(err({ ...BASE, PIXGW_CRL_STALE_POLICY: 'ignore' }), 'PIXGW_CRL_STALE_POLICY')
  t.match(err({ ...BASE, PIXGW_ROUTES: 'GET open-banking' }), 'PIXGW_ROUTES')
  t.match(err({ ...BASE, PIXGW_TRUSTSTORE: 's3://Bucket/truststore.pem' }), 'PIXGW_TRUSTSTORE: s3://Bucket/truststore.pem is not s3://bucket/key')
  t.match(err({ ...BASE, PIXGW_OPS_LISTEN_PORT: '8443' }), 'needs its own')
  t.match(err({ ...BASE, PIXGW_BACKEND_URL: 'https://api.example/path' }), 'PIXGW_BACKEND_URL')
  t.match(err({ ...BASE, PIXGW_CLIENT_CERT_HEADER: 'X Cert' }), 'PIXGW_CLIENT_CERT_HEADER')
  const many = err({ ...BASE, PIXGW_CRLS: '', PIXGW_ROUTES: 'FETCH /x' })
  t.ok(many.includes('at least one CRL') && many.includes('PIXGW_ROUTES'), 'two problems in one message')
})

t.test('route allowlist', async (t) => {
  const routes = parseRoutes('GET /open-banking/*, POST /open-banking/payments/v4/*, GET /health')
  const m = (method: string, path: string): string => {
    const r = matchRoute(routes, method, path)
    return r.kind === 'allowed' ? r.route.text : r.kind
  }
  t.equal(m('GET', '/open-banking/accounts/v2/accounts?x=1'), 'GET /open-banking/*')
  t.equal(m('POST', '/open-banking/payments/v4/pix/payments'), 'POST /open-banking/payments/v4/*')
  t.equal(m('POST', '/open-banking/accounts/v2/accounts'), 'method', 'a path allowed for another method')
  t.equal(m('GET', '/health'), 'GET /health', 'an exact path')
  t.equal(m('GET', '/health/x'), 'none', 'an exact path is not a prefix')
  t.equal(m('GET', '/open-bankingx'), 'none')
  for (const p of ['/open-banking/../admin', '/open-banking/./x', '/open-banking/%2e%2e/admin', '/open-banking/a%2Fb', '/open-banking/a\\b', 'open-banking/x', '*']) {
    t.equal(m('GET', p), 'none', `${p} never matches`)
  }
  t.throws(() => parseRoutes(''), /no route/)
  t.throws(() => parseRoutes('GET /a/../b'), /dot segments/)
  t.throws(() => parseRoutes('BREW /coffee'), /unknown method/)
})

// ---- docs/gateway.md's settings table ------------------------------------------------------------------------------

/**
 * What is wrong with the settings table of `markdown` (the `| Setting | Default | What |` table) against `schema`: a
 * schema setting it lacks, a setting it names that the schema lacks, a default it shows that is not the schema's, a
 * schema default it does not show (an empty default is a required setting: shown blank). A row may name several
 * settings; its defaults, when shown, are one per setting in the same order.
 */
function settingsTableProblems (markdown: string, schema: Record<string, { default?: unknown }>): string[] {
  const lines = markdown.split('\n')
  const head = lines.findIndex((l) => /^\| Setting \| Default \| What \|$/.test(l))
  if (head < 0) return ['no | Setting | Default | What | table']
  const rows: string[] = []
  for (const l of lines.slice(head + 2)) {
    if (!l.startsWith('|')) break
    rows.push(l)
  }
  const problems: string[] = []
  const listed = new Set<string>()
  for (const row of rows) {
    const [settingCell = '', defaultCell = ''] = row.split('|').slice(1).map((c) => c.trim())
    const names = [...settingCell.matchAll(/`([A-Z0-9_]+)`/g)].map((m) => m[1] as string)
    const defaults = [...defaultCell.matchAll(/`([^`]*)`/g)].map((m) => m[1] as string)
    if (names.length === 0) problems.push(`a row names no setting: ${row}`)
    if (defaults.length > 0 && defaults.length !== names.length) problems.push(`${names.join(', ')}: ${defaults.length} defaults for ${names.length} settings`)
    names.forEach((name, i) => {
      listed.add(name)
      const spec = schema[name]
      if (spec === undefined) {
        problems.push(`${name} is in the table, not in the schema`)
        return
      }
      const expected = spec.default === undefined || spec.default === '' ? undefined : String(spec.default as string | number)
      const shown = defaults[i]
      if (shown !== expected) problems.push(`${name}: the table shows ${shown === undefined ? 'no default' : `\`${shown}\``}, the schema's default is ${expected === undefined ? 'none' : `\`${expected}\``}`)
    })
  }
  for (const name of Object.keys(schema)) if (!listed.has(name)) problems.push(`${name} is in the schema, not in the table`)
  return problems
}

t.test('docs/gateway.md: the settings table names every setting of the schema, no other, with its default', async (t) => {
  const doc = await readFile(new URL('../../docs/gateway.md', import.meta.url), 'utf8')
  const schema = GatewayConfigSchema.properties as Record<string, { default?: unknown }>
  t.ok(Object.keys(schema).filter((k) => k.startsWith('PIXGW_')).length > 20, 'the schema is the gateway\'s')
  t.same(settingsTableProblems(doc, schema), [])
  // The check itself: each kind of drift is caught.
  const row = (name: string): string => doc.split('\n').find((l) => l.startsWith(`| \`${name}\` |`)) as string
  t.same(settingsTableProblems(doc.replace(row('PIXGW_MAX_BODY_BYTES') + '\n', ''), schema), ['PIXGW_MAX_BODY_BYTES is in the schema, not in the table'])
  t.same(settingsTableProblems(doc.replace(row('PIXGW_LOG_LEVEL'), `${row('PIXGW_LOG_LEVEL')}\n| \`PIXGW_GONE\` | | removed |`), schema), ['PIXGW_GONE is in the table, not in the schema'])
  t.same(settingsTableProblems(doc.replace('| `PIXGW_SHUTDOWN_TIMEOUT_MS` | `25000` |', '| `PIXGW_SHUTDOWN_TIMEOUT_MS` | `30000` |'), schema),
    ['PIXGW_SHUTDOWN_TIMEOUT_MS: the table shows `30000`, the schema\'s default is `25000`'])
  t.same(settingsTableProblems(doc.replace('| `PIXGW_SHUTDOWN_TIMEOUT_MS` | `25000` |', '| `PIXGW_SHUTDOWN_TIMEOUT_MS` | |'), schema),
    ['PIXGW_SHUTDOWN_TIMEOUT_MS: the table shows no default, the schema\'s default is `25000`'])
  t.same(settingsTableProblems(doc.replace('| `127.0.0.1`, `8443` |', '| `8443`, `127.0.0.1` |'), schema),
    ['PIXGW_LISTEN_HOST: the table shows `8443`, the schema\'s default is `127.0.0.1`', 'PIXGW_LISTEN_PORT: the table shows `127.0.0.1`, the schema\'s default is `8443`'])
})
