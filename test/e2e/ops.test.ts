/**
 * The operational endpoints of a proxy configured as in production (HSM signer, engine mTLS): liveness,
 * readiness with its HSM and BACEN checks, and Prometheus metrics that move with real traffic.
 */
import t from 'tap'
import type { Test } from 'tap'
import { readFile, writeFile } from 'node:fs/promises'
import { issueCertificate } from '../../core/pki/ca.ts'
import { parseCertificate } from '../../core/pki/x509.ts'
import type { Certificate } from '../../core/pki/x509.ts'
import { createEntryRequest, pacs008 } from '../../tools/samples/messages.ts'
import { metricSamples, PROXY_ISPB, startE2e } from '../helpers/e2e.ts'
import type { E2e } from '../helpers/e2e.ts'

let e2e: E2e
t.before(async () => { e2e = await startE2e(t) })

interface Readiness {
  status: string
  checks: Record<string, { ok: boolean, detail: string }>
  upstreams?: Record<string, { reachable: boolean, detail: string }>
}

const sum = (values: readonly number[]): number => values.reduce((a, b) => a + b, 0)

t.test('/healthz answers 200 without touching dependencies', async (t) => {
  const mark = e2e.seen.length
  const res = await e2e.proxy('GET', '/healthz')
  t.equal(res.status, 200)
  t.same(JSON.parse(res.text), { status: 'ok' })
  t.same(e2e.seenSince(mark), [], 'BACEN is not contacted')
})

t.test('/readyz answers 200 with the HSM, TLS identity and audit checks passing, BACEN reported beside them', async (t) => {
  const res = await e2e.proxy('GET', '/readyz')
  t.equal(res.status, 200, res.text)
  const body = JSON.parse(res.text) as Readiness
  t.equal(body.status, 'ready')
  t.same(Object.keys(body.checks).sort(), ['audit', 'hsm', 'tls'])
  t.equal(body.checks.audit?.ok, true)
  t.match(body.checks.audit?.detail, /rows pending/)
  t.equal(body.checks.hsm?.ok, true)
  t.match(body.checks.hsm?.detail, /idle of \d+ sessions; keys .+ present/)
  t.equal(body.checks.tls?.ok, true)
  t.match(body.checks.tls?.detail, /^TLSv1\.[23] handshake signed by pkcs11:/, 'a loopback handshake signed with the HSM-held client key')
  t.same(Object.keys(body.upstreams ?? {}).sort(), ['dict', 'spi'])
  t.equal(body.upstreams?.dict?.reachable, true)
  t.match(body.upstreams?.dict?.detail, /^TLSv1\.[23]$/, 'a mutual-TLS handshake with BACEN')
  t.equal(body.upstreams?.spi?.reachable, true)
  const m = (await e2e.proxy('GET', '/metrics')).text
  t.same(metricSamples(m, 'pixproxy_upstream_reachable', { upstream: 'dict' }), [1])
  t.same(metricSamples(m, 'pixproxy_upstream_reachable', { upstream: 'spi' }), [1])
})

t.test('/metrics exposes request, signature, HSM and ICOM metrics after traffic', async (t) => {
  const before = (await e2e.proxy('GET', '/metrics')).text
  const created = await e2e.proxyXml('/api/v2/entries/', createEntryRequest().xml)
  t.equal(created.status, 201)
  const posted = await e2e.proxyXml(`/api/v1/in/${PROXY_ISPB}/msgs`, pacs008().xml)
  t.equal(posted.status, 201)
  const read = await e2e.readStream({ multipart: true, until: (ms) => ms.length > 0 })
  t.ok(read.messages.length > 0)

  const res = await e2e.proxy('GET', '/metrics')
  t.equal(res.status, 200)
  t.match(res.headers['content-type'], /^text\/plain/)
  const m = res.text
  const delta = (name: string, labels: Record<string, string>): number => sum(metricSamples(m, name, labels)) - sum(metricSamples(before, name, labels))

  t.equal(delta('pixproxy_requests_total', { route: '/api/v2/entries/', method: 'POST', status: '201' }), 1, 'the DICT write counted by route template')
  t.equal(delta('pixproxy_requests_total', { route: '/api/v1/in/:ispb/msgs', method: 'POST', status: '201' }), 1, 'the ICOM POST counted by route template')
  t.ok(delta('pixproxy_response_signatures_total', { upstream: 'dict', code: 'VALID' }) >= 1, 'DICT answer verified VALID')
  t.ok(delta('pixproxy_response_signatures_total', { upstream: 'spi', code: 'VALID' }) >= 1, 'stream message verified VALID')
  t.equal(delta('pixproxy_sign_duration_seconds_count', { profile: 'dict' }), 1, 'one DICT signature')
  t.equal(delta('pixproxy_sign_duration_seconds_count', { profile: 'spi' }), 1, 'one SPI signature')
  t.ok(delta('pixproxy_upstream_requests_total', { upstream: 'spi', status: '201' }) === 1)

  const idle = metricSamples(m, 'pixproxy_hsm_sessions', { state: 'idle' })
  t.same(idle, [e2e.stack.config.hsm?.poolSize], 'every HSM session idle again')
  t.same(metricSamples(m, 'pixproxy_hsm_sessions', { state: 'busy' }), [0])
  t.same(metricSamples(m, 'pixproxy_hsm_sessions', { state: 'waiting' }), [], 'operations waiting are not sessions')
  t.same(metricSamples(m, 'pixproxy_hsm_queued'), [0], 'no operation waits for a session')
  t.same(metricSamples(m, 'pixproxy_spi_in_flight'), [0], 'pixproxy_spi_in_flight exposed, back to 0')
  t.same(metricSamples(m, 'pixproxy_spi_queued'), [0])
  t.ok(metricSamples(m, 'process_cpu_user_seconds_total').length === 1, 'process metrics on the app registry, under their standard names')
})

