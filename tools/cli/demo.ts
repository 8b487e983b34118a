/**
 * `pix-proxy demo`: the README's main job. Sends sample traffic through the proxy the way a bank core would: DICT
 * entry, lookup and claim; an SPI pacs.008 and the pacs.002 read back from the ICOM stream; a pibr.001 echo. Then
 * it shows the signing core catching a message altered after signing, and finds every call it made in the audit
 * store with DuckDB. Progress goes to stderr; the last stdout line is a JSON summary; exit 0 only if every flow did
 * what it should.
 *
 * Two modes share the flows:
 *   `demo [--dir DIR] [--once]` starts the whole local stack in this process (SoftHSM token with the participant's
 *     non-extractable keys, the BACEN simulator, the proxy as configured in production; tools/demo/stack.ts). Without
 *     --once the stack stays up (Ctrl-C stops it) for manual requests.
 *   `demo --proxy-url URL --simulator-url URL --pki-dir DIR --lake DIR` only sends the traffic, to services started
 *     elsewhere (docker-compose.yml's `traffic` service): the counterparty and the token come from the PKI that
 *     docker/local-init.sh leaves in DIR (hsm/ from `hsm init`, bacen/ from `simulator --pki-only`), the audit rows
 *     from the lake the local Firehose delivers to. It runs once and writes nothing. An https:// proxy URL is
 *     called over TLS trusting --proxy-ca, presenting --client-cert/--client-key when the proxy requires mutual TLS
 *     (compose's proxy does, as in production: the files docker/local-init.sh makes with `pix-proxy pki inbound`).
 */
import { createPrivateKey, randomUUID } from 'node:crypto'
import { join, resolve } from 'node:path'
import { parseArgs } from 'node:util'
import { performance } from 'node:perf_hooks'
import { Agent, request } from 'undici'
import { startLocalStack, PROXY_ISPB, COUNTERPARTY_ISPB } from '../demo/stack.ts'
import type { LocalStack } from '../demo/stack.ts'
import { Errors, PixProxyError } from '../../core/errors.ts'
import type { HsmInitResult } from '../token/hsm-init.ts'
import { Pkcs11KeyStore } from '../../src/hsm/pkcs11.ts'
import { SoftwareSigner } from '../../core/signer.ts'
import { readPin } from '../../src/hsm/uri.ts'
import { createClaimRequest, createEntryRequest, pacs008, pibr001, SAMPLE_PAYEE } from '../samples/messages.ts'
import { newEndToEndId } from '../../core/pix/ids.ts'
import { XmlSigner } from '../../core/xmldsig/sign.ts'
import { verifyXml } from '../../core/xmldsig/verify.ts'
import { TrustStore } from '../../core/xmldsig/truststore.ts'
import { certificateMatchesKey, parseCertificate } from '../../core/pki/x509.ts'
import type { Certificate } from '../../core/pki/x509.ts'
import { quoteLiteral } from '../../src/audit/parquet.ts'
import { queryAudit } from '../audit/query.ts'
import { ParticipantClient } from '../simulator/client.ts'
import type { CliIo } from '../../src/cli/io.ts'
import { readInputFile, usageError } from '../../src/cli/io.ts'
import { runGatewayFlows } from '../demo/gateway.ts'
import { DEMO_DEFAULT_DIR } from '../demo/paths.ts'

