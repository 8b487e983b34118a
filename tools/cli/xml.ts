/**
 * `pix-proxy xml sign` and `pix-proxy xml verify`: the signing core from the command line, machine-readable.
 *
 *   pix-proxy xml sign --profile spi|dict --key <PEM file | pkcs11: URI> --cert <PEM> [--in F] [--out F]
 *   pix-proxy xml verify [--profile spi|dict|auto] [--cert PEM]... [--digests-only] [--now ISO] FILE|-
 *   pix-proxy xml sample pacs.008|pibr.001|CreateEntryRequest [--out F]
 *
 * verify prints one JSON object and exits 0 only when the message is valid (1 when it is not, 2 on usage errors).
 */
import { writeFile } from 'node:fs/promises'
import { parseArgs } from 'node:util'
import { XmlSigner } from '../../core/xmldsig/sign.ts'
import { verifyXml } from '../../core/xmldsig/verify.ts'
import { TrustStore } from '../../core/xmldsig/truststore.ts'
import { parseCertificate, parseCertificates } from '../../core/pki/x509.ts'
import { SoftwareSigner } from '../../core/signer.ts'
import type { Signer } from '../../core/signer.ts'
import { Pkcs11KeyStore } from '../../src/hsm/pkcs11.ts'
import { parsePkcs11Uri, readPin } from '../../src/hsm/uri.ts'
import { createEntryRequest, pacs008, pibr001, SAMPLE_PAYER } from '../samples/messages.ts'
import type { CliIo } from '../../src/cli/io.ts'
import { readInputFile, readStdin, usageError } from '../../src/cli/io.ts'

export const SIGN_USAGE = `usage: pix-proxy xml sign --profile spi|dict --key <PEM file | pkcs11: URI> --cert <PEM> [--in FILE] [--out FILE]
  sign an unsigned message (stdin when --in is absent or -; stdout when --out is absent or -)
  --key pkcs11:token=L;object=K;type=private?pin-source=file:PIN  a key in the HSM (module: $PKCS11_MODULE_PATH
                                                                  unless the URI has module-path=)`
export const VERIFY_USAGE = `usage: pix-proxy xml verify [--profile spi|dict|auto] [--cert PEM]... [--digests-only] [--now ISO-8601] FILE|-
  verify a signed message; prints one JSON object; exit 0 only when it is valid, 1 when it is not
  --cert PEM        a certificate (bundle) trusted to sign; --digests-only checks the digests without one`

/** The unsigned messages `xml sample` prints: what a bank core sends pix-proxy, with fresh ids every time. */
const SAMPLES: Readonly<Record<string, () => string>> = {
  'pacs.008': () => pacs008({ amounts: [150.75] }).xml,
  'pibr.001': () => pibr001().xml,
  CreateEntryRequest: () => createEntryRequest().xml
}
export const SAMPLE_USAGE = `usage: pix-proxy xml sample ${Object.keys(SAMPLES).join('|')} [--out FILE]
  print a realistic unsigned message from participant ${SAMPLE_PAYER.ispb} (the demo's) with fresh ids (BizMsgIdr,
  EndToEndId, RequestId, a new DICT key), ready for xml sign or for a POST to pix-proxy`

export async function xmlCommand (argv: string[], io: CliIo): Promise<number> {
  const [sub, ...rest] = argv
  if (sub === 'sign') return await sign(rest, io)
  if (sub === 'verify') return await verify(rest, io)
  if (sub === 'sample') return await sample(rest, io)
  throw usageError(`${SIGN_USAGE}\n${VERIFY_USAGE}\n${SAMPLE_USAGE}`)
}

async function sample (argv: string[], io: CliIo): Promise<number> {
  const { values, positionals } = parseArgs({ args: argv, options: { out: { type: 'string' } }, strict: true, allowPositionals: true })
  const [name] = positionals
  if (positionals.length !== 1 || name === undefined || !Object.hasOwn(SAMPLES, name)) throw usageError(SAMPLE_USAGE)
  const xml = (SAMPLES[name] as () => string)()
  if (values.out === undefined || values.out === '-') io.stdout.write(xml)
  else await writeFile(values.out, xml)
  return 0
}

