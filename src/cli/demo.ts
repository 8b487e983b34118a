/**
 * `pix-proxy demo [--dir DIR] [--once]`: the README's main job. Starts the whole local stack (SoftHSM token with
 * the participant's non-extractable keys, the BACEN simulator, the proxy as configured in production) and sends
 * sample traffic through the proxy the way a bank core would: DICT entry, lookup and claim; an SPI pacs.008 and the
 * pacs.002 read back from the ICOM stream; a pibr.001 echo. Then it shows the signing core catching a message
 * altered after signing. Progress goes to stderr; the last stdout line is a JSON summary; exit 0 only if every
 * flow did what it should. Without --once the stack stays up (Ctrl-C stops it) for manual requests.
 */
import { join, resolve } from 'node:path'
import { parseArgs } from 'node:util'
import { performance } from 'node:perf_hooks'
import { request } from 'undici'
import { startLocalStack, PROXY_ISPB, COUNTERPARTY_ISPB } from '../demo/stack.ts'
import type { LocalStack } from '../demo/stack.ts'
import { createClaimRequest, createEntryRequest, newEndToEndId, pacs008, pibr001, SAMPLE_PAYEE } from '../samples/messages.ts'
import { verifyXml } from '../xmldsig/verify.ts'
import { TrustStore } from '../xmldsig/truststore.ts'
import { parseCertificate } from '../pki/x509.ts'
import { readFile } from 'node:fs/promises'
import { queryAudit } from '../audit/query.ts'
import type { CliIo } from './io.ts'

interface FlowResult {
  readonly name: string
  readonly ok: boolean
  readonly status?: number
  readonly signature?: string
  readonly ms: number
  readonly detail?: string
}

interface Reply { status: number, headers: Record<string, string | string[] | undefined>, body: string }

export async function demoCommand (argv: string[], io: CliIo): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    options: { dir: { type: 'string', default: '.local/demo' }, once: { type: 'boolean', default: false } },
    strict: true
  })
  const dir = resolve(values.dir)
  const log = (msg: string): void => { io.stderr.write(`[demo] ${msg}\n`) }
  log(`starting SoftHSM token, BACEN simulator and pix-proxy (state in ${dir})`)
  const stack = await startLocalStack({ dir, longPollMs: 1_000 })
  log(`pix-proxy listening on ${stack.proxyUrl} for ISPB ${PROXY_ISPB}; simulator on ${stack.simulator.dictUrl}`)
  const results: FlowResult[] = []
  try {
    await runFlows(stack, results, log)
  } finally {
    if (values.once || results.some((r) => !r.ok)) await stack.close()
  }
  const ok = results.every((r) => r.ok)
  const accepted = stack.simulator.app.simulator.log.length
  io.stdout.write(JSON.stringify({ ok, proxy: stack.proxyUrl, ispb: PROXY_ISPB, signingKey: stack.hsm.signing.uri, simulatorAccepted: accepted, flows: results }) + '\n')
  if (!values.once && ok) {
    log('stack is up; try: curl -s ' + stack.proxyUrl + '/readyz ; Ctrl-C to stop')
    await new Promise<void>((resolve) => {
      process.once('SIGINT', resolve)
      process.once('SIGTERM', resolve)
    })
    await stack.close()
  }
  return ok ? 0 : 1
}

async function call (stack: LocalStack, method: 'GET' | 'POST' | 'DELETE', path: string, body?: string, headers: Record<string, string> = {}): Promise<Reply> {
  const r = await request(stack.proxyUrl + path, {
    method,
    headers: { ...(body === undefined ? {} : { 'content-type': 'application/xml' }), ...headers },
    ...(body === undefined ? {} : { body })
  })
  return { status: r.statusCode, headers: r.headers, body: await r.body.text() }
}

function tag (xml: string, name: string): string | undefined {
  return new RegExp(`<${name}>([^<]*)</${name}>`).exec(xml)?.[1]
}

