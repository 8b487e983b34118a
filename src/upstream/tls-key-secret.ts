/**
 * The mTLS client key kept in AWS Secrets Manager (PIXPROXY_TLS_KEY_SECRET_ID): with the signing key in KMS there
 * is no HSM, and KMS cannot take part in a TLS handshake, so the TLS key is a software key whose only copy outside
 * the proxy's memory is the secret (encrypted at rest by Secrets Manager, readable only by the task role).
 *
 * The secret's SecretString is one of:
 *   - the PEM private key (unencrypted PKCS#8 `PRIVATE KEY` or PKCS#1 `RSA PRIVATE KEY`, or an EC key): the
 *     certificate then comes from PIXPROXY_TLS_CERT_FILE;
 *   - JSON `{"key": "<PEM key>", "certificate": "<PEM chain, leaf first>"}`: key and certificate rotate together
 *     in one PutSecretValue, which is what a certificate renewal with a new key needs (two separate sources could
 *     never change at the same instant). PIXPROXY_TLS_CERT_FILE must then be unset: a certificate in two places
 *     would leave it unclear which one is in use. `certificate` may be left out (the file is used).
 *
 * Never on disk: the value goes from the SDK's response to a string here, and from there to `createSecureContext`
 * (TlsKeySource kind 'pem'); nothing writes it to a file, a temporary file or a log (errors name the secret and
 * say what is wrong, never quote the value). test/upstream/tls-key-secret.test.ts checks the temporary directory and
 * the logs of a running proxy for it.
 */
import { createPrivateKey } from 'node:crypto'
import type { SecretsManagerClient } from '@aws-sdk/client-secrets-manager'
import { Errors, PixProxyError } from '../../core/errors.ts'
import { fetchSecretString } from '../config-sources.ts'

/** One version of the key secret, parsed. */
export interface TlsKeySecretValue {
  readonly versionId: string
  readonly keyPem: string
  /** The certificate chain from the secret, or null when it holds only the key. */
  readonly certPem: string | null
}

const PEM_BLOCK_RE = /-----BEGIN ([A-Z0-9 ]+)-----[\s\S]*?-----END \1-----/g
const JSON_FIELDS: ReadonlySet<string> = new Set(['key', 'certificate'])

/** The BEGIN labels of the PEM blocks in `text`. */
function pemLabels (text: string): string[] {
  return [...text.matchAll(PEM_BLOCK_RE)].map((m) => m[1] as string)
}

function unusable (secretId: string, why: string): PixProxyError {
  return new PixProxyError(Errors.AWS_SECRET_UNUSABLE, [secretId, why])
}

/** Checks that `pem` is exactly one unencrypted private key that OpenSSL can load. */
function checkKey (secretId: string, pem: string, where: string): void {
  // `openssl ecparam -genkey` puts the curve's parameters before an EC key: harmless, not a second key.
  const labels = pemLabels(pem).filter((l) => l !== 'EC PARAMETERS')
  if (labels.length === 0) throw unusable(secretId, `${where} is not PEM (no -----BEGIN … PRIVATE KEY----- block)`)
  if (labels.includes('ENCRYPTED PRIVATE KEY')) throw unusable(secretId, `${where} is an encrypted private key; store it unencrypted (the secret itself is encrypted by Secrets Manager)`)
  const keys = labels.filter((l) => l.endsWith('PRIVATE KEY'))
  if (keys.length !== 1 || labels.length !== 1) {
    const hint = labels.includes('CERTIFICATE') ? '; to keep the certificate in the secret use JSON {"key": …, "certificate": …}' : ''
    throw unusable(secretId, `${where} must hold exactly one private key block, found ${labels.join(', ')}${hint}`)
  }
  try {
    createPrivateKey(pem)
  } catch (err) {
    // The message of a failed parse names no key material (OpenSSL's decoder error); the code says which.
    const code = (err as { code?: unknown }).code
    throw new PixProxyError(Errors.AWS_SECRET_UNUSABLE, [secretId, `${where} is not a usable private key${typeof code === 'string' ? ` (${code})` : ''}`], { cause: err })
  }
}

/**
 * Parses the SecretString of the key secret (the formats in the module comment). Only the form is checked here (a
 * loadable key, PEM certificates); whether the key matches the certificate is the TLS agent's check.
 * @throws PixProxyError AWS_SECRET_UNUSABLE naming `secretId` and what is wrong, never quoting the value.
 */
export function parseTlsKeySecret (secretId: string, versionId: string, text: string): TlsKeySecretValue {
  const trimmed = text.trim()
  if (trimmed === '') throw unusable(secretId, 'it is empty')
  if (!trimmed.startsWith('{')) {
    checkKey(secretId, trimmed, 'its value')
    return { versionId, keyPem: trimmed + '\n', certPem: null }
  }
  let parsed: unknown
  try {
    parsed = JSON.parse(trimmed)
  } catch {
    // Not the parser's message: it may quote part of the value.
    throw unusable(secretId, 'its value starts with { but is not valid JSON')
  }
  // Text that starts with { and parses is an object.
  const o = parsed as Record<string, unknown>
  const unknown = Object.keys(o).filter((k) => !JSON_FIELDS.has(k))
  if (unknown.length > 0) throw unusable(secretId, `unknown field(s) ${unknown.map((k) => JSON.stringify(k.slice(0, 40))).join(', ')} in its JSON (fields: key, certificate)`)
  if (typeof o.key !== 'string') throw unusable(secretId, 'its JSON has no "key" string (the PEM private key)')
  checkKey(secretId, o.key.trim(), 'its "key"')
  let certPem: string | null = null
  if (o.certificate !== undefined) {
    if (typeof o.certificate !== 'string') throw unusable(secretId, 'its "certificate" must be a string (PEM chain, leaf first)')
    const labels = pemLabels(o.certificate)
    if (labels.length === 0 || labels.some((l) => l !== 'CERTIFICATE')) throw unusable(secretId, `its "certificate" must hold only PEM CERTIFICATE blocks, found ${labels.length === 0 ? 'none' : labels.join(', ')}`)
    certPem = o.certificate
  }
  return { versionId, keyPem: o.key.trim() + '\n', certPem }
}

/**
 * Reads and parses the current version of the key secret.
 * @throws PixProxyError AWS_SECRET_NOT_FOUND, AWS_SECRET_READ (the SDK error as cause), AWS_SECRET_UNUSABLE.
 */
export async function readTlsKeySecret (secretId: string, client: SecretsManagerClient): Promise<TlsKeySecretValue> {
  const { value, versionId } = await fetchSecretString(secretId, client, 'the PEM key')
  return parseTlsKeySecret(secretId, versionId, value)
}
