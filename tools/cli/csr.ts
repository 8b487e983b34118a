/**
 * `pix-proxy csr --key <pkcs11: URI | KMS key | PEM file> --subject "/C=BR/O=ICP-Brasil/CN=…" [--out FILE]`: a PKCS#10
 * request signed by the key where it lives, for the ICP-Brasil CA that issues the bank's SPI/DICT certificates
 * (docs/certificates.md). The private key never leaves the HSM or KMS: the request is built here and only its
 * signature is made there.
 */
import { writeFile } from 'node:fs/promises'
import { createHash } from 'node:crypto'
import { parseArgs } from 'node:util'
import { createCsr, parseOpenSslSubject, type IcpBrasilIdentity, type RequestExtKeyUsage, type RequestKeyUsage } from '../../core/pki/csr.ts'
import { SoftwareSigner, type Signer } from '../../core/signer.ts'
import { Pkcs11KeyStore } from '../../src/hsm/pkcs11.ts'
import { parsePkcs11Uri, readPin } from '../../src/hsm/uri.ts'
import type { CliIo } from '../../src/cli/io.ts'
import { readInputFile, usageError } from '../../src/cli/io.ts'

export const CSR_USAGE = `usage: pix-proxy csr --key KEY --subject "/C=BR/O=ICP-Brasil/OU=…/CN=…" [--purpose sign|tls] [--out FILE]
                     [--dns NAME]... [--cnpj N --company-name S --responsible-name S --responsible-data S]
  write a PKCS#10 certificate signing request (PEM) signed by KEY where it lives, for an ICP-Brasil CA
  (docs/certificates.md); stdout unless --out (then one JSON line with the subject and key fingerprint)
  --key pkcs11:token=L;object=K?pin-source=file:PIN   a key in the HSM (module: module-path=, $PKCS11_MODULE_PATH or
                                                      $PIXPROXY_HSM_MODULE_PATH; PIN: pin-source=, --pin-file or
                                                      $PIXPROXY_HSM_PIN_FILE)
  --key arn:aws:kms:… | alias/NAME | kms:KEY-ID        a key in AWS KMS (AWS_REGION, AWS_ENDPOINT_URL, credentials as
                                                      for the AWS CLI); needs kms:DescribeKey, GetPublicKey, Sign
  --key FILE                                          a PEM private key (tests, development)
  --subject    OpenSSL's form, most general first; \\ escapes the next character; needs C=BR and one CN
  --purpose    sign (default): keyUsage digitalSignature, nonRepudiation (the XMLDSig key);
               tls: keyUsage digitalSignature, keyEncipherment, extKeyUsage serverAuth, clientAuth (the mTLS key)
  --key-usage LIST, --eku LIST   override those (comma-separated)
  --dns NAME   a dNSName in the subjectAltName (repeatable)
  --cnpj, --company-name, --responsible-name, --responsible-data   the four ICP-Brasil otherName fields
               (2.16.76.1.3.3, .8, .2, .4), all or none; --responsible-data is birth date ddmmaaaa, CPF, NIS,
               RG (15), RG issuer and state, as DOC-ICP-04 lays it out
  --pin-file F the HSM PIN file, when the pkcs11: URI has no pin-source`

interface OpenedSigner {
  readonly signer: Signer
  close (): Promise<void>
}

const PURPOSES: Readonly<Record<string, { keyUsage: RequestKeyUsage[], extKeyUsage: RequestExtKeyUsage[] }>> = {
  sign: { keyUsage: ['digitalSignature', 'nonRepudiation'], extKeyUsage: [] },
  tls: { keyUsage: ['digitalSignature', 'keyEncipherment'], extKeyUsage: ['serverAuth', 'clientAuth'] }
}

function nonEmpty (v: string | undefined): string | undefined {
  return v === undefined || v === '' ? undefined : v
}

