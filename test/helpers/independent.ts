/**
 * Wrappers around the independent XMLDSig implementations the project's own code is tested against: libxml2's
 * exclusive c14n through python3-lxml (lxml_c14n.py), an lxml + openssl signer for BACEN's two profiles
 * (independent_sign.py), xmlsec1 and the openssl command line. Nothing here imports project code: a bug shared by
 * the code under test and its oracle would hide itself.
 *
 * Every call writes its inputs into a fresh temporary directory, removed afterwards, and runs the tool with a
 * timeout; a tool that cannot run throws, a verification that fails returns `ok: false`.
 */
import { execFile } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'

const HELPERS_DIR = fileURLToPath(new URL('.', import.meta.url))
const C14N_SCRIPT = join(HELPERS_DIR, 'lxml_c14n.py')
const SIGN_SCRIPT = join(HELPERS_DIR, 'independent_sign.py')
const TOOL_TIMEOUT_MS = 60_000

/** The XMLDSig namespace: the only one the helpers need to name. */
const DSIG_NS = 'http://www.w3.org/2000/09/xmldsig#'

interface ToolResult {
  stdout: Buffer
  stderr: string
  /** Exit status. */
  code: number
}

/** Runs a tool; rejects only when it cannot be started or times out, whatever its exit status. */
function runTool (cmd: string, args: readonly string[]): Promise<ToolResult> {
  return new Promise((resolve, reject) => {
    execFile(cmd, args, { encoding: 'buffer', timeout: TOOL_TIMEOUT_MS, maxBuffer: 64 * 1024 * 1024 },
      (err, stdout, stderr) => {
        const stderrText = stderr.toString('utf8')
        if (err === null) {
          resolve({ stdout, stderr: stderrText, code: 0 })
          return
        }
        const exitCode = (err as { code?: unknown }).code
        if (typeof exitCode === 'number' && err.killed !== true) {
          resolve({ stdout, stderr: stderrText, code: exitCode })
          return
        }
        reject(new Error(`${cmd} ${args.join(' ')} did not run to completion: ${err.message}\n${stderrText}`,
          { cause: err }))
      })
  })
}

/** Runs a tool that must succeed and returns its stdout. */
async function runOk (cmd: string, args: readonly string[]): Promise<Buffer> {
  const r = await runTool(cmd, args)
  if (r.code !== 0) throw new Error(`${cmd} ${args.join(' ')} exited with ${r.code}: ${r.stderr}`)
  return r.stdout
}

let pythonLookup: Promise<string> | undefined

/**
 * The first python3 that can import lxml. The PATH's python3 may be a pyenv shim without it while Debian's
 * /usr/bin/python3 has python3-lxml, so both are tried. Cached: the answer cannot change during a test run.
 */
function findPython (): Promise<string> {
  pythonLookup ??= (async () => {
    const tried: string[] = []
    for (const candidate of ['/usr/bin/python3', 'python3']) {
      try {
        const r = await runTool(candidate, ['-c', 'import lxml.etree'])
        if (r.code === 0) return candidate
        tried.push(`${candidate}: ${r.stderr.trim()}`)
      } catch (err) {
        tried.push(`${candidate}: ${(err as Error).message}`)
      }
    }
    throw new Error(`no python3 with lxml found (install python3-lxml):\n${tried.join('\n')}`)
  })()
  return pythonLookup
}

/** Runs fn with a fresh temporary directory that is removed afterwards, whatever happens. */
export async function withTempDir<T> (fn: (dir: string) => Promise<T>): Promise<T> {
  const dir = await mkdtemp(join(tmpdir(), 'pixproxy-independent-'))
  try {
    return await fn(dir)
  } finally {
    await rm(dir, { recursive: true, force: true })
  }
}

async function python (script: string, args: readonly string[]): Promise<Buffer> {
  return runOk(await findPython(), [script, ...args])
}

/** Writes xml to a temporary file and runs one lxml_c14n.py mode on it. */
async function c14nMode (mode: string, xml: string | Buffer): Promise<Buffer> {
  return withTempDir(async (dir) => {
    const file = join(dir, 'in.xml')
    await writeFile(file, xml)
    return python(C14N_SCRIPT, [mode, file])
  })
}

export interface LxmlC14nOptions {
  /** XPath (prefix `ds` bound to the XMLDSig namespace) of the element to canonicalise; default the document. */
  xpath?: string
  /** Delete every ds:Signature first, as the enveloped-signature transform does. */
  removeSignature?: boolean
}

