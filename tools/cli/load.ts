/**
 * `pix-proxy load`: drives PIX traffic at pix-proxy (or straight at the simulator, signing and doing mTLS itself)
 * and reports throughput, latency percentiles per operation, errors by code and signature failures. A thin layer
 * over tools/load (runLoad); docs/load-testing.md explains the model and the figures.
 *
 * Exit 0 when every request succeeded (no error, nothing dropped, no signature failure), 1 otherwise, 2 for
 * usage errors. The report goes to stdout (text, or one JSON object with --json); progress to stderr.
 */
import { existsSync } from 'node:fs'
import { writeFile } from 'node:fs/promises'
import { dirname, join, resolve } from 'node:path'
import { parseArgs } from 'node:util'
import { SoftwareSigner } from '../../core/signer.ts'
import { parseCertificate, parseCertificates } from '../../core/pki/x509.ts'
import { SAMPLE_PAYEE, SAMPLE_PAYER } from '../samples/messages.ts'
import { XmlSigner } from '../../core/xmldsig/sign.ts'
import { TrustStore } from '../../core/xmldsig/truststore.ts'
import { renderHtmlReport } from '../load/chart.ts'
import type { LoadModel, Tick } from '../load/engine.ts'
import { DEFAULT_MIX, NEEDS_COUNTERPARTY, OPERATIONS, parseMix } from '../load/flows.ts'
import type { Operation } from '../load/flows.ts'
import { formatReport, runLoad } from '../load/run.ts'
import type { LoadReport } from '../load/run.ts'
import { resolvePkiDir } from '../load/pki-dir.ts'
import { createDirectTransport, createProxyTransport } from '../load/transport.ts'
import type { LoadTransport } from '../load/transport.ts'
import type { CliIo } from '../../src/cli/io.ts'
import { readInputFile, usageError } from '../../src/cli/io.ts'

export const LOAD_USAGE = `usage: pix-proxy load [--target proxy|simulator] [--url URL] [--rate N | --concurrency N] [--duration 30s] [--count N]
                      [--mix ${OPERATIONS.map((o) => `${o}=${DEFAULT_MIX[o]}`).join(',')}]
                      [--ispb ISPB] [--pki DIR] [--counterparty ISPB] [--simulator-url URL]
                      [--key FILE --cert FILE] [--signing-key FILE --signing-cert FILE] [--ca FILE] [--bacen-certs FILE]
                      [--max-outstanding 1000] [--timeout 30s] [--drain 10s] [--stream-readers 2]
                      [--json] [--chart FILE.html] [--allow-remote]

  --target proxy      pix-proxy over HTTP (default URL http://127.0.0.1:8080); it signs and verifies
  --target simulator  the simulator over mutual TLS (default URL https://127.0.0.1:16522); this process signs
                      every request and verifies every answer, as a bank core without a proxy does
  --rate N            open model: N requests/s on a fixed schedule, latency from the scheduled time (default 50)
  --concurrency N     closed model: N workers sending back to back
  --pki DIR           a simulator PKI directory (pix-proxy simulator --dir DIR), or a demo directory
                      (pix-proxy demo --dir DIR: its bacen/): the CA, BACEN's signing
                      certificates and participants/<ISPB>/ identities; the --counterparty participant (default
                      ${SAMPLE_PAYEE.ispb}) prepares the keys and claims of get-entry, create-claim and confirm-claim
  only loopback targets unless --allow-remote`

/** `30s`, `500ms`, `2m`, `1h`, or a number of seconds. */
export function parseDuration (text: string, name: string): number {
  const m = /^(\d+(?:\.\d+)?)(ms|s|m|h)?$/.exec(text.trim())
  if (m === null) throw usageError(`--${name} must be a duration such as 30s, 500ms, 2m; got ${text}`)
  const n = Number(m[1])
  const ms = n * ({ ms: 1, s: 1000, m: 60_000, h: 3_600_000 }[m[2] as 'ms' | 's' | 'm' | 'h' ?? 's'] ?? 1000)
  if (!(ms > 0)) throw usageError(`--${name} must be above zero`)
  return ms
}