/** Where KEY names a KMS key: an ARN, an alias name, or `kms:` before a key id. */
function kmsKeyId (key: string): string | undefined {
  if (key.startsWith('arn:aws:kms:') || key.startsWith('alias/')) return key
  if (key.startsWith('kms:')) return key.slice('kms:'.length)
  return undefined
}

async function openPkcs11 (key: string, pinFile: string | undefined, env: NodeJS.ProcessEnv): Promise<OpenedSigner> {
  const uri = parsePkcs11Uri(key)
  const modulePath = uri.modulePath ?? nonEmpty(env.PKCS11_MODULE_PATH) ?? nonEmpty(env.PIXPROXY_HSM_MODULE_PATH)
  if (modulePath === undefined) throw usageError('the pkcs11: URI has no module-path and neither PKCS11_MODULE_PATH nor PIXPROXY_HSM_MODULE_PATH is set')
  const token = uri.token ?? nonEmpty(env.PIXPROXY_HSM_TOKEN_LABEL)
  if (token === undefined) throw usageError('the pkcs11: URI needs token=<label> (or set PIXPROXY_HSM_TOKEN_LABEL)')
  if (uri.object === undefined) throw usageError('the pkcs11: URI needs object=<key label>')
  if (pinFile !== undefined && (uri.pinSource !== undefined || uri.pinValue !== undefined)) throw usageError('give the PIN either in the URI (pin-source=) or with --pin-file, not both')
  let pinSource = uri.pinSource
  if (pinSource === undefined && uri.pinValue === undefined) {
    const file = pinFile ?? nonEmpty(env.PIXPROXY_HSM_PIN_FILE)
    if (file !== undefined) pinSource = `file:${file}`
  }
  const pin = await readPin({
    ...(uri.pinValue === undefined ? {} : { pinValue: uri.pinValue }),
    ...(pinSource === undefined ? {} : { pinSource })
  })
  const store = await Pkcs11KeyStore.open({ modulePath, tokenLabel: token, pin, poolSize: 1 })
  try {
    const signer = await store.signer(uri.object)
    return { signer, close: async () => { await store.close() } }
  } catch (err) {
    await store.close()
    throw err
  }
}

async function openKms (keyId: string, env: NodeJS.ProcessEnv): Promise<OpenedSigner> {
  // Loaded only for a KMS key: the SDK's KMS module costs start-up time the other paths do not need.
  const [{ createKmsClient }, { KmsRequestSigner }] = await Promise.all([import('../../src/kms/client.ts'), import('../token/kms-request-signer.ts')])
  const region = nonEmpty(env.AWS_REGION) ?? nonEmpty(env.AWS_DEFAULT_REGION)
  const endpoint = nonEmpty(env.AWS_ENDPOINT_URL_KMS) ?? nonEmpty(env.AWS_ENDPOINT_URL)
  const accessKeyId = nonEmpty(env.AWS_ACCESS_KEY_ID)
  const secretAccessKey = nonEmpty(env.AWS_SECRET_ACCESS_KEY)
  const sessionToken = nonEmpty(env.AWS_SESSION_TOKEN)
  // A one-shot command, not the request path: wait longer than the proxy's client would before giving up on KMS.
  const client = createKmsClient({
    connectTimeoutMs: 5_000,
    requestTimeoutMs: 30_000,
    ...(region === undefined ? {} : { region }),
    ...(endpoint === undefined ? {} : { endpoint }),
    ...(accessKeyId === undefined || secretAccessKey === undefined
      ? {}
      : { credentials: { accessKeyId, secretAccessKey, ...(sessionToken === undefined ? {} : { sessionToken }) } })
  })
  const signer = await KmsRequestSigner.open(keyId, client)
  return { signer, close: async () => { signer.close() } }
}

