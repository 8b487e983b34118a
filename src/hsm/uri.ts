import { readFile } from 'node:fs/promises'
import { fileURLToPath } from 'node:url'
import { Errors, PixProxyError } from '../../core/errors.ts'

/** The parts of an RFC 7512 PKCS#11 URI that pix-proxy uses. */
export interface Pkcs11Uri {
  /** CKA_LABEL of the token (`token=`). */
  token?: string
  /** CKA_LABEL of the object (`object=`). */
  object?: string
  /** CKA_ID of the object (`id=`), raw bytes. */
  id?: Buffer
  /** Object class: `public`, `private`, `cert`, `secret-key` or `data`. */
  type?: string
  /** Where the PIN comes from (`pin-source=`); pix-proxy reads `file:` sources only. */
  pinSource?: string
  /** A literal PIN (`pin-value=`); parsed so that it can be refused with a clear message, never used. */
  pinValue?: string
  /** Path of the PKCS#11 module (`module-path=`). */
  modulePath?: string
}

const OBJECT_TYPES = new Set(['public', 'private', 'cert', 'secret-key', 'data'])

// RFC 7512 §2.3: characters that may appear unencoded in the path and in the query.
const UNRESERVED = 'A-Za-z0-9\\-._~'
const RES_AVAIL = ':\\[\\]@!$\'()*+,='
const PATH_SAFE = new RegExp(`[^${UNRESERVED}${RES_AVAIL}&]`, 'g')
const QUERY_SAFE = new RegExp(`[^${UNRESERVED}${RES_AVAIL}/?|]`, 'g')

function invalid (reason: string): PixProxyError {
  return new PixProxyError(Errors.HSM_URI_INVALID, [reason])
}

function pctDecode (value: string, attr: string): Buffer {
  const bytes: number[] = []
  for (let i = 0; i < value.length; i++) {
    const c = value[i] as string
    if (c === '%') {
      const hex = value.slice(i + 1, i + 3)
      if (!/^[0-9A-Fa-f]{2}$/.test(hex)) throw invalid(`bad percent-encoding in ${attr}`)
      bytes.push(parseInt(hex, 16))
      i += 2
    } else {
      const code = c.codePointAt(0) as number
      if (code < 0x21 || code > 0x7e) throw invalid(`${attr} contains a character that must be percent-encoded`)
      bytes.push(code)
    }
  }
  return Buffer.from(bytes)
}

const utf8 = new TextDecoder('utf-8', { fatal: true })

function decodeText (value: string, attr: string): string {
  try {
    return utf8.decode(pctDecode(value, attr))
  } catch (err) {
    if (err instanceof PixProxyError) throw err
    throw invalid(`${attr} is not UTF-8`)
  }
}

function pctEncode (value: string | Buffer, unsafe: RegExp): string {
  if (Buffer.isBuffer(value)) return [...value].map((b) => '%' + b.toString(16).toUpperCase().padStart(2, '0')).join('')
  return Buffer.from(value, 'utf8').toString('latin1').replace(unsafe, (c) => '%' + c.charCodeAt(0).toString(16).toUpperCase().padStart(2, '0'))
}

function splitAttr (part: string): [string, string] {
  const eq = part.indexOf('=')
  if (eq <= 0) throw invalid(`attribute "${part}" has no name=value form`)
  return [part.slice(0, eq), part.slice(eq + 1)]
}

/**
 * Parses an RFC 7512 PKCS#11 URI as given on the command line, e.g.
 * `pkcs11:token=pix-proxy;object=pix-sign;type=private?pin-source=file:/run/secrets/pin&module-path=/usr/lib/softhsm/libsofthsm2.so`.
 *
 * Strict on purpose: attributes pix-proxy does not honour (serial, manufacturer, slot-id, vendor `x-` ones…)
 * are rejected instead of being ignored, because ignoring one would silently select a different object.
 */
