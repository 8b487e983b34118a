/**
 * `pix-proxy simulator --dir DIR [--port N]`: runs the BACEN simulator (tools/simulator/) locally. Generates its test PKI
 * in DIR the first time (BCB TLS certificate for dict-h/icom-h.pi.rsfn.net.br, localhost and 127.0.0.1, BCB signing
 * certificates, and each participant's TLS client and signing certificates from one CA) and reuses it afterwards,
 * prints one JSON line with the URLs and the file paths a proxy needs, and serves until SIGINT/SIGTERM.
 *
 * Participants: --participant ISPB (repeatable) and/or --participants FILE, a JSON array of ISPBs or of
 * { "ispb", "signingCertFiles"?: [PEM paths], "tlsCertFiles"?: [PEM paths] } for participants that bring their own
 * certificates (e.g. an HSM-backed signing key). Default: 99999004 and 99999010 (the sample payer and payee).
 * Certificates a participant brings were issued by another CA (`pix-proxy hsm init` makes one per token):
 * --client-ca FILE (repeatable) makes the TLS server accept client certificates from that CA too.
 *
 * --pki-only creates (or loads) the PKI in DIR, prints the file paths and exits without serving: the one-shot
 * `init` service of docker-compose.yml prepares every certificate before the services that read them start.
 */
import { readFile } from 'node:fs/promises'
import { join, resolve } from 'node:path'
import { parseArgs } from 'node:util'
import { Errors, PixProxyError } from '../../core/errors.ts'
import { parseCertificates } from '../../core/pki/x509.ts'
import { SAMPLE_PAYEE, SAMPLE_PAYER } from '../samples/messages.ts'
import { startSimulator } from '../simulator/server.ts'
import type { SimulatorParticipant } from '../simulator/app.ts'
import { BCB_HOSTS, loadOrCreateSimulatorPki } from '../simulator/pki.ts'
import type { CliIo } from '../../src/cli/io.ts'
import { readInputFile, usageError } from '../../src/cli/io.ts'

export const SIMULATOR_USAGE = `usage: pix-proxy simulator --dir DIR [--port N] [--host 127.0.0.1] [--participant ISPB]... [--participants FILE]
                           [--client-ca FILE]... [--open] [--long-poll-ms 5000] [--settle-delay-ms 0] [--latency-ms 0]
                           [--log-file FILE] [--state-file FILE]
       pix-proxy simulator --dir DIR --pki-only [--participant ISPB]... [--participants FILE]`

interface ParticipantSpec {
  ispb: string
  signingCertFiles?: string[]
  tlsCertFiles?: string[]
}

async function readParticipants (file: string): Promise<ParticipantSpec[]> {
  let data: unknown
  try {
    data = JSON.parse(await readFile(file, 'utf8'))
  } catch (err) {
    throw new PixProxyError(Errors.SIMULATOR_CONFIG, [`cannot read participants from ${file}: ${(err as Error).message}`], { cause: err })
  }
  if (!Array.isArray(data)) throw new PixProxyError(Errors.SIMULATOR_CONFIG, [`${file} must hold a JSON array`])
  return data.map((p: unknown): ParticipantSpec => {
    if (typeof p === 'string') return { ispb: p }
    const o = p as Partial<ParticipantSpec>
    if (typeof o?.ispb !== 'string') throw new PixProxyError(Errors.SIMULATOR_CONFIG, [`every participant in ${file} needs an "ispb"`])
    return { ispb: o.ispb, ...(o.signingCertFiles === undefined ? {} : { signingCertFiles: o.signingCertFiles }), ...(o.tlsCertFiles === undefined ? {} : { tlsCertFiles: o.tlsCertFiles }) }
  })
}

/** The PEM text of every --client-ca bundle, each checked to hold certificates that parse. */
async function readClientCas (files: readonly string[]): Promise<string> {
  const pems: string[] = []
  for (const file of files) {
    const pem = (await readInputFile(file)).toString('utf8')
    try {
      parseCertificates(pem)
    } catch (err) {
      throw new PixProxyError(Errors.SIMULATOR_CONFIG, [`--client-ca ${file}: ${(err as Error).message}`], { cause: err })
    }
    pems.push(pem.trim())
  }
  return pems.join('\n')
}

function intOption (name: string, value: string | undefined, fallback: number): number {
  if (value === undefined) return fallback
  const n = Number(value)
  if (!Number.isInteger(n) || n < 0) throw usageError(`--${name} must be a non-negative integer, got ${value}`)
  return n
}

/**
 * Runs until SIGINT/SIGTERM or until `opts.signal` aborts (tests). Exit code 0 after a clean shutdown.
 */