/** Opens the key KEY names: a pkcs11: URI, a KMS key, or a PEM file. */
async function openKey (key: string, pinFile: string | undefined, env: NodeJS.ProcessEnv): Promise<OpenedSigner> {
  if (key.startsWith('pkcs11:')) return await openPkcs11(key, pinFile, env)
  if (pinFile !== undefined) throw usageError('--pin-file goes with a pkcs11: key')
  const kms = kmsKeyId(key)
  if (kms !== undefined) return await openKms(kms, env)
  const signer = SoftwareSigner.fromPem(await readInputFile(key))
  return { signer, close: async () => {} }
}

function list<T extends string> (value: string | undefined, allowed: readonly T[], option: string): T[] | undefined {
  if (value === undefined) return undefined
  const items = value.split(',').map((s) => s.trim()).filter((s) => s !== '')
  for (const item of items) {
    if (!(allowed as readonly string[]).includes(item)) throw usageError(`${option}: ${JSON.stringify(item)} is not one of ${allowed.join(', ')}`)
  }
  return items as T[]
}

/** Runs `pix-proxy csr`; resolves to the exit code. */
export async function csrCommand (argv: string[], io: CliIo): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    options: {
      key: { type: 'string' },
      subject: { type: 'string' },
      purpose: { type: 'string', default: 'sign' },
      'key-usage': { type: 'string' },
      eku: { type: 'string' },
      dns: { type: 'string', multiple: true, default: [] },
      cnpj: { type: 'string' },
      'company-name': { type: 'string' },
      'responsible-name': { type: 'string' },
      'responsible-data': { type: 'string' },
      'pin-file': { type: 'string' },
      out: { type: 'string' }
    },
    strict: true,
    allowPositionals: false
  })
  if (values.key === undefined || values.subject === undefined) throw usageError(`csr needs --key and --subject\n${CSR_USAGE}`)
  const purpose = PURPOSES[values.purpose]
  if (purpose === undefined || !Object.hasOwn(PURPOSES, values.purpose)) throw usageError(`--purpose must be sign or tls\n${CSR_USAGE}`)
  const keyUsage = list(values['key-usage'], ['digitalSignature', 'nonRepudiation', 'keyEncipherment'], '--key-usage') ?? purpose.keyUsage
  const extKeyUsage = list(values.eku, ['serverAuth', 'clientAuth'], '--eku') ?? purpose.extKeyUsage
  const identityParts = [values['company-name'], values.cnpj, values['responsible-name'], values['responsible-data']]
  const given = identityParts.filter((v) => v !== undefined).length
  if (given !== 0 && given !== 4) {
    throw usageError('--cnpj, --company-name, --responsible-name and --responsible-data go together: DOC-ICP-04 makes the four otherName fields of an equipment or application certificate mandatory')
  }
  const icpBrasil: IcpBrasilIdentity | undefined = given === 4
    ? { companyName: values['company-name'] as string, cnpj: values.cnpj as string, responsibleName: values['responsible-name'] as string, responsibleData: values['responsible-data'] as string }
    : undefined
  // The subject is checked before the key is opened: a typo costs no HSM login and no KMS call.
  const subject = parseOpenSslSubject(values.subject)

  const opened = await openKey(values.key, values['pin-file'], io.env)
  let pem: string
  let subjectString: string
  let spki: Buffer
  try {
    const csr = await createCsr({
      subject,
      signer: opened.signer,
      keyUsage,
      extKeyUsage,
      dnsNames: values.dns,
      ...(icpBrasil === undefined ? {} : { icpBrasil })
    })
    pem = csr.pem
    subjectString = csr.subjectString
    spki = csr.publicKey.export({ type: 'spki', format: 'der' })
  } finally {
    await opened.close()
  }
  if (values.out === undefined || values.out === '-') {
    io.stdout.write(pem)
  } else {
    await writeFile(values.out, pem)
    io.stdout.write(JSON.stringify({
      out: values.out,
      subject: subjectString,
      key: opened.signer.description,
      publicKeySha256: createHash('sha256').update(spki).digest('hex')
    }) + '\n')
  }
  return 0
}
