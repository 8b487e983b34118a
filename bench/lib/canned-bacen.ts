/**
 * A cheap BACEN for the pinned comparison (bench/e2e.ts --pinned): mutual TLS with BACEN's TLS identity, and answers
 * genuinely signed with the simulator's BCB signing key, signed once at start and replayed. What a proxy in front
 * of it does (sign, verify, audit) is then nearly all the work on the machine besides the load.
 *
 *   GET  /api/v2/entries/{key}   200 GetEntryResponse for KEY (whatever key is asked: the load asks for KEY)
 *   POST /api/v2/entries/        201 CreateEntryResponse for KEY (the load creates KEY every time)
 *   POST /api/v1/in/{ispb}/msgs  201 with one PI-ResourceId per message (a multipart post gets one per part)
 *   GET  /bench/stats            {"handshakes":N,"requests":M} so far (TLS handshakes completed, requests served):
 *                                how well a contender reuses its keep-alive connections
 *
 * Configured by one JSON object in BENCH_CANNED_BACEN (CannedBacenConfig); prints {"port":N} and serves until SIGTERM.
 */
import { createPrivateKey, randomUUID } from 'node:crypto'
import { createServer } from 'node:https'
import type { AddressInfo } from 'node:net'
import { SoftwareSigner } from '../../core/signer.ts'
import { parseCertificate } from '../../core/pki/x509.ts'
import { XmlSigner } from '../../core/xmldsig/sign.ts'

export interface CannedBacenConfig {
  /** The DICT key every DICT answer names. */
  readonly key: string
  /** The ISPB that holds KEY. */
  readonly holder: string
  readonly tls: { readonly certPem: string, readonly keyPem: string, readonly clientCaPems: readonly string[] }
  readonly signing: { readonly certPem: string, readonly keyPem: string }
}

function entryResponse (root: string, c: CannedBacenConfig): string {
  return `<?xml version="1.0" encoding="UTF-8"?>
<${root}><ResponseTime>${new Date().toISOString()}</ResponseTime><CorrelationId>${randomUUID().replaceAll('-', '')}</CorrelationId><Entry><Key>${c.key}</Key><KeyType>EMAIL</KeyType><Account><Participant>${c.holder}</Participant><Branch>0042</Branch><AccountNumber>987654321</AccountNumber><AccountType>CACC</AccountType><OpeningDate>2020-11-03T03:00:00.000Z</OpeningDate></Account><Owner><Type>NATURAL_PERSON</Type><TaxIdNumber>11144477735</TaxIdNumber><Name>Joao Pedro Araujo</Name></Owner><CreationDate>2025-01-01T00:00:00.000Z</CreationDate><KeyOwnershipDate>2025-01-01T00:00:00.000Z</KeyOwnershipDate></Entry></${root}>
`
}

const config = JSON.parse(process.env.BENCH_CANNED_BACEN ?? 'null') as CannedBacenConfig | null
if (config === null) throw new Error('BENCH_CANNED_BACEN is not set')
const bcb = new XmlSigner({ signer: SoftwareSigner.fromKeyObject(createPrivateKey(config.signing.keyPem)), certificate: parseCertificate(config.signing.certPem) })
const getEntry = Buffer.from(await bcb.sign(entryResponse('GetEntryResponse', config), 'dict'))
const createEntry = Buffer.from(await bcb.sign(entryResponse('CreateEntryResponse', config), 'dict'))
const XML = 'application/xml; charset=utf-8'
let resourceSeq = 0
let handshakes = 0
let requests = 0

const server = createServer({
  key: config.tls.keyPem,
  cert: config.tls.certPem,
  ca: [...config.tls.clientCaPems],
  requestCert: true,
  rejectUnauthorized: true,
  minVersion: 'TLSv1.2',
  keepAliveTimeout: 60_000
}, (req, res) => {
  const chunks: Buffer[] = []
  req.on('data', (b: Buffer) => chunks.push(b))
  req.on('end', () => {
    const url = req.url ?? ''
    if (req.method === 'GET' && url === '/bench/stats') {
      const body = JSON.stringify({ handshakes, requests })
      res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) })
      res.end(body)
      return
    }
    requests++
    if (req.method === 'GET' && url.startsWith('/api/v2/entries/')) {
      res.writeHead(200, { 'content-type': XML, 'content-length': getEntry.length })
      res.end(getEntry)
    } else if (req.method === 'POST' && url.startsWith('/api/v2/entries')) {
      res.writeHead(201, { 'content-type': XML, 'content-length': createEntry.length })
      res.end(createEntry)
    } else if (req.method === 'POST' && /^\/api\/v1\/in\/\d{8}\/msgs/.test(url)) {
      const boundary = /boundary="?([^";]+)"?/.exec(req.headers['content-type'] ?? '')?.[1]
      const body = Buffer.concat(chunks).toString('latin1')
      const parts = boundary === undefined ? 1 : Math.max(1, body.split(`--${boundary}`).length - 2)
      const ids = Array.from({ length: parts }, () => `M${String(++resourceSeq).padStart(12, '0')}`)
      res.writeHead(201, { 'pi-resourceid': ids.join(','), 'content-length': 0 })
      res.end()
    } else {
      res.writeHead(404, { 'content-length': 0 })
      res.end()
    }
  })
})
server.on('secureConnection', () => { handshakes++ })
server.listen(0, '127.0.0.1', () => {
  process.stdout.write(JSON.stringify({ port: (server.address() as AddressInfo).port }) + '\n')
})
process.once('SIGTERM', () => { server.close(); server.closeAllConnections(); process.exit(0) })
