import { setTimeout as sleep } from 'node:timers/promises'
import t from 'tap'
import { Agent, request } from 'undici'
import { startSimulator } from '../../tools/simulator/server.ts'
import { createSimulatorPki } from '../../tools/simulator/pki.ts'
import { ParticipantClient } from '../../tools/simulator/client.ts'
import { createEntryRequest, SAMPLE_PAYER } from '../../tools/samples/messages.ts'
import { waitFor } from '../helpers/wait.ts'

const A = SAMPLE_PAYER.ispb
const pki = createSimulatorPki({ participants: [A] })
const options = pki.simulatorOptions({ fingerprints: true })
const unregistered = pki.participant('99999077') // same CA, not in `options`
const otherPki = createSimulatorPki({ participants: [A] }) // another CA altogether

t.test('mutual TLS and BACEN\'s transport rules', async (t) => {
  const sim = await startSimulator({ ...options, spi: { longPollMs: 200 } })
  t.teardown(async () => { await sim.close() })

  const tryWith = async (connect: Record<string, unknown>, headers: Record<string, string> = { host: 'dict-h.pi.rsfn.net.br' }): Promise<number> => {
    const agent = new Agent({ connect: { ca: pki.ca.certPem, servername: 'dict-h.pi.rsfn.net.br', ...connect } })
    try {
      const res = await request(`${sim.dictUrl}/api/v2/policies/`, { dispatcher: agent, headers: { 'PI-RequestingParticipant': A, ...headers } })
      await res.body.dump()
      return res.statusCode
    } finally {
      await agent.destroy()
    }
  }

  await t.test('a registered participant certificate is served', async (t) => {
    t.equal(await tryWith({ cert: pki.participant(A).tls.certPem, key: pki.participant(A).tls.keyPem }), 200)
  })

  await t.test('no client certificate: the handshake fails', async (t) => {
    await t.rejects(tryWith({}))
  })

  await t.test('a certificate from another CA: the handshake fails', async (t) => {
    const other = otherPki.participant(A)
    await t.rejects(tryWith({ cert: other.tls.certPem, key: other.tls.keyPem }))
  })

  await t.test('a certificate from the CA that no participant registered: 403', async (t) => {
    t.equal(await tryWith({ cert: unregistered.tls.certPem, key: unregistered.tls.keyPem }), 403)
  })

  await t.test('Host with a port: the connection is closed without an answer', async (t) => {
    const id = pki.participant(A)
    await t.rejects(tryWith({ cert: id.tls.certPem, key: id.tls.keyPem }, { host: 'dict-h.pi.rsfn.net.br:16522' }), { code: 'UND_ERR_SOCKET' })
  })

  await t.test('TLS below 1.2 is refused', async (t) => {
    const id = pki.participant(A)
    await t.rejects(tryWith({ cert: id.tls.certPem, key: id.tls.keyPem, maxVersion: 'TLSv1.1', minVersion: 'TLSv1' }))
  })

  await t.test('HTTP/1.1 only: ALPN h2 is not offered', async (t) => {
    const { connect } = await import('node:tls')
    const id = pki.participant(A)
    const { hostname, port } = new URL(sim.dictUrl)
    const protocol = await new Promise<string | false | null>((resolve, reject) => {
      const s = connect({ host: hostname, port: Number(port), servername: 'dict-h.pi.rsfn.net.br', ca: pki.ca.certPem, cert: id.tls.certPem, key: id.tls.keyPem, ALPNProtocols: ['h2', 'http/1.1'] }, () => {
        resolve(s.alpnProtocol)
        s.end()
      })
      s.on('error', reject)
    })
    t.not(protocol, 'h2')
  })
})

t.test('DICT and ICOM on two ports share one simulator; close() ends long polls at once', async (t) => {
  // A long poll far longer than this file may run: close() returning at all shows it did not wait for the poll.
  const LONG_POLL_MS = 3_600_000
  const sim = await startSimulator({ ...options, dictPort: 0, spiPort: 0, spi: { longPollMs: LONG_POLL_MS } })
  let closed = false
  t.teardown(async () => { if (!closed) await sim.close() })
  t.not(sim.dictUrl, sim.spiUrl)
  const id = pki.participant(A)
  const dict = new ParticipantClient({ url: sim.dictUrl, ca: pki.ca.certPem, certPem: id.tls.certPem, keyPem: id.tls.keyPem })
  const icom = new ParticipantClient({ url: sim.spiUrl, ca: pki.ca.certPem, certPem: id.tls.certPem, keyPem: id.tls.keyPem, servername: 'icom-h.pi.rsfn.net.br' })
  t.teardown(async () => { await dict.close(); await icom.close() })
  // ENTRIES_WRITE refills a token every 50 ms: with the limiter's clock stopped, the one the write spent is still
  // missing when the policy is read, however slowly the two requests go.
  const stopped = Date.now()
  sim.app.simulator.dict.limiter.clock = () => stopped
  const res = await dict.request('POST', '/api/v2/entries/', { body: await id.signing.xmlSigner.sign(createEntryRequest({ owner: SAMPLE_PAYER }).xml, 'dict') })
  t.equal(res.status, 201)
  const viaSpiPort = await icom.request('GET', '/api/v2/policies/ENTRIES_WRITE', { headers: { 'PI-RequestingParticipant': A } })
  t.match(viaSpiPort.text, /<AvailableTokens>35999<\/AvailableTokens>/, 'the same buckets behind both ports')
  t.equal(sim.app.simulator.log.length, 2)

  const poll = icom.request('GET', `/api/v1/out/${A}/stream/start`).then((r) => r.status, () => 'error')
  t.ok(await waitFor(() => sim.app.simulator.spi.active(A).readers === 1), 'the reader is waiting at the simulator')
  const t0 = Date.now()
  // The bound only turns a close() that waits for the poll into a failure instead of the file's timeout.
  const ended = await Promise.race([sim.close().then(() => 'closed'), sleep(60_000, 'still closing', { ref: false })])
  closed = ended === 'closed'
  t.equal(ended, 'closed', `closed in ${Date.now() - t0} ms despite a ${LONG_POLL_MS} ms long poll`)
  t.equal(await poll, 204, 'the waiting reader is answered 204')
})