export const DEMO_USAGE = `usage: pix-proxy demo [--dir ${DEMO_DEFAULT_DIR}] [--once] [--port 0] [--simulator-port 0] [--signer hsm|kms]
       pix-proxy demo --proxy-url URL --simulator-url URL --pki-dir DIR --lake DIR [--once]
                      [--client-cert FILE --client-key FILE] [--proxy-ca FILE]

  --dir DIR            start token, simulator and proxy in this process, state in DIR (reused when present);
                       without --once the stack stays up until Ctrl-C or SIGTERM (SIGHUP reloads the proxy's
                       mTLS certificate, as serve does)
  --port N             the proxy's port (default 0: any free one; the summary's "proxy" says which)
  --simulator-port N   the BACEN simulator's port, DICT and ICOM (default 0: any free one), e.g. for a
                       \`pix-proxy serve\` of your own against the demo's simulator and token (README)
  --signer hsm|kms     where the local stack's participant keys live: hsm (default: signing and mTLS keys in the
                       SoftHSM token) or kms (signing key in the local AWS KMS, mTLS key in the local Secrets
                       Manager, both on a local AWS endpoint in this process; SIGHUP re-reads the key secret)
  --once               exit after the sample flows with the JSON summary (traffic-only mode always does)
  --proxy-url URL      traffic only: send the sample flows to a running pix-proxy (docker-compose's traffic service)
  --simulator-url URL  the BACEN simulator, which the counterparty participant (${COUNTERPARTY_ISPB}) calls directly
  --pki-dir DIR        the PKI docker/local-init.sh made: hsm/ (pix-proxy hsm init: hsm.json, the token) and bacen/
                       (pix-proxy simulator --pki-only: ca.pem, participants/${COUNTERPARTY_ISPB}/, accepted.jsonl)
  --lake DIR           the audit store the proxy's rows reach (read only); the audit check counts this run's rows
  --client-cert FILE   with an https:// --proxy-url: the PEM client certificate presented to the proxy (its inbound
  --client-key FILE    mutual TLS: a certificate from its client CA, on its allowlist) and its PEM private key
  --proxy-ca FILE      with an https:// --proxy-url: the PEM CA bundle the proxy's server certificate must chain to
                       (default: Node's trusted CAs); the certificate is always verified`

/** How long the audit check waits for this run's rows: the Firehose path batches, delivers, then writes. */
const AUDIT_DEADLINE_MS = 20_000

interface FlowResult {
  readonly name: string
  readonly ok: boolean
  readonly status?: number
  readonly signature?: string
  readonly ms: number
  readonly detail?: string
}

interface Reply { status: number, headers: Record<string, string | string[] | undefined>, body: string }

interface TokenSigner { readonly xmlSigner: XmlSigner, readonly certificate: Certificate }

/** What the sample flows run against: the in-process stack, or services started elsewhere. */
interface FlowTarget {
  readonly proxyUrl: string
  /** TLS to the proxy: its CA and the client certificate it requires (undici connect options). */
  readonly proxyTls?: ProxyTls
  /** The other participant, calling the simulator directly over its own mTLS identity and signing key. */
  readonly counterparty: { readonly client: ParticipantClient, readonly xmlSigner: XmlSigner }
  /** Where the proxy's signing key is, for the flows' names ("the HSM", "KMS"). */
  readonly signedIn: string
  /** Runs `fn` with the participant's signing key and its certificate (the tamper check). */
  withSigner<T> (fn: (s: TokenSigner) => Promise<T>): Promise<T>
  /** Messages the simulator accepted during this run. */
  simulatorAccepted (): Promise<number>
  readonly simulatorLogFile: string
  /** Where the proxy's audit rows end up (ParquetSink's files, or the JSON lines the local Firehose delivers). */
  readonly lake: string
}