/** libxml2's exclusive c14n (without comments) of a file, or of the first element an XPath selects in it. */
export async function lxmlC14n (file: string, opts: LxmlC14nOptions = {}): Promise<Buffer> {
  const args = ['c14n', file]
  if (opts.xpath !== undefined) args.push('--xpath', opts.xpath)
  if (opts.removeSignature === true) args.push('--remove-signature')
  return python(C14N_SCRIPT, args)
}

/** Base64 SHA-256 digests of the SPI profile's references, as lxml computes them. */
export interface SpiDigests {
  /** Ref 1: the ds:KeyInfo element; null when the message has no signature. */
  keyInfo: string | null
  /** Ref 2 (URI=""): the AppHdr with the ds:Signature removed and the emptied Sgntr kept. */
  appHdr: string
  /** Ref 3 (no URI): the Document element. */
  document: string
}

export async function lxmlSpiDigests (xml: string | Buffer): Promise<SpiDigests> {
  return JSON.parse((await c14nMode('spi-digests', xml)).toString('utf8')) as SpiDigests
}

/** Base64 SHA-256 digests of the DICT profile's references, as lxml computes them. */
export interface DictDigests {
  /** Ref 1: the ds:KeyInfo element; null when the message has no signature. */
  keyInfo: string | null
  /** Ref 2 (URI=""): the whole document without the ds:Signature. */
  document: string
}

export async function lxmlDictDigests (xml: string | Buffer): Promise<DictDigests> {
  return JSON.parse((await c14nMode('dict-digests', xml)).toString('utf8')) as DictDigests
}

/** The bytes the SignatureValue covers: exc-c14n of ds:SignedInfo in its place in the document. */
export async function lxmlSignedInfoC14n (xml: string | Buffer): Promise<Buffer> {
  return c14nMode('signedinfo-c14n', xml)
}

/** The shape of a message's first ds:Signature, read by lxml. */
export interface SignatureInfo {
  /** Number of ds:Signature elements. */
  count: number
  /** Number of un-namespaced Signature elements (BCB's DICT placeholder). */
  placeholders: number
  prefix?: string | null
  /** Local names from the root to the Signature's parent, e.g. `/Envelope/AppHdr/Sgntr`. */
  parentPath?: string
  /** Position of the Signature among its parent's element children. */
  elementIndex?: number
  canonicalizationMethod?: string
  signatureMethod?: string
  references?: Array<{ uri: string | null, transforms: string[], digestMethod: string, digestValue: string }>
  /** Base64 with whitespace removed. */
  signatureValue?: string
  keyInfoId?: string
  issuerName?: string | null
  serialNumber?: string | null
}

export async function lxmlSignatureInfo (xml: string | Buffer): Promise<SignatureInfo> {
  return JSON.parse((await c14nMode('sig-info', xml)).toString('utf8')) as SignatureInfo
}

export interface IndependentSignOptions {
  /** PEM RSA private key. */
  keyPem: string
  /** Text for ds:X509IssuerName. */
  issuer: string
  /** Decimal certificate serial number. */
  serial: string
}

/** Signs xml with independent_sign.py (lxml c14n + hashlib + `openssl dgst -sign`) in BACEN's SPI or DICT profile. */
export async function independentSign (profile: 'spi' | 'dict', xml: string | Buffer,
  opts: IndependentSignOptions): Promise<string> {
  return withTempDir(async (dir) => {
    const input = join(dir, 'in.xml')
    const output = join(dir, 'out.xml')
    const key = join(dir, 'key.pem')
    await writeFile(input, xml)
    await writeFile(key, opts.keyPem, { mode: 0o600 })
    await python(SIGN_SCRIPT, [profile, '--key', key, '--issuer', opts.issuer, '--serial', opts.serial, input, output])
    return readFile(output, 'utf8')
  })
}

export interface Xmlsec1Result {
  /** xmlsec1 exited 0, said OK and verified every Reference of SignedInfo. */
  ok: boolean
  /** xmlsec1's stdout and stderr. */
  output: string
  /** From "SignedInfo References (ok/all): N/M"; null when xmlsec1 did not get that far. */
  referencesOk: number | null
  referencesAll: number | null
}