interface OpenedSigner {
  readonly signer: Signer
  close (): Promise<void>
}

/** A PEM file path, or a pkcs11: URI whose module defaults to PKCS11_MODULE_PATH and whose PIN comes from a file. */
export async function openSigner (key: string, env: NodeJS.ProcessEnv): Promise<OpenedSigner> {
  if (!key.startsWith('pkcs11:')) {
    const signer = SoftwareSigner.fromPem(await readInputFile(key))
    return { signer, close: async () => {} }
  }
  const uri = parsePkcs11Uri(key)
  const modulePath = uri.modulePath ?? env.PKCS11_MODULE_PATH
  if (modulePath === undefined || modulePath === '') throw usageError('the pkcs11: URI has no module-path and PKCS11_MODULE_PATH is not set')
  if (uri.token === undefined) throw usageError('the pkcs11: URI needs token=<label>')
  if (uri.object === undefined) throw usageError('the pkcs11: URI needs object=<key label>')
  const pin = await readPin(uri)
  const store = await Pkcs11KeyStore.open({ modulePath, tokenLabel: uri.token, pin, poolSize: 1 })
  try {
    const signer = await store.signer(uri.object)
    return { signer, close: async () => { await store.close() } }
  } catch (err) {
    await store.close()
    throw err
  }
}

async function sign (argv: string[], io: CliIo): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    options: {
      profile: { type: 'string' },
      key: { type: 'string' },
      cert: { type: 'string' },
      in: { type: 'string' },
      out: { type: 'string' }
    },
    strict: true,
    allowPositionals: false
  })
  if (values.profile !== 'spi' && values.profile !== 'dict') throw usageError(SIGN_USAGE)
  if (values.key === undefined || values.cert === undefined) throw usageError(SIGN_USAGE)
  const certificate = parseCertificate(await readInputFile(values.cert))
  const input = values.in === undefined || values.in === '-' ? await readStdin(io.stdin) : await readInputFile(values.in)
  const opened = await openSigner(values.key, io.env)
  try {
    const signed = await new XmlSigner({ signer: opened.signer, certificate }).sign(input, values.profile)
    if (values.out === undefined || values.out === '-') io.stdout.write(signed)
    else await writeFile(values.out, signed)
  } finally {
    await opened.close()
  }
  return 0
}

async function verify (argv: string[], io: CliIo): Promise<number> {
  const { values, positionals } = parseArgs({
    args: argv,
    options: {
      profile: { type: 'string', default: 'auto' },
      cert: { type: 'string', multiple: true, default: [] },
      'digests-only': { type: 'boolean', default: false },
      now: { type: 'string' }
    },
    strict: true,
    allowPositionals: true
  })
  const profile = values.profile
  if (profile !== 'spi' && profile !== 'dict' && profile !== 'auto') throw usageError(VERIFY_USAGE)
  if (positionals.length !== 1) throw usageError(VERIFY_USAGE)
  const digestsOnly = values['digests-only']
  if (!digestsOnly && values.cert.length === 0) throw usageError('verify needs --cert (the signer\'s certificate) or --digests-only\n' + VERIFY_USAGE)
  let now: Date | undefined
  if (values.now !== undefined) {
    now = new Date(values.now)
    if (Number.isNaN(now.getTime())) throw usageError(`--now ${values.now} is not an ISO-8601 date`)
  }
  const trustStore = new TrustStore()
  for (const file of values.cert) {
    for (const c of parseCertificates((await readInputFile(file)).toString('utf8'))) trustStore.add(c)
  }
  const file = positionals[0] as string
  const input = file === '-' ? await readStdin(io.stdin) : await readInputFile(file)
  const result = verifyXml(input, { profile, trustStore, digestsOnly, ...(now === undefined ? {} : { now }) })
  const { valid, code, message, profile: p, references, signatureValid, signer } = result
  io.stdout.write(JSON.stringify({ valid, code, message, profile: p, references, signatureValid, signer }) + '\n')
  return result.valid ? 0 : 1
}