/** Runs `pix-proxy demo`; resolves to the exit code (0: every flow ok, 1: a flow failed, 2: usage). */
export async function demoCommand (argv: string[], io: CliIo): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    options: {
      dir: { type: 'string' },
      once: { type: 'boolean', default: false },
      'proxy-url': { type: 'string' },
      'simulator-url': { type: 'string' },
      'pki-dir': { type: 'string' },
      lake: { type: 'string' },
      port: { type: 'string' },
      'simulator-port': { type: 'string' },
      signer: { type: 'string' },
      'client-cert': { type: 'string' },
      'client-key': { type: 'string' },
      'proxy-ca': { type: 'string' }
    },
    strict: true
  })
  const log = (msg: string): void => { io.stderr.write(`[demo] ${msg}\n`) }
  const remote = { 'simulator-url': values['simulator-url'], 'pki-dir': values['pki-dir'], lake: values.lake }
  const tls = { 'client-cert': values['client-cert'], 'client-key': values['client-key'], 'proxy-ca': values['proxy-ca'] }
  if (values['proxy-url'] === undefined) {
    const stray = Object.entries({ ...remote, ...tls }).filter(([, v]) => v !== undefined).map(([k]) => `--${k}`)
    if (stray.length > 0) throw usageError(`${stray.join(', ')} only go with --proxy-url\n${DEMO_USAGE}`)
    return await inProcess({
      dir: resolve(values.dir ?? DEMO_DEFAULT_DIR),
      once: values.once,
      port: portOption('port', values.port),
      simulatorPort: portOption('simulator-port', values['simulator-port']),
      signer: signerOption(values.signer)
    }, io, log)
  }
  for (const local of ['dir', 'port', 'simulator-port', 'signer'] as const) {
    if (values[local] !== undefined) throw usageError(`--${local} is for a local stack; --proxy-url uses a running one: not both\n${DEMO_USAGE}`)
  }
  const missing = Object.entries(remote).filter(([, v]) => v === undefined).map(([k]) => `--${k}`)
  if (missing.length > 0) throw usageError(`--proxy-url needs ${missing.join(', ')}\n${DEMO_USAGE}`)
  const proxyUrl = urlOption('proxy-url', values['proxy-url'], ['http:', 'https:'])
  if ((tls['client-cert'] === undefined) !== (tls['client-key'] === undefined)) {
    throw usageError(`--client-cert and --client-key go together\n${DEMO_USAGE}`)
  }
  const tlsGiven = Object.entries(tls).filter(([, v]) => v !== undefined).map(([k]) => `--${k}`)
  if (tlsGiven.length > 0 && !proxyUrl.startsWith('https:')) {
    throw usageError(`${tlsGiven.join(', ')} ${tlsGiven.length > 1 ? 'need' : 'needs'} an https:// --proxy-url, got ${proxyUrl}\n${DEMO_USAGE}`)
  }
  return await trafficOnly({
    proxyUrl,
    proxyTls: await proxyTlsOptions(tls['client-cert'], tls['client-key'], tls['proxy-ca']),
    simulatorUrl: urlOption('simulator-url', values['simulator-url'] as string, ['https:']),
    pkiDir: resolve(values['pki-dir'] as string),
    lake: resolve(values.lake as string)
  }, io, log)
}

/** What the traffic's connections to an https:// proxy present and trust; undefined for plain HTTP. */
interface ProxyTls { readonly cert?: string, readonly key?: string, readonly ca?: string, readonly clientSubject?: string }

/**
 * Reads the client certificate, its key and the proxy's CA before anything is sent: a missing file is FILE_READ,
 * a certificate that is not the key's KEY_CERT_MISMATCH, rather than every flow failing at the handshake.
 */
async function proxyTlsOptions (certFile: string | undefined, keyFile: string | undefined, caFile: string | undefined): Promise<ProxyTls | undefined> {
  if (certFile === undefined && caFile === undefined) return undefined
  const text = async (file: string): Promise<string> => (await readInputFile(file)).toString('utf8')
  const ca = caFile === undefined ? {} : { ca: await text(caFile) }
  if (certFile === undefined || keyFile === undefined) return ca
  const cert = await text(certFile)
  const key = await text(keyFile)
  const certificate = parseCertificate(cert)
  let privateKey
  try {
    privateKey = createPrivateKey(key)
  } catch (err) {
    throw new PixProxyError(Errors.CONFIG_INVALID, [`--client-key ${keyFile} is not a PEM private key: ${(err as Error).message}`], { cause: err })
  }
  if (!certificateMatchesKey(certificate, privateKey)) throw new PixProxyError(Errors.KEY_CERT_MISMATCH, [`${certFile} (--client-key ${keyFile})`])
  return { ...ca, cert, key, clientSubject: certificate.subjectString }
}

function portOption (name: string, value: string | undefined): number {
  if (value === undefined) return 0
  const n = Number(value)
  if (!/^\d+$/.test(value) || n > 65535) throw usageError(`--${name} must be a port (0-65535, 0: any free one), got ${value}\n${DEMO_USAGE}`)
  return n
}

function signerOption (value: string | undefined): 'hsm' | 'kms' {
  if (value === undefined || value === 'hsm' || value === 'kms') return value ?? 'hsm'
  throw usageError(`--signer must be hsm or kms, got ${value}\n${DEMO_USAGE}`)
}

function urlOption (name: string, value: string, protocols: readonly string[]): string {
  let url: URL
  try {
    url = new URL(value)
  } catch {
    throw usageError(`--${name} must be a URL, got ${value}\n${DEMO_USAGE}`)
  }
  if (!protocols.includes(url.protocol)) throw usageError(`--${name} must be a ${protocols.join(' or ')} URL, got ${value}\n${DEMO_USAGE}`)
  return value.replace(/\/+$/, '')
}

interface InProcessOptions { readonly dir: string, readonly once: boolean, readonly port: number, readonly simulatorPort: number, readonly signer: 'hsm' | 'kms' }