/**
 * Verifies a DICT-profile message with xmlsec1 and the signer's certificate. `--id-attr:Id` makes the KeyInfo's
 * Id attribute an XML ID so that Reference URI="#key-info-id" resolves; URI="" is the whole document (standard
 * semantics), so SPI messages, whose Ref 2 and 3 mean the AppHdr and the Document, cannot pass here by design.
 */
export async function xmlsec1Verify (xml: string | Buffer, certPem: string): Promise<Xmlsec1Result> {
  return withTempDir(async (dir) => {
    const file = join(dir, 'signed.xml')
    const cert = join(dir, 'cert.pem')
    await writeFile(file, xml)
    await writeFile(cert, certPem)
    const r = await runTool('xmlsec1', ['--verify', '--pubkey-cert-pem', cert, '--id-attr:Id', `${DSIG_NS}:KeyInfo`,
      file])
    const output = r.stdout.toString('utf8') + r.stderr
    const m = /SignedInfo References \(ok\/all\): (\d+)\/(\d+)/.exec(output)
    const referencesOk = m?.[1] !== undefined ? Number(m[1]) : null
    const referencesAll = m?.[2] !== undefined ? Number(m[2]) : null
    const ok = r.code === 0 && /^OK$/m.test(output) && referencesAll !== null && referencesAll > 0 &&
      referencesOk === referencesAll
    return { ok, output, referencesOk, referencesAll }
  })
}

/** A key and certificate made by the openssl command line, independent of the project's own test PKI. */
export interface OpensslIdentity {
  keyPem: string
  certPem: string
  caCertPem: string
  /** Issuer DN in RFC 4514 order with ", " separators. */
  issuer: string
  /** Decimal serial number. */
  serial: string
}

/** Creates a throwaway CA and an RSA-2048 signing certificate issued by it with `openssl req`/`openssl x509`. */
export async function opensslIdentity (subjectCn = '99999004 Assinatura SPI Teste'): Promise<OpensslIdentity> {
  return withTempDir(async (dir) => {
    const p = (name: string) => join(dir, name)
    await runOk('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', p('ca.key'), '-out', p('ca.pem'),
      '-days', '2', '-subj', '/C=BR/O=PIX Proxy Independent Test/CN=Independent Test CA'])
    await runOk('openssl', ['req', '-newkey', 'rsa:2048', '-nodes', '-keyout', p('leaf.key'), '-out', p('leaf.csr'),
      '-subj', `/C=BR/O=Banco Exemplo S.A./CN=${subjectCn}`])
    // A 63-bit serial exercises multi-byte decimal serials without a leading-zero/sign-bit corner case.
    const serial = (BigInt('0x' + randomBytes(8).toString('hex')) >> 1n).toString(10)
    await runOk('openssl', ['x509', '-req', '-in', p('leaf.csr'), '-CA', p('ca.pem'), '-CAkey', p('ca.key'),
      '-set_serial', serial, '-days', '1', '-out', p('leaf.pem')])
    return {
      keyPem: await readFile(p('leaf.key'), 'utf8'),
      certPem: await readFile(p('leaf.pem'), 'utf8'),
      caCertPem: await readFile(p('ca.pem'), 'utf8'),
      issuer: 'CN=Independent Test CA, O=PIX Proxy Independent Test, C=BR',
      serial
    }
  })
}

/** `openssl dgst -sha256 -verify` of an RSA-SHA256 signature over data with the certificate's public key. */
export async function opensslVerify (data: Buffer, signature: Buffer, certPem: string): Promise<boolean> {
  return withTempDir(async (dir) => {
    const p = (name: string) => join(dir, name)
    await writeFile(p('cert.pem'), certPem)
    await writeFile(p('data.bin'), data)
    await writeFile(p('sig.bin'), signature)
    const pub = await runOk('openssl', ['x509', '-in', p('cert.pem'), '-pubkey', '-noout'])
    await writeFile(p('pub.pem'), pub)
    const r = await runTool('openssl', ['dgst', '-sha256', '-verify', p('pub.pem'), '-signature', p('sig.bin'),
      p('data.bin')])
    if (r.code === 0 && r.stdout.toString('utf8').includes('Verified OK')) return true
    if (r.code === 1 && r.stdout.toString('utf8').includes('Verification failure')) return false
    throw new Error(`openssl dgst -verify failed to run (exit ${r.code}): ${r.stderr}`)
  })
}