async function runFlows (stack: LocalStack, results: FlowResult[], log: (m: string) => void): Promise<void> {
  const flow = async (name: string, fn: () => Promise<Omit<FlowResult, 'name' | 'ms'>>): Promise<void> => {
    const t0 = performance.now()
    let r: Omit<FlowResult, 'name' | 'ms'>
    try {
      r = await fn()
    } catch (err) {
      r = { ok: false, detail: (err as Error).message }
    }
    const res = { name, ...r, ms: Math.round((performance.now() - t0) * 10) / 10 }
    results.push(res)
    log(`${res.ok ? 'ok  ' : 'FAIL'} ${name}${res.status === undefined ? '' : ` → ${res.status}`}${res.signature === undefined ? '' : ` (BACEN signature ${res.signature})`}${res.detail === undefined ? '' : `: ${res.detail}`}`)
  }
  const sig = (r: Reply): string => String(r.headers['pix-proxy-signature-code'])

  // DICT: our participant registers a key; the counterparty registers one we then look up and claim.
  await flow('DICT CreateEntry (signed in the HSM)', async () => {
    const r = await call(stack, 'POST', '/api/v2/entries/', createEntryRequest().xml)
    return { ok: r.status === 201 && sig(r) === 'VALID', status: r.status, signature: sig(r) }
  })
  const theirKey = createEntryRequest({ owner: SAMPLE_PAYEE, keyType: 'EMAIL' })
  const direct = await stack.counterparty.client.request('POST', '/api/v2/entries/', {
    headers: { 'content-type': 'application/xml' },
    body: await stack.counterparty.identity.signing.xmlSigner.sign(theirKey.xml, 'dict')
  })
  if (direct.status !== 201) log(`counterparty could not create its entry: ${direct.status}`)
  await flow('DICT GetEntry (counterparty key)', async () => {
    const r = await call(stack, 'GET', `/api/v2/entries/${encodeURIComponent(theirKey.key)}`, undefined, {
      'PI-RequestingParticipant': PROXY_ISPB,
      'PI-PayerId': '52998224725',
      'PI-EndToEndId': newEndToEndId(PROXY_ISPB)
    })
    return { ok: r.status === 200 && sig(r) === 'VALID' && r.body.includes(COUNTERPARTY_ISPB), status: r.status, signature: sig(r) }
  })
  await flow('DICT CreateClaim (portability of the counterparty key)', async () => {
    const r = await call(stack, 'POST', '/api/v2/claims/', createClaimRequest({ key: theirKey.key, keyType: 'EMAIL', type: 'PORTABILITY', owner: { ...SAMPLE_PAYEE, ispb: PROXY_ISPB } }).xml)
    return { ok: r.status === 201 && sig(r) === 'VALID', status: r.status, signature: sig(r), ...(r.status === 201 ? {} : { detail: r.body.slice(0, 300) }) }
  })
  await flow('DICT ListClaims', async () => {
    const r = await call(stack, 'GET', `/api/v2/claims/?Participant=${PROXY_ISPB}&IsClaimer=true&Limit=10`)
    return { ok: r.status === 200 && sig(r) === 'VALID', status: r.status, signature: sig(r) }
  })

  // SPI: a payment, and its settlement read back from our ICOM stream.
  const payment = pacs008({ amounts: [150.75] })
  await flow('SPI pacs.008 POST /api/v1/in/{ispb}/msgs', async () => {
    const r = await call(stack, 'POST', `/api/v1/in/${PROXY_ISPB}/msgs`, payment.xml)
    return { ok: r.status === 201 && typeof r.headers['pi-resourceid'] === 'string', status: r.status }
  })
  await flow('SPI stream: pacs.002 ACSC for the payment', async () => {
    let path = `/api/v1/out/${PROXY_ISPB}/stream/start`
    const deadline = Date.now() + 10_000
    while (Date.now() < deadline) {
      const r = await call(stack, 'GET', path, undefined, { accept: 'multipart/mixed' })
      const next = r.headers['pi-pull-next']
      if (r.status === 200 && r.body.includes(payment.endToEndIds[0] as string)) {
        const status = tag(r.body, 'TxSts')
        if (typeof next === 'string') await call(stack, 'DELETE', next)
        return { ok: status === 'ACSC' && sig(r) === 'VALID', status: r.status, signature: sig(r), detail: `TxSts ${status ?? '?'}` }
      }
      if (typeof next !== 'string') return { ok: false, status: r.status, detail: 'no PI-Pull-Next' }
      path = next
    }
    return { ok: false, detail: 'no pacs.002 within 10 s' }
  })
  await flow('SPI pibr.001 echo', async () => {
    const r = await call(stack, 'POST', `/api/v1/in/${PROXY_ISPB}/msgs`, pibr001().xml)
    return { ok: r.status === 201, status: r.status }
  })

  // The signing core on its own: a message altered after signing is caught, with the reference that broke.
  await flow('tampered pacs.008 detected (DIGEST_MISMATCH on the Document)', async () => {
    const cert = parseCertificate(await readFile(stack.hsm.signing.certFile))
    const signer = stack.proxy.crypto.xmlSigner
    const signed = await signer.sign(pacs008({ amounts: [10] }).xml, 'spi')
    const r = verifyXml(signed.replace('>10.00<', '>10000.00<'), { trustStore: new TrustStore([cert]) })
    const bad = r.references.filter((x) => !x.digestValid).map((x) => x.target)
    return { ok: r.code === 'DIGEST_MISMATCH' && bad.join() === 'Document', detail: `verifier says ${r.code}, failed reference: ${bad.join()}` }
  })
  log(`simulator accepted ${stack.simulator.app.simulator.log.length} messages (log: ${join(stack.simulatorLogFile)})`)

  // The audit trail: every call above is a row; once shipped, SQL over the local Parquet store.
  await flow('audit rows for every call, queried with DuckDB', async () => {
    const lake = stack.config.audit.parquetDir
    const calls = stack.proxy.audit.spool?.stats().spooledRows ?? 0
    const sql = 'SELECT system, message_type, response_status_code AS status, response_signature_code AS signature, count(*) AS n FROM audit GROUP BY ALL ORDER BY system, message_type'
    const deadline = Date.now() + 10_000
    let rows: Array<Record<string, unknown>> = []
    while (Date.now() < deadline) {
      rows = []
      for await (const r of queryAudit(lake, sql)) rows.push(r)
      if (rows.reduce((a, r) => a + Number(r.n), 0) >= calls) break
      await new Promise((resolve) => setTimeout(resolve, 200))
    }
    const n = rows.reduce((a, r) => a + Number(r.n), 0)
    for (const r of rows) log(`  audit: ${String(r.system)} ${String(r.message_type)} → ${String(r.status)} ${String(r.signature)} ×${String(r.n)}`)
    log(`  try: node dist/src/cli/main.js audit query --dir ${lake} "SELECT request_date, system, message_type, response_status_code FROM audit ORDER BY request_date"`)
    return { ok: n === calls && calls > 0, detail: `${n} of ${calls} calls audited in ${lake}` }
  })
}