async function inProcess (o: InProcessOptions, io: CliIo, log: (m: string) => void): Promise<number> {
  // SIGHUP's default action ends the process: from the start, the demo handles it as serve does (reloads the
  // proxy's mTLS certificate) once the stack is up, and logs it before.
  let stack: LocalStack | undefined
  const onHup = (): void => {
    if (stack === undefined) {
      log('SIGHUP while starting: ignored')
      return
    }
    log('SIGHUP: reloading the mTLS certificate')
    stack.proxy.upstreams.reloadCertificates().then(
      () => { log('mTLS certificate reloaded') },
      (err: unknown) => { log(`certificate reload refused, the previous certificate stays in use: ${(err as Error).message}`) })
  }
  process.on('SIGHUP', onHup)
  try {
    log(o.signer === 'kms'
      ? `starting the local AWS endpoint (KMS signing key, Secrets Manager mTLS key), BACEN simulator and pix-proxy (token CA and state in ${o.dir})`
      : `starting SoftHSM token, BACEN simulator and pix-proxy (state in ${o.dir})`)
    stack = await startLocalStack({
      dir: o.dir,
      longPollMs: 1_000,
      simulatorPort: o.simulatorPort,
      signer: o.signer,
      settings: { PIXPROXY_LISTEN_PORT: String(o.port) }
    })
    return await runInProcess(stack, o.dir, o.once, io, log)
  } finally {
    process.off('SIGHUP', onHup)
  }
}

async function runInProcess (stack: LocalStack, dir: string, once: boolean, io: CliIo, log: (m: string) => void): Promise<number> {
  log(`pix-proxy listening on ${stack.proxyUrl} for ISPB ${PROXY_ISPB}; simulator on ${stack.simulator.dictUrl}`)
  if (stack.kms !== null) log(`signing key in KMS (${stack.proxy.crypto.kmsSigner?.keyArn ?? '?'}), mTLS key from Secrets Manager (${stack.config.tls.keySecret?.secretId ?? '?'}) at ${stack.kms.aws.url}`)
  const target = stackTarget(stack)
  const results: FlowResult[] = []
  try {
    await runFlows(target, results, log)
  } finally {
    if (once || results.some((r) => !r.ok)) await stack.close()
  }
  // The inbound mTLS gateway (pix-proxy gateway) over its own ICP-Brasil-shaped PKI: its flows join the summary.
  results.push(...await runGatewayFlows(dir, stack.config.audit.parquetDir, log))
  const ok = results.every((r) => r.ok)
  const accepted = await target.simulatorAccepted()
  const signingKey = stack.proxy.crypto.kmsSigner?.keyArn ?? stack.hsm.signing.uri
  io.stdout.write(JSON.stringify({ ok, proxy: stack.proxyUrl, ispb: PROXY_ISPB, signer: stack.kms === null ? 'hsm' : 'kms', signingKey, simulatorAccepted: accepted, flows: results }) + '\n')
  if (!once && ok) {
    log('stack is up; try: curl -s ' + stack.proxyUrl + '/readyz ; Ctrl-C to stop')
    const signal = await new Promise<NodeJS.Signals>((resolve) => {
      const stop = (s: NodeJS.Signals): void => {
        process.off('SIGINT', stop)
        process.off('SIGTERM', stop)
        resolve(s)
      }
      process.on('SIGINT', stop)
      process.on('SIGTERM', stop)
    })
    log(`${signal}: stopping`)
    await stack.close()
  }
  return ok ? 0 : 1
}

function stackTarget (stack: LocalStack): FlowTarget {
  return {
    proxyUrl: stack.proxyUrl,
    counterparty: { client: stack.counterparty.client, xmlSigner: stack.counterparty.identity.signing.xmlSigner },
    signedIn: stack.kms === null ? 'the HSM' : 'KMS',
    // The proxy's own signer: the key in the token (through the session pool the proxy signs with) or in KMS.
    withSigner: async (fn) => await fn({ xmlSigner: stack.proxy.crypto.xmlSigner, certificate: stack.proxy.crypto.signingCertificate }),
    simulatorAccepted: async () => stack.simulator.app.simulator.log.length,
    simulatorLogFile: stack.simulatorLogFile,
    lake: stack.config.audit.parquetDir
  }
}