function positive (text: string | undefined, name: string, integer: boolean): number | undefined {
  if (text === undefined) return undefined
  const n = Number(text)
  if (!Number.isFinite(n) || n <= 0 || (integer && !Number.isInteger(n))) throw usageError(`--${name} must be a positive ${integer ? 'integer' : 'number'}, got ${text}`)
  return n
}

function ispbOption (text: string, name: string): string {
  if (!/^[0-9A-Za-z]{8}$/.test(text)) throw usageError(`--${name} must be an ISPB (8 alphanumerics), got ${text}`)
  return text
}

interface Identity { tlsKey: string, tlsCert: string, signingKey: string, signingCert: string }

async function readText (file: string): Promise<string> {
  return (await readInputFile(file)).toString('utf8')
}

/** A participant's files in a simulator PKI directory (tools/simulator/pki.ts loadOrCreateSimulatorPki). */
function pkiIdentity (pki: string, ispb: string): Identity {
  const dir = join(pki, 'participants', ispb)
  return { tlsKey: join(dir, 'tls.key'), tlsCert: join(dir, 'tls.pem'), signingKey: join(dir, 'signing.key'), signingCert: join(dir, 'signing.pem') }
}

async function directTransport (o: { url: string, ispb: string, id: Identity, ca: string, bacenCerts: string[], allowRemote: boolean }): Promise<LoadTransport> {
  const signingCert = parseCertificate(await readInputFile(o.id.signingCert))
  const xmlSigner = new XmlSigner({ signer: SoftwareSigner.fromPem(await readInputFile(o.id.signingKey)), certificate: signingCert })
  const bacen = (await Promise.all(o.bacenCerts.map(async (f) => parseCertificates(await readText(f))))).flat()
  if (bacen.length === 0) throw usageError(`no BACEN signing certificate in ${o.bacenCerts.join(', ')}`)
  return await createDirectTransport({
    url: o.url,
    ispb: o.ispb,
    xmlSigner,
    bacenTrust: new TrustStore(bacen),
    tls: { ca: await readText(o.ca), certPem: await readText(o.id.tlsCert), keyPem: await readText(o.id.tlsKey) },
    allowRemote: o.allowRemote
  })
}

function progressPrinter (io: CliIo): (tick: Tick) => void {
  const tty = (io.stderr as { isTTY?: boolean }).isTTY === true
  return (tick) => {
    const s = tick.last
    const line = `[load] ${(tick.elapsedMs / 1000).toFixed(0)}s  ${s.ok + s.errors}/s  ok ${tick.totals.ok}  errors ${tick.totals.errors}  dropped ${tick.totals.dropped}  sig.fail ${tick.totals.signatureFailures}  p99(1s) ${s.p99 === null ? '-' : `${s.p99.toFixed(1)} ms`}  in flight ${tick.outstanding}`
    if (tty) io.stderr.write(`\r\x1b[K${line}`)
    else if (s.t % 5 === 4) io.stderr.write(line + '\n')
  }
}

