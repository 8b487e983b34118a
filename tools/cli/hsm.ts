/**
 * `pix-proxy hsm init --dir DIR [--label L] [--ispb 99999004] [--module PATH] [--force]` and
 * `pix-proxy hsm info --dir DIR`: a local SoftHSM2 token for development, and a look at one.
 */
import { readFile } from 'node:fs/promises'
import { join, resolve } from 'node:path'
import { parseArgs } from 'node:util'
import { verify } from 'node:crypto'
import type { KeyObject } from 'node:crypto'
import { Errors, PixProxyError } from '../../core/errors.ts'
import { initSoftHsm } from '../token/hsm-init.ts'
import type { HsmInitKey, HsmInitResult } from '../token/hsm-init.ts'
import { Pkcs11KeyStore } from '../../src/hsm/pkcs11.ts'
import type { Pkcs11KeyInfo } from '../../src/hsm/pkcs11.ts'
import { readPin } from '../../src/hsm/uri.ts'
import { certificateMatchesKey, parseCertificate } from '../../core/pki/x509.ts'
import type { Certificate } from '../../core/pki/x509.ts'
import type { CliIo } from '../../src/cli/io.ts'
import { usageError } from '../../src/cli/io.ts'

export const INIT_USAGE = `usage: pix-proxy hsm init --dir DIR [--label pix-proxy] [--ispb 99999004] [--module PATH] [--force]
  create a SoftHSM2 token in DIR with non-extractable RSA-2048 keys pix-sign and pix-tls, a local test CA and
  their certificates; prints hsm.json as one JSON line (PINs stay in 0600 files, never printed)
  --module PATH   the PKCS#11 module (default: $PKCS11_MODULE_PATH, else SoftHSM2's)
  --force         replace a token already in DIR`
export const INFO_USAGE = `usage: pix-proxy hsm info --dir DIR
  describe the token hsm init made in DIR (\`make demo\`'s is .local/demo/hsm), its keys and certificates as JSON;
  exit 1 if a certificate does not match its key`

const USAGE = `${INIT_USAGE}\n${INFO_USAGE}`

type HsmIo = Pick<CliIo, 'stdout' | 'stderr' | 'env'>

/** Runs `pix-proxy hsm <sub>`; resolves to the exit code. PixProxyErrors propagate to the caller's reporter. */
export async function hsmCommand (argv: string[], io: HsmIo): Promise<number> {
  const [sub, ...rest] = argv
  switch (sub) {
    case 'init': return await init(rest, io)
    case 'info': return await info(rest, io)
    case undefined: case 'help': case '--help': case '-h':
      io.stdout.write(USAGE + '\n')
      return sub === undefined ? 2 : 0
    default:
      throw usageError(`unknown hsm command ${sub}\n${USAGE}`)
  }
}

async function init (argv: string[], io: HsmIo): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    options: {
      dir: { type: 'string' },
      label: { type: 'string' },
      ispb: { type: 'string' },
      module: { type: 'string' },
      force: { type: 'boolean', default: false }
    },
    strict: true,
    allowPositionals: false
  })
  if (values.dir === undefined) throw usageError(`hsm init needs --dir\n${USAGE}`)
  const modulePath = values.module ?? io.env.PKCS11_MODULE_PATH
  const result = await initSoftHsm({
    dir: values.dir,
    force: values.force,
    ...(values.label === undefined ? {} : { tokenLabel: values.label }),
    ...(values.ispb === undefined ? {} : { ispb: values.ispb }),
    ...(modulePath === undefined || modulePath === '' ? {} : { modulePath })
  })
  io.stdout.write(JSON.stringify(result) + '\n')
  return 0
}

interface CertificateFacts {
  file: string
  subject: string
  issuer: string
  serial: string
  notBefore: string
  notAfter: string
  fingerprint256: string
  /** The certificate's public key is the HSM key's. */
  matchesKey: boolean
  /** Signed by the local test CA of hsm.json. */
  issuedByCa: boolean
}

interface KeyReport extends Omit<Pkcs11KeyInfo, 'publicKey'> {
  uri: string
  certificate: CertificateFacts
  /** A signature made on the token verifies with the certificate's public key. */
  signatureVerifies: boolean
  ok: boolean
}

async function info (argv: string[], io: HsmIo): Promise<number> {
  const { values } = parseArgs({ args: argv, options: { dir: { type: 'string' } }, strict: true, allowPositionals: false })
  if (values.dir === undefined) throw usageError(`hsm info needs --dir\n${USAGE}`)
  const file = join(resolve(values.dir), 'hsm.json')
  let init: HsmInitResult
  try {
    init = JSON.parse(await readFile(file, 'utf8')) as HsmInitResult
  } catch (err) {
    throw new PixProxyError(Errors.CONFIG_INVALID, [`cannot read ${file} (run \`pix-proxy hsm init --dir ${values.dir}\` first): ${(err as Error).message}`], { cause: err })
  }
  // SoftHSM2 reads its configuration from the environment when the module initialises: this command owns the
  // process, the library code never reads the environment.
  process.env.SOFTHSM2_CONF = init.softhsmConf

  const ca = parseCertificate(await readFile(init.caCertFile))
  const store = await Pkcs11KeyStore.open({
    modulePath: init.modulePath,
    tokenLabel: init.tokenLabel,
    pin: await readPin({ pinSource: `file:${init.pinFile}` }),
    poolSize: 1
  })
  try {
    const token = store.tokenInfo()
    const describe = async (key: HsmInitKey): Promise<KeyReport> => {
      const k = await store.keyInfo(key.keyLabel)
      const cert = parseCertificate(await readFile(key.certFile))
      const facts = certificateFacts(key.certFile, cert, ca, k.publicKey)
      // A signature made on the token and checked with the certificate's key proves the pairing end to end.
      const probe = Buffer.from(`pix-proxy hsm info ${key.keyLabel} ${Date.now()}`)
      const signer = await store.signer(key.keyLabel)
      const signatureVerifies = verify('sha256', probe, cert.publicKey, await signer.sign(probe))
      const { publicKey: _publicKey, ...keyFacts } = k
      return {
        ...keyFacts,
        uri: key.uri,
        certificate: facts,
        signatureVerifies,
        ok: facts.matchesKey && facts.issuedByCa && signatureVerifies && k.sensitive && !k.extractable
      }
    }
    const signing = await describe(init.signing)
    const tls = await describe(init.tls)
    const ok = signing.ok && tls.ok
    io.stdout.write(JSON.stringify({
      ok,
      token: { ...token, modulePath: init.modulePath, softhsmConf: init.softhsmConf },
      signing,
      tls,
      ca: { file: init.caCertFile, subject: ca.subjectString, notAfter: ca.notAfter.toISOString(), fingerprint256: ca.fingerprint256 }
    }) + '\n')
    return ok ? 0 : 1
  } finally {
    await store.close()
  }
}

function certificateFacts (file: string, cert: Certificate, ca: Certificate, hsmKey: KeyObject): CertificateFacts {
  return {
    file,
    subject: cert.subjectString,
    issuer: cert.issuerString,
    serial: cert.serialDecimal,
    notBefore: cert.notBefore.toISOString(),
    notAfter: cert.notAfter.toISOString(),
    fingerprint256: cert.fingerprint256,
    matchesKey: certificateMatchesKey(cert, hsmKey),
    issuedByCa: cert.x509.checkIssued(ca.x509) && cert.x509.verify(ca.publicKey)
  }
}
