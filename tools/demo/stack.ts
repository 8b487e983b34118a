/**
 * The whole local stack in one process, as the README's main command and the end-to-end tests run it:
 *   a SoftHSM2 token holding the participant's non-extractable signing and mTLS keys (hsm init),
 *   the BACEN simulator (mutual TLS, DICT v2 and ICOM) with its own test PKI and signing key,
 *   pix-proxy configured exactly as in production (HSM signer, libp11 engine for mTLS, BACEN trust store),
 *   and a second participant that talks to the simulator directly (the counterparty of claims and payments).
 * With `signer: 'kms'` the proxy is configured as the serverless variant instead: its signing key in the local KMS and
 * its mTLS key in the local Secrets Manager (tools/demo/kms-backend.ts), both served by the local AWS endpoint.
 * BACEN host names resolve to 127.0.0.1 inside the proxy only; nothing leaves loopback.
 */
import { spawn } from 'node:child_process'
import type { ChildProcess } from 'node:child_process'
import { existsSync } from 'node:fs'
import { mkdir, readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { createInterface } from 'node:readline'
import type { LookupFunction } from 'node:net'
import type { FastifyInstance } from 'fastify'
import { initSoftHsm } from '../token/hsm-init.ts'
import type { HsmInitResult } from '../token/hsm-init.ts'
import { parseCertificate } from '../../core/pki/x509.ts'
import { loadConfig } from '../../src/config.ts'
import type { Config } from '../../src/config.ts'
import { buildApp } from '../../src/app.ts'
import type { AppOptions } from '../../src/app.ts'
import { createSimulatorPki } from '../simulator/pki.ts'
import type { ParticipantIdentity, SimulatorPki } from '../simulator/pki.ts'
import { startSimulator } from '../simulator/server.ts'
import type { RunningSimulator } from '../simulator/server.ts'
import type { FaultConfig } from '../simulator/app.ts'
import { ParticipantClient } from '../simulator/client.ts'
import { writeLoadPki } from '../load/pki-dir.ts'
import { startKmsBackend } from './kms-backend.ts'
import type { KmsBackend } from './kms-backend.ts'
import type { SecretRefreshScheduler } from '../../src/plugins/upstreams.ts'

export const PROXY_ISPB = '99999004'
export const COUNTERPARTY_ISPB = '99999010'

export interface LocalStackOptions {
  /** Where the token, certificates and logs live (reused when present). */
  readonly dir: string
  readonly invalidSignaturePolicy?: 'reject' | 'flag'
  readonly faults?: FaultConfig
  readonly longPollMs?: number
  readonly settleDelayMs?: number
  /** Keep the simulator's accepted messages in memory as well as in its log file (default true; see tools/simulator/app.ts). */
  readonly simulatorLogInMemory?: boolean
  /** Extra PIXPROXY_* settings (strings, as in the environment). */
  readonly settings?: Readonly<Record<string, string>>
  readonly proxyLogger?: boolean | object
  /** Time of the proxy's KMS guard (tests: a manual clock). */
  readonly kmsClock?: AppOptions['kmsClock']
  /** The simulator's port (default 0: any free port). */
  readonly simulatorPort?: number
  /**
   * Where the participant's keys live: 'hsm' (default: signing and mTLS keys in the SoftHSM token) or 'kms' (the
   * signing key in the local KMS, the mTLS key in the local Secrets Manager, with certificates from the token's CA).
   */
  readonly signer?: 'hsm' | 'kms'
  /** Passed to the proxy (plugins/upstreams.ts): tests trigger the mTLS key secret's refresh themselves. */
  readonly scheduleSecretRefresh?: SecretRefreshScheduler
}

export interface LocalStack {
  readonly proxyUrl: string
  readonly proxy: FastifyInstance
  readonly config: Config
  /** The PIXPROXY_* settings the proxy was started with (to start another proxy process the same way). */
  readonly settings: Readonly<Record<string, string>>
  readonly simulator: RunningSimulator
  readonly simulatorPki: SimulatorPki
  readonly hsm: HsmInitResult
  /** The other participant, calling the simulator directly over its own mTLS identity. */
  readonly counterparty: { readonly identity: ParticipantIdentity, readonly client: ParticipantClient }
  readonly simulatorLogFile: string
  /** With `signer: 'kms'`: the local AWS endpoint and what it holds; null with the HSM. */
  readonly kms: KmsBackend | null
  close (): Promise<void>
}

/** Resolves BACEN's RSFN host names (and localhost) to loopback; anything else is refused. */
const loopbackLookup: LookupFunction = (hostname, options, callback) => {
  const cb = callback as (err: NodeJS.ErrnoException | null, address: string | Array<{ address: string, family: number }>, family?: number) => void
  if (!hostname.endsWith('.rsfn.net.br') && hostname !== 'localhost' && hostname !== '127.0.0.1') {
    const err: NodeJS.ErrnoException = new Error(`the local stack resolves only BACEN host names, not ${hostname}`)
    err.code = 'ENOTFOUND'
    cb(err, '')
    return
  }
  if ((options as { all?: boolean }).all === true) cb(null, [{ address: '127.0.0.1', family: 4 }])
  else cb(null, '127.0.0.1', 4)
}

/**
 * Starts token (created on first use), simulator and proxy. The process environment must let the libp11 engine
 * find its module (OPENSSL_ENGINES, PKCS11_MODULE_PATH: scripts/env.sh sets both); SOFTHSM2_CONF is set here
 * because SoftHSM reads it when the module initialises, and this is the process's entry point into the HSM.
 */
export async function startLocalStack (opts: LocalStackOptions): Promise<LocalStack> {
  await mkdir(opts.dir, { recursive: true })
  const hsmDir = join(opts.dir, 'hsm')
  const hsm: HsmInitResult = existsSync(join(hsmDir, 'hsm.json'))
    ? JSON.parse(await readFile(join(hsmDir, 'hsm.json'), 'utf8')) as HsmInitResult
    : await initSoftHsm({ dir: hsmDir, ispb: PROXY_ISPB, ...(process.env.PKCS11_MODULE_PATH === undefined ? {} : { modulePath: process.env.PKCS11_MODULE_PATH }) })
  process.env.SOFTHSM2_CONF = hsm.softhsmConf
  process.env.PKCS11_MODULE_PATH ??= hsm.modulePath

  // BACEN's side: its CA (TLS server certificate for the RSFN names) and signing key; it trusts the participant's
  // TLS client certificates from the token's CA and verifies the participant's signatures with the HSM key's cert.
  const simulatorPki = createSimulatorPki({ participants: [COUNTERPARTY_ISPB] })
  const counterpartyIdentity = simulatorPki.participant(COUNTERPARTY_ISPB)
  const tokenCaPem = await readFile(hsm.caCertFile, 'utf8')
  // Before the simulator: it must know the KMS key's certificate and the Secrets Manager key's TLS certificate.
  const kms = opts.signer === 'kms' ? await startKmsBackend({ hsm, ispb: PROXY_ISPB }) : null
  // Callers are identified by their TLS certificate, as BACEN does: every participant's fingerprint is registered.
  const base = simulatorPki.simulatorOptions({ fingerprints: true })
  const simulatorLogFile = join(opts.dir, 'simulator-accepted.jsonl')
  let simulator: RunningSimulator
  try {
    simulator = await startSimulator({
      ...base,
      tls: { ...base.tls, clientCaPem: base.tls.clientCaPem + '\n' + tokenCaPem },
      participants: [
        ...base.participants,
        {
          ispb: PROXY_ISPB,
          signingCerts: [kms === null ? parseCertificate(await readFile(hsm.signing.certFile)) : kms.signingCertificate],
          tlsCertFingerprints256: kms === null ? [parseCertificate(await readFile(hsm.tls.certFile)).fingerprint256] : kms.tlsCertificates.map((c) => c.fingerprint256)
        }
      ],
      spi: { longPollMs: opts.longPollMs ?? 1_000, settleDelayMs: opts.settleDelayMs ?? 20 },
      ...(opts.simulatorPort === undefined ? {} : { dictPort: opts.simulatorPort }),
      ...(opts.faults === undefined ? {} : { faults: opts.faults }),
      logFile: simulatorLogFile,
      logInMemory: opts.simulatorLogInMemory ?? true
    })
  } catch (err) {
    await kms?.close()
    throw err
  }

  try {
    const files = join(opts.dir, 'bacen')
    await mkdir(files, { recursive: true })
    const caFile = join(files, 'bacen-ca.pem')
    const signingFile = join(files, 'bacen-signing.pem')
    await writeFile(caFile, simulatorPki.ca.certPem)
    // A real bundle keeps BACEN's previous signing certificate after a rotation: an expired signature is then
    // reported as CERT_EXPIRED, not as an unknown certificate.
    await writeFile(signingFile, simulatorPki.bcbSigning.certPem + simulatorPki.bcbExpired.certPem)
    // What `pix-proxy load --pki <dir>` needs (CA, BACEN's signing certificates, the counterparty's keys, 0600).
    await writeLoadPki(files, simulatorPki, [COUNTERPARTY_ISPB])
    const port = new URL(simulator.dictUrl).port
    const settings: Record<string, string> = {
      PIXPROXY_ISPB: PROXY_ISPB,
      PIXPROXY_LISTEN_HOST: '127.0.0.1',
      PIXPROXY_LISTEN_PORT: '0',
      PIXPROXY_LOG_LEVEL: 'warn',
      PIXPROXY_HSM_MODULE_PATH: hsm.modulePath,
      PIXPROXY_HSM_TOKEN_LABEL: hsm.tokenLabel,
      PIXPROXY_HSM_PIN_FILE: hsm.pinFile,
      PIXPROXY_SIGNING_KEY_LABEL: hsm.signing.keyLabel,
      PIXPROXY_SIGNING_CERT_FILE: hsm.signing.certFile,
      PIXPROXY_TLS_KEY_LABEL: hsm.tls.keyLabel,
      PIXPROXY_TLS_CERT_FILE: hsm.tls.certFile,
      PIXPROXY_TLS_CA_FILE: caFile,
      PIXPROXY_DICT_URL: `https://dict-h.pi.rsfn.net.br:${port}`,
      PIXPROXY_SPI_URL: `https://icom-h.pi.rsfn.net.br:${port}`,
      PIXPROXY_BACEN_SIGNING_CERTS_FILE: signingFile,
      PIXPROXY_INVALID_SIGNATURE_POLICY: opts.invalidSignaturePolicy ?? 'reject',
      PIXPROXY_AUDIT_SPOOL_DIR: join(opts.dir, 'audit', 'spool'),
      PIXPROXY_AUDIT_PARQUET_DIR: join(opts.dir, 'audit', 'lake'),
      PIXPROXY_AUDIT_FLUSH_MS: '200',
      ...(kms === null ? {} : kms.settings),
      ...opts.settings
    }
    const config = loadConfig(settings)
    const proxy = await buildApp({
      config,
      lookup: loopbackLookup,
      logger: opts.proxyLogger ?? false,
      ...(opts.kmsClock === undefined ? {} : { kmsClock: opts.kmsClock }),
      ...(opts.scheduleSecretRefresh === undefined ? {} : { scheduleSecretRefresh: opts.scheduleSecretRefresh })
    })
    const proxyUrl = await proxy.listen({ host: config.listen.host, port: config.listen.port })
    const client = new ParticipantClient({
      url: simulator.dictUrl,
      ca: simulatorPki.ca.certPem,
      certPem: counterpartyIdentity.tls.certPem,
      keyPem: counterpartyIdentity.tls.keyPem
    })
    return {
      proxyUrl,
      proxy,
      config,
      settings,
      simulator,
      simulatorPki,
      hsm,
      counterparty: { identity: counterpartyIdentity, client },
      simulatorLogFile,
      kms,
      close: async () => {
        await proxy.close()
        await client.close()
        await simulator.close()
        await kms?.close()
      }
    }
  } catch (err) {
    await simulator.close()
    await kms?.close()
    throw err
  }
}

export interface ProxyProcess {
  readonly child: ChildProcess
  /** Resolves with the proxy's URL once it listens; rejects if it exits first. */
  readonly url: Promise<string>
  /** Resolves with the exit signal name, or the exit code. */
  readonly exited: Promise<NodeJS.Signals | number | null>
}

/** What a proxy process needs of a stack: its settings and the simulator's URL. */
export interface ProxyStackSettings {
  readonly settings: Readonly<Record<string, string>>
  readonly simulator: { readonly dictUrl: string }
}

/**
 * Starts the proxy as its own process (src/server.ts, configured from the environment as in production) against
 * this stack's token and simulator, e.g. to kill it or measure it apart from the simulator. A child process has no
 * in-process DNS override, so the BACEN URLs use localhost, which the simulator's certificate also names.
 * `settings` override the stack's PIXPROXY_* settings. The caller stops the child.
 */
export function spawnProxyProcess (stack: ProxyStackSettings, settings: Readonly<Record<string, string>> = {}): ProxyProcess {
  const port = new URL(stack.simulator.dictUrl).port
  const env: Record<string, string> = {
    PATH: process.env.PATH ?? '',
    SOFTHSM2_CONF: process.env.SOFTHSM2_CONF ?? '',
    OPENSSL_ENGINES: process.env.OPENSSL_ENGINES ?? '',
    PKCS11_MODULE_PATH: process.env.PKCS11_MODULE_PATH ?? '',
    ...stack.settings,
    PIXPROXY_DICT_URL: `https://localhost:${port}`,
    PIXPROXY_SPI_URL: `https://localhost:${port}`,
    PIXPROXY_LOG_LEVEL: 'info',
    ...settings
  }
  const serverTs = new URL('../../src/server.ts', import.meta.url).pathname
  const child = spawn(process.execPath, [serverTs], { env, stdio: ['ignore', 'pipe', 'inherit'] })
  const exited = new Promise<NodeJS.Signals | number | null>((resolve) => child.once('exit', (code, signal) => resolve(signal ?? code)))
  const url = new Promise<string>((resolve, reject) => {
    exited.then((how) => reject(new Error(`the proxy exited (${String(how)}) before listening`)), () => {})
    // Whole lines: a chunk of a pipe can end mid-line.
    createInterface({ input: child.stdout as NodeJS.ReadableStream }).on('line', (line) => {
      const m = /Server listening at (http:\/\/127\.0\.0\.1:\d+)/.exec(line)
      if (m !== null) resolve(m[1] as string)
    })
  })
  url.catch(() => {})
  return { child, url, exited }
}
