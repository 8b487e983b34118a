/**
 * The TLS policy Open Finance Brasil requires of the endpoints its participants call over mutual TLS, as
 * node:tls options for the gateway's server.
 *
 * Sources (docs/gateway.md has the full discussion):
 *   - Open Finance Brasil Financial-grade API Security Profile 1.0 (ID3), "Secure Use of Transport Layer Security
 *     considerations": endpoints shall support TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256 and
 *     TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384, and shall disable "TLS Session Resumption" and "TLS Renegotiation".
 *     https://github.com/OpenBanking-Brasil/specs-seguranca/blob/main/open-banking-brasil-financial-api-1_ID3.md
 *   - That profile builds on FAPI 1.0 Advanced (Part 2) §8.5 and Baseline (Part 1) §7.1: TLS 1.2 or later; below
 *     TLS 1.3 only four cipher suites are permitted: TLS_{DHE,ECDHE}_RSA_WITH_AES_{128_GCM_SHA256,256_GCM_SHA384}.
 *     https://openid.net/specs/openid-financial-api-part-1-1_0.html
 *     https://openid.net/specs/openid-financial-api-part-2-1_0.html#tls-considerations
 * TLS 1.3 suites are not restricted by either document; the three OpenSSL enables by default (RFC 8446 §9.1's
 * mandatory and recommended ones) are used.
 *
 * The DHE suites are permitted, not required; RFC 9325 (BCP 195) §4.2 no longer recommends them, and the gateway's
 * RSA key in the HSM works with ECDHE. They are off unless asked for (`allowDhe`).
 */
import { constants } from 'node:crypto'

/** The TLS 1.2 suites Open Finance requires every endpoint to support (IANA names). */
export const OFB_TLS12_REQUIRED_SUITES: readonly string[] = Object.freeze([
  'TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256',
  'TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384'
])

/** The only TLS 1.2 suites FAPI 1.0 Advanced permits (IANA names): the required ones plus their DHE twins. */
export const OFB_TLS12_PERMITTED_SUITES: readonly string[] = Object.freeze([
  'TLS_DHE_RSA_WITH_AES_128_GCM_SHA256',
  'TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256',
  'TLS_DHE_RSA_WITH_AES_256_GCM_SHA384',
  'TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384'
])

/** IANA name -> OpenSSL name of the TLS 1.2 suites above. */
export const OPENSSL_NAMES: Readonly<Record<string, string>> = Object.freeze({
  TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256: 'ECDHE-RSA-AES128-GCM-SHA256',
  TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384: 'ECDHE-RSA-AES256-GCM-SHA384',
  TLS_DHE_RSA_WITH_AES_128_GCM_SHA256: 'DHE-RSA-AES128-GCM-SHA256',
  TLS_DHE_RSA_WITH_AES_256_GCM_SHA384: 'DHE-RSA-AES256-GCM-SHA384'
})

/** TLS 1.3 suites (IANA and OpenSSL use the same names), strongest first. */
export const OFB_TLS13_SUITES: readonly string[] = Object.freeze([
  'TLS_AES_256_GCM_SHA384',
  'TLS_AES_128_GCM_SHA256',
  'TLS_CHACHA20_POLY1305_SHA256'
])

/** Server preference: ECDHE before DHE, AES-256 before AES-128. */
const PREFERENCE: readonly string[] = [
  'TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384',
  'TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256',
  'TLS_DHE_RSA_WITH_AES_256_GCM_SHA384',
  'TLS_DHE_RSA_WITH_AES_128_GCM_SHA256'
]

/** Options for tls.createServer / tls.createSecureContext that implement the policy. */
export interface OfbTlsPolicy {
  readonly minVersion: 'TLSv1.2'
  readonly maxVersion: 'TLSv1.3'
  /** The OpenSSL cipher string for TLS 1.2 alone, e.g. for nginx's ssl_ciphers. */
  readonly tls12Ciphers: string
  /** The TLS 1.3 suites, colon-separated, e.g. for nginx's ssl_conf_command Ciphersuites. */
  readonly tls13Ciphersuites: string
  /** Node's `ciphers` option: TLS 1.3 suites and the TLS 1.2 string together (Node takes both in one list). */
  readonly ciphers: string
  /** The server picks the suite in the order above, strongest first. */
  readonly honorCipherOrder: true
  /** No session tickets (TLS 1.2 and 1.3) and no renegotiation: the profile requires both disabled. */
  readonly secureOptions: number
  /** Present only with allowDhe: Node discards DHE suites unless given DH parameters. */
  readonly dhparam?: 'auto'
}

/**
 * The Open Finance Brasil TLS policy: TLS 1.2 with ECDHE-RSA AES-GCM (plus the DHE twins when `allowDhe`) or TLS 1.3,
 * session tickets and renegotiation off. Spread it into the server's TLS options; session IDs are not resumable
 * because Node keeps no server session cache unless the server handles 'newSession'/'resumeSession' (do not).
 */
export function ofbTlsPolicy (opts: { allowDhe?: boolean } = {}): OfbTlsPolicy {
  const tls12 = PREFERENCE
    .filter((s) => opts.allowDhe === true || !s.startsWith('TLS_DHE_'))
    .map((s) => OPENSSL_NAMES[s] as string)
  const tls12Ciphers = tls12.join(':')
  const tls13Ciphersuites = OFB_TLS13_SUITES.join(':')
  return Object.freeze({
    minVersion: 'TLSv1.2',
    maxVersion: 'TLSv1.3',
    tls12Ciphers,
    tls13Ciphersuites,
    ciphers: tls13Ciphersuites + ':' + tls12Ciphers,
    honorCipherOrder: true,
    secureOptions: constants.SSL_OP_NO_TICKET | constants.SSL_OP_NO_RENEGOTIATION,
    ...(opts.allowDhe === true ? { dhparam: 'auto' as const } : {})
  })
}