/**
 * Naming conventions (issue 14, https://prometheus.io/docs/practices/naming/): the suffix says the unit, and the unit
 * the type a family may have. Counters are *_total; dimensionless gauges (how many now) and 0/1 states are named for
 * what they count.
 */
const SUFFIXES: ReadonlyArray<readonly [RegExp, readonly string[]]> = [
  [/_total$/, ['counter']],
  [/_seconds$/, ['gauge', 'histogram']],
  [/_bytes$/, ['gauge']],
  [/_rows$/, ['gauge']],
  [/_(in_flight|queued|sessions|consecutive_failures)$/, ['gauge']],
  [/_parts$/, ['histogram']],
  [/_(up|reachable)$/, ['gauge']],
  // A state set (pixproxy_kms_circuit_state{state=…}, with the signing key in KMS): 1 for the current state.
  [/_state$/, ['gauge']]
]

/** `# TYPE` of every family on the page. */
function families (text: string): Map<string, string> {
  return new Map([...text.matchAll(/^# TYPE (\S+) (\S+)$/gm)].map((g) => [g[1] as string, g[2] as string]))
}

t.test('/metrics follows the Prometheus naming conventions: standard Node names, counters *_total, one unit per metric', async (t) => {
  const first = (await e2e.proxy('GET', '/metrics')).text
  t.equal((await e2e.proxyXml(`/api/v1/in/${PROXY_ISPB}/msgs`, pacs008().xml)).status, 201)
  const m = (await e2e.proxy('GET', '/metrics')).text
  const types = families(m)

  // Node's default metrics, unprefixed, so stock dashboards find them.
  for (const [name, type] of [['process_cpu_seconds_total', 'counter'], ['process_cpu_user_seconds_total', 'counter'], ['process_resident_memory_bytes', 'gauge'], ['nodejs_eventloop_lag_seconds', 'gauge'], ['nodejs_heap_size_used_bytes', 'gauge'], ['nodejs_gc_duration_seconds', 'histogram']] as const) {
    t.equal(types.get(name), type, `${name} is a ${type}`)
  }
  t.ok(metricSamples(m, 'process_cpu_seconds_total').length === 1 && metricSamples(m, 'nodejs_eventloop_lag_seconds').length === 1, 'with values')
  t.same([...types.keys()].filter((n) => /^pixproxy_(process|nodejs)_/.test(n)), [], 'no prefixed copies')
  t.same([...types.keys()].filter((n) => !/^(pixproxy|process|nodejs)_/.test(n)), [], 'every family is the proxy\'s or Node\'s')

  const ours = [...types].filter(([n]) => n.startsWith('pixproxy_'))
  t.ok(ours.length >= 25, `${ours.length} pixproxy_* families (HSM and audit ones included)`)
  for (const [name, type] of ours) {
    const rule = SUFFIXES.find(([re]) => re.test(name))
    t.ok(rule !== undefined && rule[1].includes(type), `${name}: a ${type} with a known unit suffix`)
    t.equal(name.endsWith('_total'), type === 'counter', `${name}: ${type === 'counter' ? 'a counter ends in _total' : 'only counters end in _total'}`)
  }
  // No label splits one name into several units (as measure="bytes" and measure="pending_rows" did).
  const unitInLabel = m.split('\n').filter((l) => l.startsWith('pixproxy_') && [...l.matchAll(/\w+="((?:[^"\\]|\\.)*)"/g)].some((g) => /(^|_)(bytes|rows|seconds|calls)$/.test(g[1] as string)))
  t.same(unitInLabel, [], 'no unit in a label value')

  // Totals the audit worker keeps reach their counters by the difference at each scrape: they only go up.
  const spooled = (text: string): number => metricSamples(text, 'pixproxy_audit_rows_total', { state: 'spooled' })[0] ?? 0
  t.ok(spooled(m) >= spooled(first) + 1, `pixproxy_audit_rows_total{state="spooled"} counted the POST (${spooled(first)} → ${spooled(m)})`)
  const again = (await e2e.proxy('GET', '/metrics')).text
  t.ok(spooled(again) >= spooled(m), 'and never goes down')
  t.same(metricSamples(again, 'pixproxy_audit_sink_failed_calls_total'), [0], 'a counter with no labels is exposed from the first scrape')
})

/** The gauge's value for `c` lies between what it was just before and just after the scrape: no clock race. */
function expiryBetween (t: Test, m: string, role: string, c: Certificate, before: number, after: number): void {
  const got = metricSamples(m, 'pixproxy_certificate_expiry_seconds', { role, subject: c.subjectString, serial: c.serialDecimal })
  t.equal(got.length, 1, `${role} ${c.subjectString}: one sample`)
  const v = got[0] as number
  const ms = c.notAfter.getTime()
  t.ok(v <= (ms - before) / 1000 && v >= (ms - after) / 1000, `${role} ${c.subjectString}: ${v} s within [${(ms - after) / 1000}, ${(ms - before) / 1000}]`)
}

t.test('pixproxy_certificate_expiry_seconds: every certificate the proxy holds, read from the files it was given', async (t) => {
  const pki = e2e.stack.simulatorPki
  const signing = parseCertificate(await readFile(e2e.stack.hsm.signing.certFile))
  const tls = parseCertificate(await readFile(e2e.stack.hsm.tls.certFile))
  const before = Date.now()
  const m = (await e2e.proxy('GET', '/metrics')).text
  const after = Date.now()
  expiryBetween(t, m, 'signing', signing, before, after)
  expiryBetween(t, m, 'tls-client', tls, before, after)
  expiryBetween(t, m, 'bacen-signing', pki.bcbSigning.certificate, before, after)
  expiryBetween(t, m, 'bacen-signing', pki.bcbExpired.certificate, before, after)
  t.ok((metricSamples(m, 'pixproxy_certificate_expiry_seconds', { role: 'bacen-signing', serial: pki.bcbExpired.certificate.serialDecimal })[0] ?? 0) < 0, 'an expired one is negative')
  expiryBetween(t, m, 'bacen-ca', pki.ca.certificate, before, after)
  t.equal(metricSamples(m, 'pixproxy_certificate_expiry_seconds').length, 5, 'nothing else')
})

// Last: the proxy presents another certificate from here on.
t.test('a certificate rotated on SIGHUP shows its own expiry at the next scrape; the old one is gone', async (t) => {
  const pki = e2e.stack.simulatorPki
  const file = e2e.stack.hsm.tls.certFile
  const old = parseCertificate(await readFile(file))
  const notAfter = new Date(Math.floor(Date.now() / 1000) * 1000 + 12 * 86_400_000)
  // The same HSM key, a new certificate with a known notAfter (12 days: between the 7- and 30-day alarms).
  const rotated = issueCertificate({ subject: old.subjectString, publicKey: old.publicKey, issuer: { certificate: pki.ca.certificate, key: pki.ca.key }, notAfter, extKeyUsage: ['clientAuth'] })
  await writeFile(file, rotated.pem)
  await e2e.stack.proxy.upstreams.reloadCertificates()
  const before = Date.now()
  const m = (await e2e.proxy('GET', '/metrics')).text
  const after = Date.now()
  expiryBetween(t, m, 'tls-client', rotated, before, after)
  t.same(metricSamples(m, 'pixproxy_certificate_expiry_seconds', { role: 'tls-client' }).length, 1, 'only the certificate in use')
  t.same(metricSamples(m, 'pixproxy_certificate_expiry_seconds', { serial: old.serialDecimal }), [], 'the replaced one is gone')
})
