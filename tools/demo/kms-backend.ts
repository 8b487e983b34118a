/**
 * The serverless signing variant for the local stack (stack.ts `signer: 'kms'`): the local AWS endpoint
 * (tools/aws-local) seeded with
 *   - a KMS RSA-2048 SIGN_VERIFY key under an alias, whose certificate the token's CA issues (the simulator knows it
 *     as the participant's signing certificate, as BACEN knows the certificate of a KMS key);
 *   - a Secrets Manager secret holding the mTLS client key and its certificate as JSON {"key", "certificate"}
 *     (src/upstream/tls-key-secret.ts), also from the token's CA;
 * and a second TLS identity, `nextTls`, that a rotation moves to (PutSecretValue then SIGHUP or the refresh timer),
 * registered with the simulator beforehand as BACEN registers a renewed certificate before it is used.
 *
 * Every key is generated per start and held in memory (and in the endpoint, which keeps nothing on disk): the KMS
 * key and the TLS key never touch the state directory. SigV4 is verified against credentials made per start, which
 * this sets in the process environment (the SDK's AWS_ENDPOINT_URL, region and keys) and restores on close.
 */
import { createPrivateKey, generateKeyPairSync, randomBytes } from 'node:crypto'
import { readFile } from 'node:fs/promises'
import { issueCertificate } from '../../core/pki/ca.ts'
import { parseCertificate } from '../../core/pki/x509.ts'
import type { Certificate } from '../../core/pki/x509.ts'
import { startLocalAwsEndpoint } from '../aws-local/endpoint.ts'
import type { LocalAwsEndpoint } from '../aws-local/endpoint.ts'
import type { HsmInitResult } from '../token/hsm-init.ts'

const KMS_SIGNING_ALIAS = 'alias/pix-proxy-signing'
export const TLS_KEY_SECRET_NAME = 'pix/proxy/tls-key'

/** A TLS client identity: the PEM key and its certificate. */
export interface TlsIdentity {
  readonly keyPem: string
  readonly certificate: Certificate
  /** The SecretString that holds it: JSON {"key", "certificate"}. */
  readonly secretString: string
}

export interface KmsBackend {
  readonly aws: LocalAwsEndpoint
  /** The PIXPROXY_* settings that select KMS and the Secrets Manager key (merged over the stack's). */
  readonly settings: Readonly<Record<string, string>>
  readonly signingCertificate: Certificate
  /** The identity in the secret at start. */
  readonly tls: TlsIdentity
  /** The identity a rotation moves to. */
  readonly nextTls: TlsIdentity
  /** Both TLS certificates, for the simulator's registration. */
  readonly tlsCertificates: readonly Certificate[]
  /** The credentials the endpoint verifies signatures with (for SDK clients of tests and tools). */
  readonly credentials: { readonly accessKeyId: string, readonly secretAccessKey: string }
  close (): Promise<void>
}

const AWS_ENV = ['AWS_ENDPOINT_URL', 'AWS_REGION', 'AWS_ACCESS_KEY_ID', 'AWS_SECRET_ACCESS_KEY', 'AWS_SESSION_TOKEN'] as const

/** Issues a TLS client identity for the participant from the token's CA. */
function tlsIdentity (ca: { certificate: Certificate, key: ReturnType<typeof createPrivateKey> }, subject: string): TlsIdentity {
  const key = generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey
  const certificate = issueCertificate({ subject, publicKey: key, issuer: ca, extKeyUsage: ['clientAuth'] })
  const keyPem = key.export({ type: 'pkcs8', format: 'pem' }).toString()
  return { keyPem, certificate, secretString: JSON.stringify({ key: keyPem, certificate: certificate.pem }) }
}

/** Starts the endpoint with the KMS key and the TLS key secret; see the module comment. */
export async function startKmsBackend (opts: { readonly hsm: HsmInitResult, readonly ispb: string }): Promise<KmsBackend> {
  const ca = { certificate: parseCertificate(await readFile(opts.hsm.caCertFile)), key: createPrivateKey(await readFile(opts.hsm.caKeyFile)) }
  // The signing certificate names the participant as the token's does; only its key differs.
  const tokenSigning = parseCertificate(await readFile(opts.hsm.signing.certFile))
  const kmsKey = generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey
  const signingCertificate = issueCertificate({ subject: tokenSigning.subjectString, publicKey: kmsKey, issuer: ca, keyUsage: ['digitalSignature', 'nonRepudiation'], extKeyUsage: [] })
  const tls = tlsIdentity(ca, `CN=pix-proxy ${opts.ispb} tls, OU=PIX, O=Banco Exemplo S.A., C=BR`)
  const nextTls = tlsIdentity(ca, `CN=pix-proxy ${opts.ispb} tls renewed, OU=PIX, O=Banco Exemplo S.A., C=BR`)
  const credentials = { accessKeyId: 'AKIDPIXPROXYLOCAL', secretAccessKey: randomBytes(20).toString('hex') }
  const aws = await startLocalAwsEndpoint({
    credentials: { [credentials.accessKeyId]: credentials.secretAccessKey },
    kmsKeys: [{ aliases: [KMS_SIGNING_ALIAS], privateKeyPem: kmsKey.export({ type: 'pkcs8', format: 'pem' }).toString(), description: `pix-proxy ${opts.ispb} XMLDSig signing key` }],
    secrets: [{ name: TLS_KEY_SECRET_NAME, string: tls.secretString }]
  })
  // The proxy's SDK clients resolve endpoint, region and credentials from the environment, as on ECS (task role).
  const saved = Object.fromEntries(AWS_ENV.map((k) => [k, process.env[k]]))
  Object.assign(process.env, { AWS_ENDPOINT_URL: aws.url, AWS_REGION: aws.region, AWS_ACCESS_KEY_ID: credentials.accessKeyId, AWS_SECRET_ACCESS_KEY: credentials.secretAccessKey })
  delete process.env.AWS_SESSION_TOKEN
  return {
    aws,
    settings: {
      PIXPROXY_SIGNING_KEY_LABEL: '',
      PIXPROXY_SIGNING_KMS_KEY_ID: KMS_SIGNING_ALIAS,
      // PEM text rather than a file: nothing of this backend is written to the state directory.
      PIXPROXY_SIGNING_CERT_FILE: signingCertificate.pem,
      PIXPROXY_TLS_KEY_LABEL: '',
      PIXPROXY_TLS_CERT_FILE: '',
      PIXPROXY_TLS_KEY_SECRET_ID: TLS_KEY_SECRET_NAME,
      // No HSM at all: the token only provided the CA that issued the certificates above.
      PIXPROXY_HSM_MODULE_PATH: '',
      PIXPROXY_HSM_TOKEN_LABEL: '',
      PIXPROXY_HSM_PIN_FILE: ''
    },
    signingCertificate,
    tls,
    nextTls,
    tlsCertificates: [tls.certificate, nextTls.certificate],
    credentials,
    close: async () => {
      await aws.close()
      for (const [k, v] of Object.entries(saved)) {
        if (v === undefined) delete process.env[k]
        else process.env[k] = v
      }
    }
  }
}