/** Runs `pix-proxy load`; `opts.signal` stops it early (tests; the CLI also stops on SIGINT/SIGTERM). */
export async function loadCommand (argv: string[], io: CliIo, opts: { signal?: AbortSignal } = {}): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    options: {
      target: { type: 'string', default: 'proxy' },
      url: { type: 'string' },
      rate: { type: 'string' },
      concurrency: { type: 'string' },
      duration: { type: 'string', default: '30s' },
      count: { type: 'string' },
      mix: { type: 'string' },
      ispb: { type: 'string', default: SAMPLE_PAYER.ispb },
      pki: { type: 'string' },
      counterparty: { type: 'string' },
      'simulator-url': { type: 'string' },
      key: { type: 'string' },
      cert: { type: 'string' },
      'signing-key': { type: 'string' },
      'signing-cert': { type: 'string' },
      ca: { type: 'string' },
      'bacen-certs': { type: 'string' },
      'max-outstanding': { type: 'string' },
      timeout: { type: 'string' },
      drain: { type: 'string' },
      'stream-readers': { type: 'string' },
      json: { type: 'boolean', default: false },
      chart: { type: 'string' },
      'allow-remote': { type: 'boolean', default: false },
      help: { type: 'boolean', default: false }
    },
    strict: true,
    allowPositionals: false
  })
  if (values.help) {
    io.stdout.write(LOAD_USAGE + '\n')
    return 0
  }
  const target = values.target
  if (target !== 'proxy' && target !== 'simulator') throw usageError(`--target must be proxy or simulator, got ${target}\n${LOAD_USAGE}`)
  if (values.rate !== undefined && values.concurrency !== undefined) throw usageError('give --rate (open model) or --concurrency (closed model), not both')
  const concurrency = positive(values.concurrency, 'concurrency', true)
  const model: LoadModel = concurrency !== undefined
    ? { kind: 'closed', concurrency }
    : { kind: 'open', ratePerSec: positive(values.rate, 'rate', false) ?? 50 }
  const durationMs = parseDuration(values.duration, 'duration')
  const count = positive(values.count, 'count', true)
  const maxOutstanding = positive(values['max-outstanding'], 'max-outstanding', true)
  const requestTimeoutMs = values.timeout === undefined ? undefined : parseDuration(values.timeout, 'timeout')
  const drainMs = values.drain === undefined ? undefined : parseDuration(values.drain, 'drain')
  const streamReaders = positive(values['stream-readers'], 'stream-readers', true)
  if (streamReaders !== undefined && streamReaders > 6) throw usageError('--stream-readers must be at most 6 (ICOM\'s limit per participant)')
  const ispb = ispbOption(values.ispb, 'ispb')
  const counterpartyIspb = ispbOption(values.counterparty ?? (ispb === SAMPLE_PAYEE.ispb ? SAMPLE_PAYER.ispb : SAMPLE_PAYEE.ispb), 'counterparty')
  const pkiArg = values.pki === undefined ? undefined : resolve(values.pki)
  const pki = pkiArg === undefined ? undefined : resolvePkiDir(pkiArg)
  if (pkiArg !== undefined && pki === undefined) throw usageError(`--pki ${pkiArg} is not a simulator PKI directory (no ca.pem) nor a demo directory (no bacen/ca.pem): create one with pix-proxy simulator --dir, or pix-proxy demo --dir`)
  const chart = values.chart === undefined ? undefined : resolve(values.chart)
  if (chart !== undefined && !existsSync(dirname(chart))) throw usageError(`--chart: the directory ${dirname(chart)} does not exist`)
  const allowRemote = values['allow-remote']
  const url = values.url ?? (target === 'proxy' ? 'http://127.0.0.1:8080' : 'https://127.0.0.1:16522')
  const simulatorUrl = values['simulator-url'] ?? (target === 'simulator' ? url : 'https://127.0.0.1:16522')

  let mix: Record<Operation, number>
  const canPrepare = pki !== undefined && existsSync(join(pki, 'participants', counterpartyIspb))
  if (values.mix !== undefined) {
    try {
      mix = parseMix(values.mix)
    } catch (err) {
      throw usageError(`--mix: ${(err as Error).message}`)
    }
    const needing = OPERATIONS.filter((op) => mix[op] > 0 && NEEDS_COUNTERPARTY.has(op))
    if (needing.length > 0 && !canPrepare) {
      throw usageError(`${needing.join(', ')} need a counterparty participant: give --pki DIR holding participants/${counterpartyIspb}/ (pix-proxy simulator --dir DIR), or leave them out of --mix`)
    }
  } else {
    mix = { ...DEFAULT_MIX }
    if (!canPrepare) {
      for (const op of NEEDS_COUNTERPARTY) mix[op] = 0
      io.stderr.write(`[load] no counterparty (--pki): ${[...NEEDS_COUNTERPARTY].join(', ')} left out of the mix\n`)
    }
  }

  const bacenCerts = values['bacen-certs'] !== undefined
    ? [values['bacen-certs']]
    : pki === undefined ? [] : [join(pki, 'bcb-signing.pem'), join(pki, 'bcb-signing-expired.pem')].filter((f) => existsSync(f))
  const ca = values.ca ?? (pki === undefined ? undefined : join(pki, 'ca.pem'))

  const transports: LoadTransport[] = []
  const stop = new AbortController()
  const onSignal = (): void => { stop.abort() }
  process.once('SIGINT', onSignal)
  process.once('SIGTERM', onSignal)
  const onAbort = (): void => { stop.abort() }
  opts.signal?.addEventListener('abort', onAbort, { once: true })
  let report: LoadReport
  try {
    let targetTransport: LoadTransport
    if (target === 'proxy') {
      targetTransport = await createProxyTransport({ url, ispb, allowRemote })
    } else {
      const own = pki === undefined ? undefined : pkiIdentity(pki, ispb)
      if (own !== undefined && values.key === undefined && !existsSync(own.tlsKey)) {
        throw usageError(`--pki ${pki} has no identity for ${ispb} (participants/${ispb}/): in a demo directory that participant's keys are in the HSM; use --target proxy, or give --key and --cert`)
      }
      const tlsKey = values.key ?? own?.tlsKey
      const tlsCert = values.cert ?? own?.tlsCert
      const id: Partial<Identity> = {
        tlsKey,
        tlsCert,
        signingKey: values['signing-key'] ?? own?.signingKey ?? tlsKey,
        signingCert: values['signing-cert'] ?? own?.signingCert ?? tlsCert
      }
      const missing = [['--key', id.tlsKey], ['--cert', id.tlsCert], ['--ca', ca]].filter(([, v]) => v === undefined).map(([n]) => n)
      if (missing.length > 0 || bacenCerts.length === 0) {
        throw usageError(`--target simulator signs and does mTLS itself: give --pki DIR, or ${[...missing, ...(bacenCerts.length === 0 ? ['--bacen-certs'] : [])].join(', ')}`)
      }
      targetTransport = await directTransport({ url, ispb, id: id as Identity, ca: ca as string, bacenCerts, allowRemote })
    }
    transports.push(targetTransport)
    let counterparty: LoadTransport | undefined
    if (OPERATIONS.some((op) => mix[op] > 0 && NEEDS_COUNTERPARTY.has(op)) && pki !== undefined) {
      counterparty = await directTransport({ url: simulatorUrl, ispb: counterpartyIspb, id: pkiIdentity(pki, counterpartyIspb), ca: ca as string, bacenCerts, allowRemote })
      transports.push(counterparty)
    }
    const progress = progressPrinter(io)
    report = await runLoad({
      target: targetTransport,
      ...(counterparty === undefined ? {} : { counterparty }),
      model,
      durationMs,
      mix,
      signal: stop.signal,
      onProgress: progress,
      prepareHint: `the counterparty ${counterpartyIspb} prepares over ${simulatorUrl}: is the simulator there (--simulator-url), and does it know ${counterpartyIspb} and ${ispb}?`,
      onPrepared: (p) => { io.stderr.write(`[load] prepared ${JSON.stringify(p.items)} with ${p.requests} requests in ${(p.durationMs / 1000).toFixed(1)} s; measuring ${model.kind === 'open' ? `${model.ratePerSec}/s` : `${model.concurrency} workers`} for ${durationMs / 1000} s\n`) },
      ...(count === undefined ? {} : { count }),
      ...(maxOutstanding === undefined ? {} : { maxOutstanding }),
      ...(requestTimeoutMs === undefined ? {} : { requestTimeoutMs }),
      ...(drainMs === undefined ? {} : { drainMs }),
      ...(streamReaders === undefined ? {} : { streamReaders })
    })
    if ((io.stderr as { isTTY?: boolean }).isTTY === true) io.stderr.write('\n')
  } finally {
    process.off('SIGINT', onSignal)
    process.off('SIGTERM', onSignal)
    opts.signal?.removeEventListener('abort', onAbort)
    await Promise.all(transports.map(async (t) => { await t.close() }))
  }
  if (chart !== undefined) {
    await writeFile(chart, renderHtmlReport(report))
    io.stderr.write(`[load] chart written to ${chart}\n`)
  }
  io.stdout.write(values.json ? JSON.stringify(report) + '\n' : formatReport(report))
  const t = report.totals
  return t.errors === 0 && t.dropped === 0 && t.signatureFailures === 0 ? 0 : 1
}