interface TrafficOptions { readonly proxyUrl: string, readonly proxyTls: ProxyTls | undefined, readonly simulatorUrl: string, readonly pkiDir: string, readonly lake: string }

async function trafficOnly (o: TrafficOptions, io: CliIo, log: (m: string) => void): Promise<number> {
  const hsmFile = join(o.pkiDir, 'hsm', 'hsm.json')
  let hsm: HsmInitResult
  try {
    hsm = JSON.parse((await readInputFile(hsmFile)).toString('utf8')) as HsmInitResult
  } catch (err) {
    if (err instanceof PixProxyError) throw err
    throw new PixProxyError(Errors.CONFIG_INVALID, [`${hsmFile} is not the JSON \`pix-proxy hsm init\` writes: ${(err as Error).message}`], { cause: err })
  }
  const fields = [hsm?.softhsmConf, hsm?.modulePath, hsm?.tokenLabel, hsm?.pinFile, hsm?.signing?.keyLabel, hsm?.signing?.certFile, hsm?.signing?.uri]
  if (!fields.every((f) => typeof f === 'string')) throw new PixProxyError(Errors.CONFIG_INVALID, [`${hsmFile} is not the JSON \`pix-proxy hsm init\` writes`])
  // SoftHSM2 reads its configuration from the environment when the module initialises: this command owns the
  // process (as `hsm info` does), the library code never reads the environment.
  process.env.SOFTHSM2_CONF = hsm.softhsmConf
  const target = await remoteTarget(o, hsm)
  const identity = o.proxyTls?.clientSubject === undefined ? '' : ` as ${o.proxyTls.clientSubject}`
  log(`sending the sample flows to pix-proxy at ${o.proxyUrl}${identity} (ISPB ${PROXY_ISPB}); counterparty ${COUNTERPARTY_ISPB} calls the simulator at ${o.simulatorUrl}`)
  const results: FlowResult[] = []
  try {
    await runFlows(target, results, log)
  } finally {
    await target.counterparty.client.close()
  }
  const ok = results.every((r) => r.ok)
  io.stdout.write(JSON.stringify({ ok, proxy: o.proxyUrl, ispb: PROXY_ISPB, signingKey: hsm.signing.uri, simulatorAccepted: await target.simulatorAccepted(), flows: results }) + '\n')
  return ok ? 0 : 1
}

/** Complete lines of the simulator's accepted-message log (one JSON object per line, appended across runs). */
async function lineCount (file: string): Promise<number> {
  const text = (await readInputFile(file)).toString('utf8')
  let n = 0
  for (let i = text.indexOf('\n'); i >= 0; i = text.indexOf('\n', i + 1)) n++
  return n
}

/**
 * The running services' side of the flows, from the shared PKI: everything is read (a missing file is a coded
 * FILE_READ error, never a freshly generated key that the simulator would not trust), nothing is written.
 */
async function remoteTarget (o: TrafficOptions, hsm: HsmInitResult): Promise<FlowTarget> {
  const bacen = join(o.pkiDir, 'bacen')
  const party = join(bacen, 'participants', COUNTERPARTY_ISPB)
  const text = async (file: string): Promise<string> => (await readInputFile(file)).toString('utf8')
  const xmlSigner = new XmlSigner({
    signer: SoftwareSigner.fromPem(await readInputFile(join(party, 'signing.key'))),
    certificate: parseCertificate(await readInputFile(join(party, 'signing.pem')))
  })
  const simulatorLogFile = join(bacen, 'accepted.jsonl')
  // The log outlives the simulator's runs (the volume persists): this run's messages are the lines it adds.
  const acceptedBefore = await lineCount(simulatorLogFile)
  const client = new ParticipantClient({
    url: o.simulatorUrl,
    ca: await text(join(bacen, 'ca.pem')),
    certPem: await text(join(party, 'tls.pem')),
    keyPem: await text(join(party, 'tls.key'))
  })
  return {
    proxyUrl: o.proxyUrl,
    ...(o.proxyTls === undefined ? {} : { proxyTls: o.proxyTls }),
    counterparty: { client, xmlSigner },
    signedIn: 'the HSM',
    withSigner: async (fn) => {
      const certificate = parseCertificate(await readInputFile(hsm.signing.certFile))
      // The token the proxy uses, opened as `hsm info` opens it; one session is enough for one signature.
      const store = await Pkcs11KeyStore.open({
        modulePath: hsm.modulePath,
        tokenLabel: hsm.tokenLabel,
        pin: await readPin({ pinSource: `file:${hsm.pinFile}` }),
        poolSize: 1
      })
      try {
        return await fn({ xmlSigner: new XmlSigner({ signer: await store.signer(hsm.signing.keyLabel), certificate }), certificate })
      } finally {
        await store.close()
      }
    },
    simulatorAccepted: async () => (await lineCount(simulatorLogFile)) - acceptedBefore,
    simulatorLogFile,
    lake: o.lake
  }
}

