/**
 * What a caller may put in the path, the query string and the DICT headers of a forwarded request, checked in one
 * place before anything is signed or sent.
 *
 * Every `:Param` of every route is looked up by name in PATH_PARAMETERS: `installInputChecks` adds the check to each
 * route as it is registered and refuses, at start-up, a route whose parameter has no entry, so that a new route
 * cannot skip it. Forms are BACEN's (docs/bacen.md §1.4, §1.8, §2.3, §2.7); a value outside them would be refused
 * by BACEN anyway, and some would reach further than they should: `%2e%2e` arrives as `..`, which encodeURIComponent
 * leaves alone, and an empty value turns `GET /entries/{Key}` into `GET /entries/`, a different operation.
 */
import type { FastifyInstance, FastifyRequest, RouteOptions } from 'fastify'
import { Errors, PixProxyError } from '../../core/errors.ts'

export interface ParameterRule {
  /** The expected form, for the problem's detail. */
  readonly form: string
  readonly test: (value: string) => boolean
}

const UUID = /^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$/

/**
 * DICT key forms (docs/bacen.md §1.4): CPF 11 digits, CNPJ 14 alphanumerics, PHONE `+` and up to 15 digits (E.164),
 * EMAIL lower case (BACEN's pattern, at most 77 characters), EVP a lower-case UUID. Every key is at most 77.
 */