export async function simulatorCommand (argv: string[], io: CliIo, opts: { signal?: AbortSignal } = {}): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    options: {
      dir: { type: 'string' },
      port: { type: 'string' },
      host: { type: 'string', default: '127.0.0.1' },
      participant: { type: 'string', multiple: true },
      participants: { type: 'string' },
      'client-ca': { type: 'string', multiple: true },
      'pki-only': { type: 'boolean', default: false },
      open: { type: 'boolean', default: false },
      'long-poll-ms': { type: 'string' },
      'settle-delay-ms': { type: 'string' },
      'latency-ms': { type: 'string' },
      'log-file': { type: 'string' },
      'state-file': { type: 'string' }
    },
    strict: true
  })
  if (values.dir === undefined) throw usageError(`--dir is required\n${SIMULATOR_USAGE}`)
  const dir = resolve(values.dir)
  const port = intOption('port', values.port, 16522)
  const specs: ParticipantSpec[] = [
    ...(values.participant ?? []).map((ispb) => ({ ispb })),
    ...(values.participants === undefined ? [] : await readParticipants(values.participants))
  ]
  if (specs.length === 0) specs.push({ ispb: SAMPLE_PAYER.ispb }, { ispb: SAMPLE_PAYEE.ispb })
  const issued = specs.filter((s) => s.signingCertFiles === undefined).map((s) => s.ispb)
  const { pki, files } = await loadOrCreateSimulatorPki(dir, issued)
  if (values['pki-only']) {
    io.stdout.write(JSON.stringify({
      dir,
      hosts: BCB_HOSTS,
      caCert: files.caCert,
      bcb: { tlsCert: files.bcbTlsCert, signingCert: files.bcbSigningCert, expiredSigningCert: files.bcbExpiredSigningCert },
      participants: files.participants
    }) + '\n')
    return 0
  }
  const extraClientCas = await readClientCas(values['client-ca'] ?? [])

  const participants: SimulatorParticipant[] = []
  for (const s of specs) {
    const own = pki.participants.get(s.ispb)
    const signingCerts = s.signingCertFiles === undefined
      ? (own === undefined ? [] : [own.signing.certificate])
      : (await Promise.all(s.signingCertFiles.map(async (f) => parseCertificates(await readFile(f, 'utf8'))))).flat()
    const tlsCerts = s.tlsCertFiles === undefined
      ? (own === undefined ? [] : [own.tls.certificate])
      : (await Promise.all(s.tlsCertFiles.map(async (f) => parseCertificates(await readFile(f, 'utf8'))))).flat()
    participants.push({
      ispb: s.ispb,
      signingCerts,
      ...(values.open ? {} : { tlsCertFingerprints256: tlsCerts.map((c) => c.fingerprint256) })
    })
  }

  const logFile = values['log-file'] === undefined ? join(dir, 'accepted.jsonl') : resolve(values['log-file'])
  const base = pki.simulatorOptions()
  const sim = await startSimulator({
    ...base,
    tls: { ...base.tls, clientCaPem: extraClientCas === '' ? base.tls.clientCaPem : base.tls.clientCaPem + '\n' + extraClientCas },
    participants,
    host: values.host,
    dictPort: port,
    spi: { longPollMs: intOption('long-poll-ms', values['long-poll-ms'], 5000), settleDelayMs: intOption('settle-delay-ms', values['settle-delay-ms'], 0) },
    faults: { latencyMs: intOption('latency-ms', values['latency-ms'], 0) },
    logFile,
    // The file is this process's record; nothing reads a copy in its memory.
    logInMemory: false,
    ...(values['state-file'] === undefined ? {} : { dict: { stateFile: resolve(values['state-file']) } })
  })

  io.stdout.write(JSON.stringify({
    dictUrl: sim.dictUrl,
    spiUrl: sim.spiUrl,
    hosts: BCB_HOSTS,
    dir,
    caCert: files.caCert,
    bcb: { tlsCert: files.bcbTlsCert, signingCert: files.bcbSigningCert, expiredSigningCert: files.bcbExpiredSigningCert },
    participants: Object.fromEntries(participants.map((p) => [p.ispb, files.participants[p.ispb] ?? { signingCerts: p.signingCerts.map((c) => c.subjectString) }])),
    identifiedBy: values.open ? 'request' : 'tls-fingerprint',
    logFile
  }) + '\n')

  await new Promise<void>((resolveStop) => {
    const stop = (): void => {
      process.off('SIGINT', stop)
      process.off('SIGTERM', stop)
      opts.signal?.removeEventListener('abort', stop)
      resolveStop()
    }
    process.once('SIGINT', stop)
    process.once('SIGTERM', stop)
    if (opts.signal?.aborted === true) stop()
    else opts.signal?.addEventListener('abort', stop)
  })
  io.stderr.write('[simulator] shutting down\n')
  await sim.close()
  return 0
}
