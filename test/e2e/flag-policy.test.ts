/**
 * PIXPROXY_INVALID_SIGNATURE_POLICY=flag over real sockets: BACEN answers whose signature does not verify are
 * passed through to the caller, flagged (`pix-proxy-signature-valid: false` and the verifier's code), never
 * silently accepted and never turned into a 502.
 */
import t from 'tap'
import { createEntryRequest, pacs008 } from '../../tools/samples/messages.ts'
import { fieldAt, header, metricSamples, PROXY_ISPB, startE2e } from '../helpers/e2e.ts'
import type { E2e, ProxyResponse } from '../helpers/e2e.ts'

let e2e: E2e
t.before(async () => { e2e = await startE2e(t, { invalidSignaturePolicy: 'flag' }) })
t.afterEach(() => { e2e.setFaults({}) })

const POLICY = '/api/v2/policies/ENTRIES_WRITE'
const asProxy = { 'pi-requestingparticipant': PROXY_ISPB }

async function policy (): Promise<ProxyResponse> {
  return await e2e.proxy('GET', POLICY, { headers: asProxy })
}

t.test('the stack runs the flag policy', async (t) => {
  t.equal(e2e.stack.config.invalidSignaturePolicy, 'flag')
  const res = await policy()
  t.equal(res.status, 200)
  t.equal(header(res, 'pix-proxy-signature-valid'), 'true', 'a good signature is still flagged valid')
  t.equal(header(res, 'pix-proxy-signature-code'), 'VALID')
})

t.test('invalid signature: passed through with BACEN\'s status, flagged false / SIGNATURE_INVALID', async (t) => {
  e2e.setFaults({ responseSignature: 'invalid' })
  const res = await policy()
  t.equal(res.status, 200, 'BACEN\'s status, not 502')
  t.equal(header(res, 'pix-proxy-signature-valid'), 'false')
  t.equal(header(res, 'pix-proxy-signature-code'), 'SIGNATURE_INVALID')
  t.equal(fieldAt(res.text, 'Policy', 'Name'), 'ENTRIES_WRITE', 'the body is BACEN\'s answer')
  t.equal(e2e.bcbVerdict(res.text, 'dict'), 'SIGNATURE_INVALID', 'and it really does not verify')

  const entry = createEntryRequest()
  const write = await e2e.proxyXml('/api/v2/entries/', entry.xml)
  t.equal(write.status, 201)
  t.equal(header(write, 'pix-proxy-signature-valid'), 'false')
  t.equal(header(write, 'pix-proxy-signature-code'), 'SIGNATURE_INVALID')
  t.equal(fieldAt(write.text, 'Entry', 'Key'), entry.key)
})

t.test('missing signature: flagged false / SIGNATURE_MISSING', async (t) => {
  e2e.setFaults({ responseSignature: 'missing' })
  const res = await policy()
  t.equal(res.status, 200)
  t.equal(header(res, 'pix-proxy-signature-valid'), 'false')
  t.equal(header(res, 'pix-proxy-signature-code'), 'SIGNATURE_MISSING')
})

t.test('expired BCB certificate: flagged false / CERT_EXPIRED', async (t) => {
  e2e.setFaults({ responseSignature: 'expired-cert' })
  const unknown = await policy()
  t.equal(header(unknown, 'pix-proxy-signature-valid'), 'false')
  t.ok(['CERT_UNKNOWN', 'CERT_EXPIRED'].includes(header(unknown, 'pix-proxy-signature-code') ?? ''), 'a certificate problem, not SIGNATURE_INVALID')
  // As after BACEN rotated its certificate: the bundle still lists the previous one.
  e2e.stack.proxy.crypto.bacenTrust.add(e2e.stack.simulatorPki.bcbExpired.certificate)
  const res = await policy()
  t.equal(res.status, 200)
  t.equal(header(res, 'pix-proxy-signature-valid'), 'false')
  t.equal(header(res, 'pix-proxy-signature-code'), 'CERT_EXPIRED')
})

t.test('stream messages: each part flagged with its own verdict', async (t) => {
  const p = pacs008()
  const posted = await e2e.proxyXml(`/api/v1/in/${PROXY_ISPB}/msgs`, p.xml)
  t.equal(posted.status, 201)
  e2e.setFaults({ responseSignature: 'missing', routes: ['/api/v1/out/'] })
  const e2eId = p.endToEndIds[0] as string
  const read = await e2e.readStream({ multipart: true, until: (ms) => ms.some((m) => m.xml.includes(e2eId)) })
  const m = read.messages.find((x) => x.xml.includes(e2eId))
  t.equal(m?.signatureValid, 'false')
  t.equal(m?.signatureCode, 'SIGNATURE_MISSING')
})

t.test('the verdicts are counted by code', async (t) => {
  const metrics = (await e2e.proxy('GET', '/metrics')).text
  const sum = (code: string): number => metricSamples(metrics, 'pixproxy_response_signatures_total', { code }).reduce((a, b) => a + b, 0)
  t.ok(sum('SIGNATURE_INVALID') >= 2, 'SIGNATURE_INVALID counted')
  t.ok(sum('SIGNATURE_MISSING') >= 2, 'SIGNATURE_MISSING counted')
  t.ok(sum('CERT_EXPIRED') >= 1, 'CERT_EXPIRED counted')
  t.ok(sum('VALID') >= 1, 'VALID counted')
})

t.test('an unsigned DICT answer under another media type: relayed flagged false / SIGNATURE_MISSING, never valid', async (t) => {
  for (const contentType of ['text/plain', null, 'application/octet-stream']) {
    e2e.setFaults({ responseSignature: 'missing', responseContentType: contentType, routes: ['/api/v2/policies/'] })
    const res = await policy()
    const what = contentType ?? 'no Content-Type'
    t.equal(res.status, 200, `${what}: BACEN's status`)
    t.equal(header(res, 'pix-proxy-signature-valid'), 'false', `${what}: flagged invalid`)
    t.equal(header(res, 'pix-proxy-signature-code'), 'SIGNATURE_MISSING', `${what}: code`)
  }
})
