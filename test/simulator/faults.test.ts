import t from 'tap'
import { startSimulator } from '../../tools/simulator/server.ts'
import { buildSimulator } from '../../tools/simulator/app.ts'
import { createSimulatorPki } from '../../tools/simulator/pki.ts'
import { ParticipantClient } from '../../tools/simulator/client.ts'
import type { SimpleResponse } from '../../tools/simulator/client.ts'
import { pibr001, SAMPLE_PAYER } from '../../tools/samples/messages.ts'
import { TrustStore, verifyXml } from '../../core/xmldsig/index.ts'
import { waitFor } from '../helpers/wait.ts'

const A = SAMPLE_PAYER.ispb
const pki = createSimulatorPki({ participants: [A] })
// A client that knows both BCB certificates, as a proxy would after BCB rotated its certificate.
const bcbTrust = new TrustStore([pki.bcbSigning.certificate, pki.bcbExpired.certificate])

t.test('fault injection, each observable', async (t) => {
  const sim = await startSimulator({ ...pki.simulatorOptions({ fingerprints: true }), spi: { longPollMs: 200 } })
  t.teardown(async () => { await sim.close() })
  const id = pki.participant(A)
  const client = new ParticipantClient({ url: sim.dictUrl, ca: pki.ca.certPem, certPem: id.tls.certPem, keyPem: id.tls.keyPem })
  t.teardown(async () => { await client.close() })
  const control = sim.app.simulator
  t.afterEach(() => { control.setFaults({}) })
  const policies = async (): Promise<SimpleResponse> => await client.request('GET', '/api/v2/policies/', { headers: { 'PI-RequestingParticipant': A } })
  const dictCode = (res: SimpleResponse): string => verifyXml(res.text, { profile: 'dict', trustStore: bcbTrust }).code

  await t.test('responseSignature: valid, invalid, missing, expired-cert (DICT)', async (t) => {
    t.equal(dictCode(await policies()), 'VALID')
    control.setFaults({ responseSignature: 'invalid' })
    t.equal(dictCode(await policies()), 'SIGNATURE_INVALID')
    control.setFaults({ responseSignature: 'missing' })
    t.equal(dictCode(await policies()), 'SIGNATURE_MISSING')
    control.setFaults({ responseSignature: 'expired-cert' })
    const expired = await policies()
    t.equal(dictCode(expired), 'CERT_EXPIRED')
    t.equal(expired.status, 200, 'the answer itself is normal')
  })

  await t.test('responseSignature applies to SPI messages delivered on the stream', async (t) => {
    const icom = new ParticipantClient({ url: sim.spiUrl, ca: pki.ca.certPem, certPem: id.tls.certPem, keyPem: id.tls.keyPem, servername: 'icom-h.pi.rsfn.net.br' })
    t.teardown(async () => { await icom.close() })
    for (let i = 0; i < 2; i++) {
      const posted = await icom.request('POST', `/api/v1/in/${A}/msgs`, { body: await id.signing.xmlSigner.sign(pibr001({ from: A }).xml, 'spi'), headers: { 'content-type': 'application/xml' } })
      t.equal(posted.status, 201)
    }
    // The pibr.002 answers are queued after the 201s: wait for both, or a slow machine's 200 ms long poll ends first.
    t.ok(await waitFor(() => control.spi.pending(A) === 2), 'both pibr.002 queued')
    control.setFaults({ responseSignature: 'expired-cert', routes: ['/api/v1/out/'] })
    const first = await icom.request('GET', `/api/v1/out/${A}/stream/start`)
    t.equal(verifyXml(first.text, { profile: 'spi', trustStore: bcbTrust }).code, 'CERT_EXPIRED')
    control.setFaults({ responseSignature: 'invalid' })
    const second = await icom.request('GET', first.headers['pi-pull-next'] as string)
    t.equal(verifyXml(second.text, { profile: 'spi', trustStore: bcbTrust }).code, 'SIGNATURE_INVALID')
  })

  await t.test('errorRate 1 → problem with errorStatus (signed on DICT, Retry-After on 503); not logged', async (t) => {
    const before = control.log.length
    control.setFaults({ errorRate: 1 })
    const res = await policies()
    t.equal(res.status, 503)
    t.equal(res.headers['retry-after'], '1')
    t.match(res.text, /\/api\/v2\/error\/ServiceUnavailable</)
    t.equal(dictCode(res), 'VALID')
    control.setFaults({ errorRate: 1, errorStatus: 500 })
    const icom = await client.request('GET', `/api/v1/out/${A}/stream/start`)
    t.equal(icom.status, 500)
    t.match(icom.text, /icom\.pi\.rsfn\.net\.br\/api\/v1\/error\//)
    t.equal(control.log.length, before, 'injected errors are not accepted messages')
  })

  await t.test('dropRate 1 → the connection is destroyed without an answer', async (t) => {
    control.setFaults({ dropRate: 1 })
    await t.rejects(policies(), { code: 'UND_ERR_SOCKET' })
  })

  await t.test('latency and jitter delay the answer', async (t) => {
    control.setFaults({ latencyMs: 250, jitterMs: 50 })
    const t0 = Date.now()
    t.equal((await policies()).status, 200)
    const elapsed = Date.now() - t0
    t.ok(elapsed >= 245, `took ${elapsed} ms`)
  })

  await t.test('routes limit faults to path prefixes', async (t) => {
    control.setFaults({ errorRate: 1, routes: ['/api/v2/entries'] })
    t.equal((await policies()).status, 200, '/api/v2/policies is outside the faulted routes')
    const res = await client.request('GET', '/api/v2/entries/x%40example.com', { headers: { 'PI-RequestingParticipant': A, 'PI-PayerId': SAMPLE_PAYER.taxId, 'PI-EndToEndId': 'E9999900420250101120000000000001' } })
    t.equal(res.status, 503)
  })

  await t.test('invalid fault settings are refused when set', async (t) => {
    t.throws(() => { control.setFaults({ errorRate: 2 }) }, { code: 'PIXPROXY_ERR_SIMULATOR_CONFIG' })
    t.throws(() => { control.setFaults({ errorStatus: 200 }) }, { code: 'PIXPROXY_ERR_SIMULATOR_CONFIG' })
    t.throws(() => { control.setFaults({ latencyMs: -1 }) }, { code: 'PIXPROXY_ERR_SIMULATOR_CONFIG' })
    t.throws(() => { control.setFaults({ responseRewrite: { find: '', replace: 'x' } }) }, { code: 'PIXPROXY_ERR_SIMULATOR_CONFIG' }, 'an empty find would rewrite between every character')
    t.throws(() => { control.setFaults({ responseRewrite: 'x' as never }) }, { code: 'PIXPROXY_ERR_SIMULATOR_CONFIG' })
    t.same(control.faults, {}, 'the previous configuration stays')
  })
})

t.test('faults at start; expired-cert needs an expired BCB identity', async (t) => {
  const { tls, participants, bcb } = pki.simulatorOptions()
  await t.rejects(buildSimulator({ tls, participants, bcb: { signer: bcb.signer, certificate: bcb.certificate }, faults: { responseSignature: 'expired-cert' } }), { code: 'PIXPROXY_ERR_SIMULATOR_CONFIG' })
  const app = await buildSimulator({ tls, participants, bcb, faults: { responseSignature: 'missing' } })
  t.teardown(async () => { await app.close() })
  t.same(app.simulator.faults, { responseSignature: 'missing', routes: undefined })
})