export function parsePkcs11Uri (uri: string): Pkcs11Uri {
  if (!/^pkcs11:/i.test(uri)) throw invalid('it does not start with "pkcs11:"')
  const rest = uri.slice('pkcs11:'.length)
  const q = rest.indexOf('?')
  const path = q === -1 ? rest : rest.slice(0, q)
  const query = q === -1 ? '' : rest.slice(q + 1)
  const out: Pkcs11Uri = {}
  const seen = new Set<string>()
  const once = (name: string): void => {
    if (seen.has(name)) throw invalid(`attribute ${name} appears more than once`)
    seen.add(name)
  }

  if (path !== '') {
    for (const part of path.split(';')) {
      const [name, value] = splitAttr(part)
      once(name)
      switch (name) {
        case 'token': out.token = decodeText(value, name); break
        case 'object': out.object = decodeText(value, name); break
        case 'id': out.id = pctDecode(value, name); break
        case 'type': {
          const type = decodeText(value, name)
          if (!OBJECT_TYPES.has(type)) throw invalid(`type must be one of ${[...OBJECT_TYPES].join(', ')}, got "${type}"`)
          out.type = type
          break
        }
        default: throw invalid(`path attribute "${name}" is not supported (use token, object, id, type)`)
      }
    }
  }
  if (query !== '') {
    for (const part of query.split('&')) {
      const [name, value] = splitAttr(part)
      once(name)
      switch (name) {
        case 'pin-source': out.pinSource = decodeText(value, name); break
        case 'pin-value': out.pinValue = decodeText(value, name); break
        case 'module-path': out.modulePath = decodeText(value, name); break
        default: throw invalid(`query attribute "${name}" is not supported (use pin-source, module-path)`)
      }
    }
  }
  if (out.pinSource !== undefined && out.pinValue !== undefined) throw invalid('pin-source and pin-value are mutually exclusive')
  return out
}

/** Formats a PKCS#11 URI (the inverse of {@link parsePkcs11Uri}); a literal PIN is never written. */
export function formatPkcs11Uri (parts: Omit<Pkcs11Uri, 'pinValue'>): string {
  const path: string[] = []
  if (parts.token !== undefined) path.push('token=' + pctEncode(parts.token, PATH_SAFE))
  if (parts.object !== undefined) path.push('object=' + pctEncode(parts.object, PATH_SAFE))
  if (parts.id !== undefined) path.push('id=' + pctEncode(parts.id, PATH_SAFE))
  if (parts.type !== undefined) {
    if (!OBJECT_TYPES.has(parts.type)) throw invalid(`type must be one of ${[...OBJECT_TYPES].join(', ')}, got "${parts.type}"`)
    path.push('type=' + parts.type)
  }
  const query: string[] = []
  if (parts.pinSource !== undefined) query.push('pin-source=' + pctEncode(parts.pinSource, QUERY_SAFE))
  if (parts.modulePath !== undefined) query.push('module-path=' + pctEncode(parts.modulePath, QUERY_SAFE))
  return 'pkcs11:' + path.join(';') + (query.length > 0 ? '?' + query.join('&') : '')
}

/** The path a `pin-source` names (`file:/abs`, `file:relative`, `file:///abs`); only file: sources are supported. */
export function pinSourceFile (pinSource: string): string {
  if (!pinSource.startsWith('file:')) {
    throw new PixProxyError(Errors.HSM_PIN_SOURCE, [pinSource, 'only file: pin sources are supported'])
  }
  let file: string
  try {
    file = pinSource.startsWith('file://') ? fileURLToPath(pinSource) : pinSource.slice('file:'.length)
  } catch (err) {
    throw new PixProxyError(Errors.HSM_PIN_SOURCE, [pinSource, (err as Error).message], { cause: err })
  }
  if (file === '') throw new PixProxyError(Errors.HSM_PIN_SOURCE, [pinSource, 'empty path'])
  return file
}

/**
 * Reads the user PIN named by a URI's `pin-source` (`file:/abs/path`, `file:relative/path` or
 * `file:///abs/path`), dropping one trailing newline. A `pin-value` is refused: a PIN written into a URI
 * ends up in shell history, process listings and logs.
 */
export async function readPin (source: { pinSource?: string, pinValue?: string }): Promise<string> {
  if (source.pinValue !== undefined) {
    throw new PixProxyError(Errors.HSM_PIN_SOURCE, ['pin-value', 'a PIN inside the URI is refused; use pin-source=file:<path>'])
  }
  const pinSource = source.pinSource
  if (pinSource === undefined) throw new PixProxyError(Errors.HSM_PIN_SOURCE, ['the URI', 'no pin-source given'])
  const file = pinSourceFile(pinSource)
  let text: string
  try {
    text = await readFile(file, 'utf8')
  } catch (err) {
    throw new PixProxyError(Errors.HSM_PIN_SOURCE, [file, (err as NodeJS.ErrnoException).code ?? (err as Error).message], { cause: err })
  }
  const pin = text.replace(/\r?\n$/, '')
  if (pin === '') throw new PixProxyError(Errors.HSM_PIN_SOURCE, [file, 'the file is empty'])
  return pin
}