function tag (xml: string, name: string): string | undefined {
  return new RegExp(`<${name}>([^<]*)</${name}>`).exec(xml)?.[1]
}

/** A timestamp literal DuckDB compares with `request_date` (UTC wall time, the session's zone). */
function timestampLiteral (d: Date): string {
  return `TIMESTAMP ${quoteLiteral(d.toISOString().replace('T', ' ').replace('Z', ''))}`
}

async function runFlows (target: FlowTarget, results: FlowResult[], log: (m: string) => void): Promise<void> {
  // The audit store may hold earlier runs' rows (a reused --dir, compose's lake volume): this run's are those
  // received from now on that carry the request ids this run sent (the proxy takes x-request-id as correlation id).
  const runStart = new Date()
  const sent: string[] = []
  // Certificate verification stays on: with --proxy-ca only that CA is trusted, otherwise Node's own.
  const { cert, key, ca } = target.proxyTls ?? {}
  const agent = new Agent({
    connect: {
      ...(cert === undefined || key === undefined ? {} : { cert, key }),
      ...(ca === undefined ? {} : { ca })
    }
  })
  const call = async (method: 'GET' | 'POST' | 'DELETE', path: string, body?: string, headers: Record<string, string> = {}): Promise<Reply> => {
    const id = randomUUID()
    sent.push(id)
    const r = await request(target.proxyUrl + path, {
      dispatcher: agent,
      method,
      headers: { 'x-request-id': id, ...(body === undefined ? {} : { 'content-type': 'application/xml' }), ...headers },
      ...(body === undefined ? {} : { body })
    })
    return { status: r.statusCode, headers: r.headers, body: await r.body.text() }
  }
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

  try {
    // DICT: our participant registers a key; the counterparty registers one we then look up and claim.
    await flow(`DICT CreateEntry (signed in ${target.signedIn})`, async () => {
      const r = await call('POST', '/api/v2/entries/', createEntryRequest().xml)
      return { ok: r.status === 201 && sig(r) === 'VALID', status: r.status, signature: sig(r) }
    })
    const theirKey = createEntryRequest({ owner: SAMPLE_PAYEE, keyType: 'EMAIL' })
    const direct = await target.counterparty.client.request('POST', '/api/v2/entries/', {
      headers: { 'content-type': 'application/xml' },
      body: await target.counterparty.xmlSigner.sign(theirKey.xml, 'dict')
    })
    if (direct.status !== 201) log(`counterparty could not create its entry: ${direct.status}`)
    await flow('DICT GetEntry (counterparty key)', async () => {
      const r = await call('GET', `/api/v2/entries/${encodeURIComponent(theirKey.key)}`, undefined, {
        'PI-RequestingParticipant': PROXY_ISPB,
        'PI-PayerId': '52998224725',
        'PI-EndToEndId': newEndToEndId(PROXY_ISPB)
      })
      return { ok: r.status === 200 && sig(r) === 'VALID' && r.body.includes(COUNTERPARTY_ISPB), status: r.status, signature: sig(r) }
    })
    await flow('DICT CreateClaim (portability of the counterparty key)', async () => {
      const r = await call('POST', '/api/v2/claims/', createClaimRequest({ key: theirKey.key, keyType: 'EMAIL', type: 'PORTABILITY', owner: { ...SAMPLE_PAYEE, ispb: PROXY_ISPB } }).xml)
      return { ok: r.status === 201 && sig(r) === 'VALID', status: r.status, signature: sig(r), ...(r.status === 201 ? {} : { detail: r.body.slice(0, 300) }) }
    })
    await flow('DICT ListClaims', async () => {
      const r = await call('GET', `/api/v2/claims/?Participant=${PROXY_ISPB}&IsClaimer=true&Limit=10`)
      return { ok: r.status === 200 && sig(r) === 'VALID', status: r.status, signature: sig(r) }
    })

    // SPI: a payment, and its settlement read back from our ICOM stream.
    const payment = pacs008({ amounts: [150.75] })
    await flow('SPI pacs.008 POST /api/v1/in/{ispb}/msgs', async () => {
      const r = await call('POST', `/api/v1/in/${PROXY_ISPB}/msgs`, payment.xml)
      return { ok: r.status === 201 && typeof r.headers['pi-resourceid'] === 'string', status: r.status }
    })
    await flow('SPI stream: pacs.002 ACSC for the payment', async () => {
      let path = `/api/v1/out/${PROXY_ISPB}/stream/start`
      const deadline = Date.now() + 10_000
      while (Date.now() < deadline) {
        const r = await call('GET', path, undefined, { accept: 'multipart/mixed' })
        const next = r.headers['pi-pull-next']
        if (r.status === 200 && r.body.includes(payment.endToEndIds[0] as string)) {
          const status = tag(r.body, 'TxSts')
          if (typeof next === 'string') await call('DELETE', next)
          return { ok: status === 'ACSC' && sig(r) === 'VALID', status: r.status, signature: sig(r), detail: `TxSts ${status ?? '?'}` }
        }
        if (typeof next !== 'string') return { ok: false, status: r.status, detail: 'no PI-Pull-Next' }
        path = next
      }
      return { ok: false, detail: 'no pacs.002 within 10 s' }
    })
    await flow('SPI pibr.001 echo', async () => {
      const r = await call('POST', `/api/v1/in/${PROXY_ISPB}/msgs`, pibr001().xml)
      return { ok: r.status === 201, status: r.status }
    })
  } finally {
    await agent.close()
  }

  // The signing core on its own: a message altered after signing is caught, with the reference that broke.
  await flow('tampered pacs.008 detected (DIGEST_MISMATCH on the Document)', async () => await target.withSigner(async ({ xmlSigner, certificate }) => {
    const signed = await xmlSigner.sign(pacs008({ amounts: [10] }).xml, 'spi')
    const r = verifyXml(signed.replace('>10.00<', '>10000.00<'), { trustStore: new TrustStore([certificate]) })
    const bad = r.references.filter((x) => !x.digestValid).map((x) => x.target)
    return { ok: r.code === 'DIGEST_MISMATCH' && bad.join() === 'Document', detail: `verifier says ${r.code}, failed reference: ${bad.join()}` }
  }))
  log(`simulator accepted ${await target.simulatorAccepted()} messages (log: ${target.simulatorLogFile})`)

  // The audit trail: every call above is a row; once shipped, SQL over the local store.
  await flow('audit rows for every call, queried with DuckDB', async () => {
    const lake = target.lake
    const wanted = new Set(sent)
    // DISTINCT: delivery is at least once, a row may arrive twice.
    const sql = 'SELECT DISTINCT id, correlation_id, system, message_type, response_status_code AS status, response_signature_code AS signature ' +
      `FROM audit WHERE request_date >= ${timestampLiteral(runStart)} AND correlation_id IN (${sent.map(quoteLiteral).join(', ')})`
    const deadline = Date.now() + AUDIT_DEADLINE_MS
    let rows: Array<Record<string, unknown>> = []
    const found = new Set<string>()
    while (sent.length > 0) {
      rows = []
      for await (const r of queryAudit(lake, sql)) rows.push(r)
      found.clear()
      for (const r of rows) if (wanted.has(String(r.correlation_id))) found.add(String(r.correlation_id))
      if (found.size === wanted.size || Date.now() > deadline) break
      await new Promise((resolve) => setTimeout(resolve, 200))
    }
    const groups = new Map<string, number>()
    for (const r of rows) {
      const k = `${String(r.system)} ${String(r.message_type)} → ${String(r.status)} ${String(r.signature)}`
      groups.set(k, (groups.get(k) ?? 0) + 1)
    }
    for (const [k, n] of [...groups].sort(([a], [b]) => a.localeCompare(b))) log(`  audit: ${k} ×${n}`)
    log(`  try: node dist/tools/cli/main.js audit query --dir ${lake} "SELECT request_date, system, message_type, response_status_code FROM audit ORDER BY request_date"`)
    return { ok: found.size === wanted.size && wanted.size > 0, detail: `${found.size} of ${wanted.size} calls audited in ${lake}` }
  })
}
