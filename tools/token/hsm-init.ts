/**
 * `pix-proxy hsm init`: a local SoftHSM2 token with non-extractable signing and mTLS keys, and a local test CA
 * that certifies them. For development, the demo and tests; production keys are made in the real HSM.
 *
 * SoftHSM reads SOFTHSM2_CONF once, when the module initialises, and PKCS#11 state is process-wide, so the token
 * work runs in a short-lived child process (this same file, as its entry point) whose environment names the new
 * configuration: initSoftHsm works whatever the calling process has loaded, and reads no environment itself.
 * PINs travel to the child over a pipe, never on a command line.
 */
import { spawn } from 'node:child_process'
import { createPublicKey, randomBytes } from 'node:crypto'
import type { KeyObject } from 'node:crypto'
import { mkdir, readdir, rm, writeFile } from 'node:fs/promises'
import { join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import { Module } from 'graphene-pk11'
import pkcs11js from 'pkcs11js'
import { Errors, PixProxyError } from '../../core/errors.ts'
import type { ErrorSpec } from '../../core/errors.ts'
import { createTestPki } from '../../core/pki/ca.ts'
import { certificateMatchesKey } from '../../core/pki/x509.ts'
import type { Certificate } from '../../core/pki/x509.ts'
import { ckrCode, ckrName, hsmError } from '../../src/hsm/errors.ts'
import { Pkcs11KeyStore } from '../../src/hsm/pkcs11.ts'
import { formatPkcs11Uri } from '../../src/hsm/uri.ts'
import { generateRsaKeyPair } from './keygen.ts'

export interface HsmInitKey {
  /** CKA_LABEL of the private key (and of its public key object). */
  keyLabel: string
  /**
   * PKCS#11 URI of the private key with `pin-source=file:`, in the form the libp11 engine accepts (so without
   * `module-path`: take the module from {@link HsmInitResult.modulePath} or PKCS11_MODULE_PATH).
   */
  uri: string
  /** PEM certificate for the key, issued by the local test CA. */
  certFile: string
}

export interface HsmInitResult {
  tokenLabel: string
  /** Point SOFTHSM2_CONF at this file before the module initialises in a process that uses the token. */
  softhsmConf: string
  tokenDir: string
  /** The user PIN (0600). */
  pinFile: string
  modulePath: string
  signing: HsmInitKey
  tls: HsmInitKey
  caCertFile: string
  /** The test CA's private key, a software RSA-2048 key (0600). */
  caKeyFile: string
  /** The security officer PIN (0600). */
  soPinFile: string
  tokenSerial: string
}

export interface HsmInitOptions {
  /** Directory for the token, PINs, CA and certificates; created (0700) if missing. */
  dir: string
  /** Default `pix-proxy`. */
  tokenLabel?: string
  /** Default `/usr/lib/softhsm/libsofthsm2.so`. */
  modulePath?: string
  /** Default `CN=pix-proxy <ispb> assinatura, OU=PIX, O=Banco Exemplo S.A., C=BR`. */
  signingSubject?: string
  /** Default `CN=pix-proxy <ispb> mtls, OU=PIX, O=Banco Exemplo S.A., C=BR`. */
  tlsSubject?: string
  /** The participant's ISPB, eight digits. Default `99999004`. */
  ispb?: string
  /** Replace a token the directory already holds (its keys are destroyed). */
  force?: boolean
}

const SIGNING_KEY_LABEL = 'pix-sign'
const TLS_KEY_LABEL = 'pix-tls'
const DEFAULT_MODULE = '/usr/lib/softhsm/libsofthsm2.so'
const WORKER_TIMEOUT_MS = 120_000

/** What initSoftHsm sends its child: everything it needs, PINs included, over stdin. */
interface WorkerRequest {
  dir: string
  modulePath: string
  tokenLabel: string
  pin: string
  soPin: string
  keys: Array<{ label: string, id: string }>
}

type WorkerReply =
  | { ok: true, serial: string, keys: Array<{ label: string, spki: string }> }
  | { ok: false, code: string, message: string }

function failed (dir: string, why: string, cause?: unknown): PixProxyError {
  return new PixProxyError(Errors.HSM_INIT_FAILED, [dir, why], cause === undefined ? undefined : { cause })
}

/** Writes a file that did not exist before (an existing one is removed first, never written through). */
async function writeNew (file: string, data: string, mode: number): Promise<void> {
  await rm(file, { force: true })
  await writeFile(file, data, { mode, flag: 'wx' })
}

async function isNonEmptyDir (path: string): Promise<boolean> {
  try {
    return (await readdir(path)).length > 0
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return false
    throw err
  }
}

/**
 * Creates the token (random user and SO PINs in 0600 files, never printed), generates the RSA-2048 keys
 * `pix-sign` and `pix-tls` on it (sensitive, never extractable), creates a local test CA (software key, 0600),
 * certifies the signing key (digitalSignature + nonRepudiation) and the TLS key (clientAuth), writes
 * `softhsm2.conf` and `hsm.json` (the result) under `dir`. Refuses a directory that already holds a token
 * (HSM_INIT_EXISTS) unless `force`.
 */
export async function initSoftHsm (opts: HsmInitOptions): Promise<HsmInitResult> {
  const dir = resolve(opts.dir)
  const ispb = opts.ispb ?? '99999004'
  if (!/^\d{8}$/.test(ispb)) throw new PixProxyError(Errors.CONFIG_INVALID, [`ISPB must be eight digits, got ${JSON.stringify(ispb)}`])
  const tokenLabel = opts.tokenLabel ?? 'pix-proxy'
  if (tokenLabel === '' || Buffer.byteLength(tokenLabel) > 32) throw new PixProxyError(Errors.CONFIG_INVALID, ['the token label must be 1 to 32 bytes'])
  const modulePath = opts.modulePath ?? DEFAULT_MODULE
  const signingSubject = opts.signingSubject ?? `CN=pix-proxy ${ispb} assinatura, OU=PIX, O=Banco Exemplo S.A., C=BR`
  const tlsSubject = opts.tlsSubject ?? `CN=pix-proxy ${ispb} mtls, OU=PIX, O=Banco Exemplo S.A., C=BR`

  const files = {
    conf: join(dir, 'softhsm2.conf'),
    tokenDir: join(dir, 'tokens'),
    pin: join(dir, 'user.pin'),
    soPin: join(dir, 'so.pin'),
    caKey: join(dir, 'ca.key'),
    caCert: join(dir, 'ca.crt'),
    signCert: join(dir, `${SIGNING_KEY_LABEL}.crt`),
    tlsCert: join(dir, `${TLS_KEY_LABEL}.crt`),
    result: join(dir, 'hsm.json')
  }
  await mkdir(dir, { recursive: true, mode: 0o700 })
  if (await isNonEmptyDir(files.tokenDir)) {
    if (opts.force !== true) throw new PixProxyError(Errors.HSM_INIT_EXISTS, [dir])
    await rm(files.tokenDir, { recursive: true, force: true })
  }
  await rm(files.result, { force: true })
  await mkdir(files.tokenDir, { recursive: true, mode: 0o700 })
  await writeNew(files.conf, [
    '# SoftHSM2 configuration written by `pix-proxy hsm init`; point SOFTHSM2_CONF here.',
    `directories.tokendir = ${files.tokenDir}`,
    'objectstore.backend = file',
    'log.level = ERROR',
    'slots.removable = false',
    ''
  ].join('\n'), 0o644)

  const pin = randomBytes(18).toString('base64url')
  const soPin = randomBytes(18).toString('base64url')
  // No trailing newline: the libp11 engine reads pin-source files verbatim (readPin accepts either form).
  await writeNew(files.pin, pin, 0o600)
  await writeNew(files.soPin, soPin, 0o600)

  let reply: WorkerReply & { ok: true }
  try {
    reply = await runWorker(dir, files.conf, {
      dir,
      modulePath,
      tokenLabel,
      pin,
      soPin,
      keys: [{ label: SIGNING_KEY_LABEL, id: '01' }, { label: TLS_KEY_LABEL, id: '02' }]
    })
  } catch (err) {
    // Leave no half-made token (nor PINs for it) behind: a second attempt should not need --force.
    for (const path of [files.tokenDir, files.pin, files.soPin, files.conf]) await rm(path, { recursive: true, force: true })
    throw err
  }
  if (!(await isNonEmptyDir(files.tokenDir))) throw failed(dir, `the token was not created under ${files.tokenDir}`)
  const publicKeys = new Map<string, KeyObject>(reply.keys.map((k) => [k.label, createPublicKey(k.spki)]))
  const signPublic = publicKeys.get(SIGNING_KEY_LABEL)
  const tlsPublic = publicKeys.get(TLS_KEY_LABEL)
  if (signPublic === undefined || tlsPublic === undefined) throw failed(dir, 'the key generation reported no public keys')

  const pki = createTestPki({ caSubject: `CN=pix-proxy Local Test CA ${ispb}, O=pix-proxy, C=BR` })
  const signCert = pki.issue(signingSubject, { publicKey: signPublic, keyUsage: ['digitalSignature', 'nonRepudiation'], extKeyUsage: [] }).certificate
  const tlsCert = pki.issue(tlsSubject, { publicKey: tlsPublic, keyUsage: ['digitalSignature', 'keyEncipherment'], extKeyUsage: ['clientAuth'] }).certificate
  const pairs: Array<[Certificate, KeyObject]> = [[signCert, signPublic], [tlsCert, tlsPublic]]
  for (const [cert, key] of pairs) {
    if (!certificateMatchesKey(cert, key)) throw new PixProxyError(Errors.KEY_CERT_MISMATCH, [cert.subjectString])
  }
  await writeNew(files.caKey, pki.ca.key.export({ type: 'pkcs8', format: 'pem' }).toString(), 0o600)
  await writeNew(files.caCert, pki.ca.certificate.pem, 0o644)
  await writeNew(files.signCert, signCert.pem, 0o644)
  await writeNew(files.tlsCert, tlsCert.pem, 0o644)

  // No module-path in the URIs: libp11 0.4.12 (the OpenSSL engine for mTLS) rejects URIs that carry one; the
  // module comes from `modulePath` here, PKCS11_MODULE_PATH for the engine and the CLI.
  const uri = (object: string): string => formatPkcs11Uri({ token: tokenLabel, object, type: 'private', pinSource: `file:${files.pin}` })
  const result: HsmInitResult = {
    tokenLabel,
    softhsmConf: files.conf,
    tokenDir: files.tokenDir,
    pinFile: files.pin,
    modulePath,
    signing: { keyLabel: SIGNING_KEY_LABEL, uri: uri(SIGNING_KEY_LABEL), certFile: files.signCert },
    tls: { keyLabel: TLS_KEY_LABEL, uri: uri(TLS_KEY_LABEL), certFile: files.tlsCert },
    caCertFile: files.caCert,
    caKeyFile: files.caKey,
    soPinFile: files.soPin,
    tokenSerial: reply.serial
  }
  await writeNew(files.result, JSON.stringify(result, null, 2) + '\n', 0o644)
  return result
}

function specFor (code: string): ErrorSpec | undefined {
  return Object.values(Errors).find((spec) => spec.code === code)
}

function runWorker (dir: string, conf: string, request: WorkerRequest): Promise<WorkerReply & { ok: true }> {
  return new Promise((resolvePromise, reject) => {
    // Only SOFTHSM2_CONF: the child inherits nothing else from this process's environment.
    const child = spawn(process.execPath, [fileURLToPath(import.meta.url)], {
      env: { SOFTHSM2_CONF: conf },
      stdio: ['pipe', 'pipe', 'pipe'],
      timeout: WORKER_TIMEOUT_MS
    })
    const out: Buffer[] = []
    const err: Buffer[] = []
    child.stdout.on('data', (c: Buffer) => out.push(c))
    child.stderr.on('data', (c: Buffer) => err.push(c))
    child.on('error', (e) => reject(failed(dir, `cannot start the token worker: ${e.message}`, e)))
    child.on('close', (code, signal) => {
      const text = Buffer.concat(out).toString('utf8').trim()
      let reply: WorkerReply | undefined
      try {
        reply = JSON.parse(text.split('\n').pop() ?? '') as WorkerReply
      } catch {
        reply = undefined
      }
      if (reply?.ok === true && code === 0) {
        resolvePromise(reply)
      } else if (reply?.ok === false) {
        const spec = specFor(reply.code)
        // Keep the worker's stable code (HSM_MODULE_LOAD, HSM_PIN_INCORRECT…) and its message.
        reject(spec === undefined ? failed(dir, reply.message) : new PixProxyError({ ...spec, message: '%s' }, [reply.message]))
      } else {
        const stderr = Buffer.concat(err).toString('utf8').trim().split('\n').slice(-5).join(' | ')
        reject(failed(dir, `the token worker ended with ${signal ?? `exit code ${String(code)}`}${stderr === '' ? '' : `: ${stderr}`}`))
      }
    })
    child.stdin.end(JSON.stringify(request))
  })
}

/** In the child: initialise the free SoftHSM slot as our token, set the user PIN, generate the keys. */
async function workerMain (request: WorkerRequest): Promise<WorkerReply> {
  const { dir, modulePath, tokenLabel, pin, soPin } = request
  let module: Module
  try {
    module = Module.load(modulePath)
  } catch (err) {
    throw new PixProxyError(Errors.HSM_MODULE_LOAD, [modulePath, err instanceof Error ? err.message : String(err)], { cause: err })
  }
  try {
    try {
      module.lib.C_Initialize({ flags: pkcs11js.CKF_OS_LOCKING_OK })
    } catch (err) {
      const code = ckrCode(err)
      throw new PixProxyError(Errors.HSM_MODULE_LOAD, [modulePath, code === undefined ? String(err) : `C_Initialize returned ${ckrName(code)}`], { cause: err })
    }
    const lib = module.lib
    const slots = lib.C_GetSlotList(true)
    const initialised = slots.filter((s) => (lib.C_GetTokenInfo(s).flags & pkcs11js.CKF_TOKEN_INITIALIZED) !== 0)
    // SoftHSM with an empty token directory shows exactly one free slot: anything else means this is not it.
    if (initialised.length > 0) throw new PixProxyError(Errors.HSM_INIT_FAILED, [dir, `${modulePath} already shows ${initialised.length} initialised token(s)`])
    const free = slots[0]
    if (free === undefined) throw new PixProxyError(Errors.HSM_INIT_FAILED, [dir, `${modulePath} shows no free slot`])
    try {
      // CK_TOKEN_INFO labels are 32 bytes padded with blanks; pkcs11js 2.1.7 pads with NULs, which other
      // PKCS#11 consumers (the libp11 engine matching `token=` in a URI) do not strip: pad it ourselves.
      lib.C_InitToken(free, soPin, tokenLabel + ' '.repeat(32 - Buffer.byteLength(tokenLabel)))
      // SoftHSM may move the new token to another slot id: look it up by label.
      const slot = lib.C_GetSlotList(true).find((s) => lib.C_GetTokenInfo(s).label.replace(/[ \0]+$/, '') === tokenLabel)
      if (slot === undefined) throw new PixProxyError(Errors.HSM_TOKEN_NOT_FOUND, [tokenLabel])
      const session = lib.C_OpenSession(slot, pkcs11js.CKF_SERIAL_SESSION | pkcs11js.CKF_RW_SESSION)
      lib.C_Login(session, pkcs11js.CKU_SO, soPin)
      lib.C_InitPIN(session, pin)
      lib.C_Logout(session)
      lib.C_CloseSession(session)
    } catch (err) {
      throw hsmError(err, 'token initialisation', tokenLabel)
    }
  } finally {
    try { module.finalize() } catch { /* an earlier error is the one to report */ }
    module.close()
  }

  const store = await Pkcs11KeyStore.open({ modulePath, tokenLabel, pin, poolSize: 1 })
  try {
    const keys: Array<{ label: string, spki: string }> = []
    for (const k of request.keys) {
      const { publicKey } = await generateRsaKeyPair(store, k.label, { id: Buffer.from(k.id, 'hex') })
      keys.push({ label: k.label, spki: publicKey.export({ type: 'spki', format: 'pem' }).toString() })
    }
    return { ok: true, serial: store.tokenInfo().serial, keys }
  } finally {
    await store.close()
  }
}

if (import.meta.main) {
  const chunks: Buffer[] = []
  for await (const c of process.stdin) chunks.push(c as Buffer)
  let reply: WorkerReply
  try {
    reply = await workerMain(JSON.parse(Buffer.concat(chunks).toString('utf8')) as WorkerRequest)
  } catch (err) {
    reply = err instanceof PixProxyError
      ? { ok: false, code: err.code, message: err.message }
      : { ok: false, code: Errors.HSM_INIT_FAILED.code, message: err instanceof Error ? err.message : String(err) }
  }
  process.stdout.write(JSON.stringify(reply) + '\n')
  process.exitCode = reply.ok ? 0 : 1
}