const KEY_FORMS: Readonly<Record<string, RegExp>> = Object.freeze({
  CPF: /^[0-9]{11}$/,
  CNPJ: /^[A-Za-z0-9]{14}$/,
  PHONE: /^\+[1-9][0-9]{1,14}$/,
  EMAIL: /^[a-z0-9.!#$'*+/=?^_`{|}~-]+@[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)*$/,
  EVP: /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/
})

/** The key type a DICT key has the form of, or undefined (an 11-digit key is a CPF, a 14-character one a CNPJ). */
export function keyType (key: string): string | undefined {
  if (key.length > 77) return undefined
  return Object.keys(KEY_FORMS).find((t) => (KEY_FORMS[t] as RegExp).test(key))
}

/** An ISPB: 8 digits or upper-case letters (docs/bacen.md §2.7). */
export const ISPB_RE = /^[0-9A-Z]{8}$/

/** Route parameter name → the values it may take. Every `:Name` in a route must be here. */
export const PATH_PARAMETERS: Readonly<Record<string, ParameterRule>> = Object.freeze({
  ispb: { form: 'an ISPB: 8 digits or upper-case letters', test: (v) => ISPB_RE.test(v) },
  Key: { form: 'a DICT key: CPF (11 digits), CNPJ (14 letters or digits), PHONE (+ and up to 15 digits), EMAIL (lower case, at most 77 characters) or EVP (lower-case UUID)', test: (v) => keyType(v) !== undefined },
  ClaimId: { form: 'a UUID', test: (v) => UUID.test(v) },
  // CidSetFile ids are integers; infraction reports, refunds, fraud markers and funds recoveries are UUIDs (§1.8).
  Id: { form: 'a UUID or a decimal number', test: (v) => UUID.test(v) || /^[0-9]{1,19}$/.test(v) },
  Cid: { form: '64 hexadecimal digits', test: (v) => /^[0-9a-fA-F]{64}$/.test(v) },
  TaxIdNumber: { form: 'a CPF (11 digits) or CNPJ (14 letters or digits)', test: (v) => /^[0-9]{11}$/.test(v) || /^[A-Za-z0-9]{14}$/.test(v) },
  Policy: { form: 'a policy name (upper-case letters, digits and _)', test: (v) => /^[A-Z][A-Z0-9_]{0,63}$/.test(v) },
  // ICOM's stream positions are opaque (a UUID and 12 hex digits in BACEN's examples, §2.3): anything that stays
  // one path segment and cannot be a dot segment.
  streamId: { form: '1 to 128 letters, digits, - or _', test: (v) => /^[A-Za-z0-9_-]{1,128}$/.test(v) }
})

/** The `:Name`s of a route template. */
export function templateParameters (template: string): string[] {
  return [...template.matchAll(/:([A-Za-z]+)/g)].map((m) => m[1] as string)
}

/** A caller's value as it may appear in a problem or a log line: bounded, control characters escaped. */
export function shown (value: string, max = 80): string {
  const cut = value.length > max ? `${value.slice(0, max)}… (${value.length} characters)` : value
  return JSON.stringify(cut)
}

/** Refuses a route parameter that is not of its form. */
export function checkPathParameter (name: string, value: string | undefined): void {
  const rule = PATH_PARAMETERS[name]
  // A route whose parameter has no rule is refused at start-up (installInputChecks); here it is a bug, never a pass.
  if (rule === undefined) throw new PixProxyError(Errors.INTERNAL)
  if (value === undefined || value === '' || !rule.test(value)) {
    throw new PixProxyError(Errors.PATH_PARAMETER_INVALID, [name, value === undefined || value === '' ? 'empty' : shown(value), rule.form])
  }
}

const MAX_QUERY = 2048

/**
 * The query string as it will be forwarded: percent-encoded ASCII only, names of letters and digits, values
 * without control characters or non-ASCII once decoded. No per-route allowlist: BACEN adds optional query parameters
 * in minor versions (docs/bacen.md §1.2) and a list here would refuse them. `Participant` names the participant a
 * listing is for, so it must be one this proxy acts for (as PI-RequestingParticipant).
 */
export function checkQuery (raw: string, participants: ReadonlySet<string>, ispb: string): void {
  if (raw === '') return
  if (raw.length > MAX_QUERY) throw new PixProxyError(Errors.QUERY_INVALID, [`it is ${raw.length} characters long; at most ${MAX_QUERY}`])
  // RFC 3986 query characters; anything else (non-ASCII, spaces, quotes, braces) must arrive percent-encoded.
  if (!/^[A-Za-z0-9\-._~!$&'()*+,;=:@/?%]*$/.test(raw)) throw new PixProxyError(Errors.QUERY_INVALID, [`${shown(raw)} holds characters that must be percent-encoded`])
  for (const pair of raw.split('&')) {
    if (pair === '') continue
    const eq = pair.indexOf('=')
    const name = eq < 0 ? pair : pair.slice(0, eq)
    let value: string
    try {
      value = decodeURIComponent((eq < 0 ? '' : pair.slice(eq + 1)).replace(/\+/g, ' '))
    } catch {
      throw new PixProxyError(Errors.QUERY_INVALID, [`${shown(pair)} is not valid percent-encoding`])
    }
    if (!/^[A-Za-z][A-Za-z0-9]{0,63}$/.test(name)) throw new PixProxyError(Errors.QUERY_INVALID, [`parameter name ${shown(name)} is not a name BACEN uses (letters and digits)`])
    if (!/^[\x20-\x7e]*$/.test(value)) throw new PixProxyError(Errors.QUERY_INVALID, [`parameter ${name} holds control characters or non-ASCII`])
    if (name === 'Participant' && !participants.has(value)) throw new PixProxyError(Errors.PARTICIPANT_MISMATCH, ['the query parameter Participant', shown(value), ispb])
  }
}

/**
 * Adds the path and query checks to every route registered after this call (in this instance and its children) that
 * has path parameters or starts with `/api/`, and refuses at start-up a route whose parameter has no rule. The check
 * runs in onRequest: before the body is read, signed or audited.
 */
export function installInputChecks (app: FastifyInstance): void {
  const { config } = app
  const participants = new Set([config.ispb, ...config.indirectParticipants])
  app.addHook('onRoute', (route: RouteOptions) => {
    const names = templateParameters(route.url ?? '')
    for (const n of names) {
      if (PATH_PARAMETERS[n] === undefined) throw new Error(`route ${String(route.method)} ${route.url} has parameter :${n} with no rule in PATH_PARAMETERS (src/routes/params.ts)`)
    }
    if (names.length === 0 && !(route.url ?? '').startsWith('/api/')) return
    const check = async (req: FastifyRequest): Promise<void> => {
      const params = req.params as Record<string, string | undefined>
      for (const n of names) checkPathParameter(n, params[n])
      const q = req.url.indexOf('?')
      checkQuery(q < 0 ? '' : req.url.slice(q + 1), participants, config.ispb)
    }
    const existing = route.onRequest
    route.onRequest = existing === undefined ? [check] : [check, ...(Array.isArray(existing) ? existing : [existing])]
  })
}
