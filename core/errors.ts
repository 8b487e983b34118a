/**
 * The catalogue of pix-proxy error codes. Callers branch on `err.code`, never on the message; docs/errors.md
 * lists the same codes (a test keeps the two in step). Codes are stable: never rename one, add a new one.
 */

export interface ErrorSpec {
  readonly code: string
  /** Message template; `%s` placeholders are filled from the constructor arguments in order. */
  readonly message: string
  /** HTTP status a caller sees when this error ends a request. */
  readonly statusCode: number
  /**
   * What a bank core may conclude when this error ends its request (docs/outcomes.md): `not-sent` (nothing left the
   * proxy: safe to send again), `unknown` (the message may have reached BACEN: never send it again blindly) or
   * `answered` (BACEN answered; the problem carries its status and the verdict on its signature). Errors that can
   * only happen after a request was handed to the network are `unknown`: the forwarding pipeline reports them as
   * UPSTREAM_OUTCOME_UNKNOWN with this code as its `reason`.
   */
  readonly outcome: Outcome
}

/** The three outcome classes of an answer to a bank core. */
export type Outcome = 'not-sent' | 'unknown' | 'answered'

/** The message's identifiers, for a core to reconcile by (an OUTCOME UNKNOWN problem). */
export interface MessageIdentifiers {
  readonly bizMsgIdr?: string[]
  readonly endToEndIds?: string[]
  readonly dictRequestId?: string
  readonly dictKey?: string
}

/**
 * Members a problem carries beyond RFC 9457's own (docs/errors.md, docs/outcomes.md), set by the forwarding pipeline:
 * `outcome` overrides the code's class (an `answered` refusal), `upstreamStatus` is BACEN's status when its answer
 * arrived, `reason`/`identifiers`/`advice` describe an OUTCOME UNKNOWN, `signatureCode` the verdict on BACEN's
 * signature of a refused answer.
 */
export interface ProblemExtensions {
  readonly outcome?: Outcome
  readonly upstreamStatus?: number
  readonly reason?: string
  readonly identifiers?: MessageIdentifiers
  readonly advice?: string
  readonly signatureCode?: string
}

export class PixProxyError extends Error {
  readonly code: string
  readonly statusCode: number
  readonly outcome: Outcome
  /** The problem's extension members; `outcome` here, when set, is the class the caller hears. */
  extensions: ProblemExtensions
  /**
   * Seconds a caller should wait before sending again (the Retry-After of a NOT SENT 503), when the cause knows
   * better than the default 1 s: a KMS circuit paused for 10 s, a queue that needs 3 s to drain.
   */
  readonly retryAfterSeconds: number | undefined

  constructor (spec: ErrorSpec, args: readonly unknown[] = [], options?: { cause?: unknown, extensions?: ProblemExtensions, retryAfterSeconds?: number }) {
    let i = 0
    super(spec.message.replace(/%s/g, () => String(args[i++])), options?.cause === undefined ? undefined : { cause: options.cause })
    this.name = 'PixProxyError'
    this.code = spec.code
    this.statusCode = spec.statusCode
    this.outcome = spec.outcome
    this.extensions = options?.extensions ?? {}
    this.retryAfterSeconds = options?.retryAfterSeconds
  }
}

function define (code: string, message: string, statusCode = 500, outcome: Outcome = 'not-sent'): ErrorSpec {
  return Object.freeze({ code, message, statusCode, outcome })
}

export const Errors = Object.freeze({
  // Configuration and command line
  CONFIG_INVALID: define('PIXPROXY_ERR_CONFIG_INVALID', 'invalid configuration: %s'),
  USAGE: define('PIXPROXY_ERR_USAGE', '%s', 400),
  FILE_READ: define('PIXPROXY_ERR_FILE_READ', 'cannot read %s: %s'),

  // PKI
  CERT_PARSE: define('PIXPROXY_ERR_CERT_PARSE', 'cannot parse certificate: %s'),
  DN_PARSE: define('PIXPROXY_ERR_DN_PARSE', 'cannot parse distinguished name: %s', 400),
  KEY_CERT_MISMATCH: define('PIXPROXY_ERR_KEY_CERT_MISMATCH', 'the private key does not match the certificate %s'),
  DER_INVALID: define('PIXPROXY_ERR_DER_INVALID', 'malformed DER: %s'),
  CERT_ISSUE: define('PIXPROXY_ERR_CERT_ISSUE', 'cannot issue certificate: %s'),
  CRL_PARSE: define('PIXPROXY_ERR_CRL_PARSE', 'cannot parse certificate revocation list: %s'),
  CERT_UNSUITABLE: define('PIXPROXY_ERR_CERT_UNSUITABLE', 'certificate %s cannot be used: %s'),
  CSR_PARSE: define('PIXPROXY_ERR_CSR_PARSE', 'cannot parse certificate signing request: %s', 400),
  CSR_SIGNATURE: define('PIXPROXY_ERR_CSR_SIGNATURE', 'the certificate signing request is not signed by its own key: %s', 400),
  CSR_FIELD_INVALID: define('PIXPROXY_ERR_CSR_FIELD_INVALID', 'invalid certificate request %s: %s', 400),
  SIGNING_CERT_NOT_VALID: define('PIXPROXY_ERR_SIGNING_CERT_NOT_VALID', 'the signing certificate %s is valid from %s to %s, not now (%s): BACEN would reject every message', 503),

  // HSM (PKCS#11)
  HSM_MODULE_LOAD: define('PIXPROXY_ERR_HSM_MODULE_LOAD', 'cannot load PKCS#11 module %s: %s', 503),
  HSM_TOKEN_NOT_FOUND: define('PIXPROXY_ERR_HSM_TOKEN_NOT_FOUND', 'no PKCS#11 token labelled %s', 503),
  HSM_PIN_INCORRECT: define('PIXPROXY_ERR_HSM_PIN_INCORRECT', 'the HSM rejected the PIN for token %s (CKR_PIN_INCORRECT)', 503),
  HSM_PIN_LOCKED: define('PIXPROXY_ERR_HSM_PIN_LOCKED', 'the PIN of token %s is locked (CKR_PIN_LOCKED)', 503),
  HSM_KEY_NOT_FOUND: define('PIXPROXY_ERR_HSM_KEY_NOT_FOUND', 'no %s key labelled %s on token %s', 503),
  HSM_KEY_AMBIGUOUS: define('PIXPROXY_ERR_HSM_KEY_AMBIGUOUS', '%s keys labelled %s on token %s; labels must be unique', 503),
  HSM_POOL_CLOSED: define('PIXPROXY_ERR_HSM_POOL_CLOSED', 'the HSM session pool is closed', 503),
  HSM_POOL_TIMEOUT: define('PIXPROXY_ERR_HSM_POOL_TIMEOUT', 'no HSM session became free within %s ms', 503),
  HSM_OPERATION: define('PIXPROXY_ERR_HSM_OPERATION', 'HSM operation %s failed: %s', 503),
  HSM_TOKEN_AMBIGUOUS: define('PIXPROXY_ERR_HSM_TOKEN_AMBIGUOUS', '%s tokens labelled %s; token labels must be unique', 503),
  HSM_KEY_UNSUPPORTED: define('PIXPROXY_ERR_HSM_KEY_UNSUPPORTED', 'key %s on token %s cannot be used: %s', 503),
  HSM_KEY_MISMATCH: define('PIXPROXY_ERR_HSM_KEY_MISMATCH', 'the public key object for %s on token %s does not match the private key', 503),
  HSM_KEY_EXISTS: define('PIXPROXY_ERR_HSM_KEY_EXISTS', 'a key labelled %s already exists on token %s'),
  HSM_URI_INVALID: define('PIXPROXY_ERR_HSM_URI_INVALID', 'invalid PKCS#11 URI: %s', 400),
  HSM_PIN_SOURCE: define('PIXPROXY_ERR_HSM_PIN_SOURCE', 'cannot read the HSM PIN from %s: %s'),
  HSM_INIT_EXISTS: define('PIXPROXY_ERR_HSM_INIT_EXISTS', '%s already holds a SoftHSM token; pass --force to replace it'),
  HSM_INIT_FAILED: define('PIXPROXY_ERR_HSM_INIT_FAILED', 'cannot initialise a SoftHSM token in %s: %s'),

  // KMS (the XMLDSig signing key in AWS KMS instead of the HSM; src/kms/)
  KMS_KEY_UNSUITABLE: define('PIXPROXY_ERR_KMS_KEY_UNSUITABLE', 'the KMS key %s cannot sign for BACEN: %s', 503),
  KMS_KEY_MISMATCH: define('PIXPROXY_ERR_KMS_KEY_MISMATCH', 'the public key of KMS key %s is not the public key of the signing certificate %s', 503),
  KMS_KEY_NOT_FOUND: define('PIXPROXY_ERR_KMS_KEY_NOT_FOUND', 'KMS has no key %s (key id, key ARN, alias name or alias ARN)', 503),
  KMS_ACCESS_DENIED: define('PIXPROXY_ERR_KMS_ACCESS_DENIED', 'KMS refused %s on key %s: %s (the task role needs kms:%s on it)', 503),
  KMS_KEY_DISABLED: define('PIXPROXY_ERR_KMS_KEY_DISABLED', 'the KMS key %s is not enabled (%s): the request was not sent', 503),
  KMS_THROTTLED: define('PIXPROXY_ERR_KMS_THROTTLED', 'KMS throttled %s on key %s: the request was not sent; send it again later', 503),
  KMS_UNAVAILABLE: define('PIXPROXY_ERR_KMS_UNAVAILABLE', 'KMS %s on key %s failed (%s): the request was not sent', 503),
  KMS_QUEUE_FULL: define('PIXPROXY_ERR_KMS_QUEUE_FULL', '%s signatures are already waiting for their turn at KMS (PIXPROXY_KMS_QUEUE_MAX): the request was not sent', 503),
  KMS_QUEUE_TIMEOUT: define('PIXPROXY_ERR_KMS_QUEUE_TIMEOUT', 'the signature would wait %s ms for its turn at %s KMS signs per second, longer than %s ms (PIXPROXY_KMS_QUEUE_TIMEOUT_MS): the request was not sent', 503),
  KMS_CONNECTIONS_BUSY: define('PIXPROXY_ERR_KMS_CONNECTIONS_BUSY', 'all %s Sign calls this task may have in flight at KMS were still unanswered after %s ms (KMS is answering slowly): the request was not sent', 503),
  KMS_CIRCUIT_OPEN: define('PIXPROXY_ERR_KMS_CIRCUIT_OPEN', 'signing through KMS is paused after %s failures in a row (last: %s); %s: the request was not sent', 503),

  // XML input and signing (our own signing of a caller's message)
  XML_MALFORMED: define('PIXPROXY_ERR_XML_MALFORMED', 'the message is not well-formed XML: %s', 400),
  XML_DTD_FORBIDDEN: define('PIXPROXY_ERR_XML_DTD_FORBIDDEN', 'the message has a DOCTYPE or entity: %s', 400),
  XML_LIMIT_EXCEEDED: define('PIXPROXY_ERR_XML_LIMIT_EXCEEDED', 'the message exceeds a size limit: %s', 413),
  XML_DUPLICATE_ID: define('PIXPROXY_ERR_XML_DUPLICATE_ID', 'Id %s appears more than once in the message', 400),
  XML_ALREADY_SIGNED: define('PIXPROXY_ERR_XML_ALREADY_SIGNED', 'the message already carries a signature', 400),
  XML_NOT_SIGNABLE: define('PIXPROXY_ERR_XML_NOT_SIGNABLE', 'the message cannot be signed with the %s profile: %s', 400),

  // TLS key agent and upstream connections (mutual TLS to BACEN, src/tls/)
  TLS_PEM_INVALID: define('PIXPROXY_ERR_TLS_PEM_INVALID', 'the TLS %s is not usable PEM: %s'),
  TLS_CONTEXT_INVALID: define('PIXPROXY_ERR_TLS_CONTEXT_INVALID', 'invalid TLS client settings: %s'),
  TLS_KEY_PIN_INCORRECT: define('PIXPROXY_ERR_TLS_KEY_PIN_INCORRECT', 'the HSM rejected the PIN for the TLS key %s', 503),
  TLS_KEY_NOT_FOUND: define('PIXPROXY_ERR_TLS_KEY_NOT_FOUND', 'the TLS private key %s was not found (no such token or object)', 503),
  TLS_KEY_CERT_MISMATCH: define('PIXPROXY_ERR_TLS_KEY_CERT_MISMATCH', 'the TLS client certificate %s does not match the private key %s'),
  TLS_ENGINE_FAILED: define('PIXPROXY_ERR_TLS_ENGINE_FAILED', 'the OpenSSL pkcs11 engine cannot load the TLS key %s: %s', 503),
  UPSTREAM_CONNECT_TIMEOUT: define('PIXPROXY_ERR_UPSTREAM_CONNECT_TIMEOUT', 'no TLS connection to %s within %s ms; the request was not sent', 504),
  UPSTREAM_HEADERS_TIMEOUT: define('PIXPROXY_ERR_UPSTREAM_HEADERS_TIMEOUT', '%s sent no response headers within %s ms; it may have processed the request', 504, 'unknown'),
  UPSTREAM_TLS_HOSTNAME: define('PIXPROXY_ERR_UPSTREAM_TLS_HOSTNAME', 'the server certificate of %s is not valid for %s: %s', 502),
  UPSTREAM_TLS_UNTRUSTED: define('PIXPROXY_ERR_UPSTREAM_TLS_UNTRUSTED', 'the server certificate of %s was rejected: %s', 502),
  UPSTREAM_TLS_HANDSHAKE: define('PIXPROXY_ERR_UPSTREAM_TLS_HANDSHAKE', 'the TLS handshake with %s failed: %s', 502),
  UPSTREAM_CLOSED: define('PIXPROXY_ERR_UPSTREAM_CLOSED', 'the connection pool to %s is closed; the request was not sent', 503),
  UPSTREAM_CONNECTION_LOST: define('PIXPROXY_ERR_UPSTREAM_CONNECTION_LOST', 'the connection to %s failed after the request was handed to it: %s', 502, 'unknown'),

  // Proxy requests (answered to bank core systems as RFC 9457 problem+json)
  BAD_REQUEST: define('PIXPROXY_ERR_BAD_REQUEST', 'the request cannot be handled: %s', 400),
  ROUTE_NOT_ALLOWED: define('PIXPROXY_ERR_ROUTE_NOT_ALLOWED', '%s %s is not a BACEN operation this proxy forwards', 404),
  MEDIA_TYPE: define('PIXPROXY_ERR_MEDIA_TYPE', 'unsupported Content-Type %s: send %s', 415),
  BODY_TOO_LARGE: define('PIXPROXY_ERR_BODY_TOO_LARGE', 'the request body exceeds %s bytes', 413),
  BODY_REQUIRED: define('PIXPROXY_ERR_BODY_REQUIRED', '%s %s needs an XML body', 400),
  PARTICIPANT_MISMATCH: define('PIXPROXY_ERR_PARTICIPANT_MISMATCH', '%s is %s but this proxy signs for ISPB %s', 403),
  PATH_PARAMETER_INVALID: define('PIXPROXY_ERR_PATH_PARAMETER_INVALID', 'path parameter %s is %s: expected %s', 400),
  QUERY_INVALID: define('PIXPROXY_ERR_QUERY_INVALID', 'the query string cannot be forwarded: %s', 400),
  HEADER_INVALID: define('PIXPROXY_ERR_HEADER_INVALID', 'header %s is %s: expected %s', 400),
  CLIENT_NOT_ALLOWED: define('PIXPROXY_ERR_CLIENT_NOT_ALLOWED', 'the client certificate %s is not on the allowlist', 403),
  SPI_QUEUE_FULL: define('PIXPROXY_ERR_SPI_QUEUE_FULL', 'ICOM allows %s concurrent requests and %s more are already waiting', 503),
  SPI_QUEUE_TIMEOUT: define('PIXPROXY_ERR_SPI_QUEUE_TIMEOUT', 'no ICOM slot became free within %s ms', 503),
  SHUTTING_DOWN: define('PIXPROXY_ERR_SHUTTING_DOWN', 'the proxy is shutting down', 503),
  CLIENT_GONE: define('PIXPROXY_ERR_CLIENT_GONE', 'the caller closed its connection before the message left: it was not sent', 499),
  MEMORY_BUDGET: define('PIXPROXY_ERR_MEMORY_BUDGET', 'admitting this request (%s bytes) would take the requests in flight past the memory budget (%s of %s bytes held): the request was not sent', 503),
  UPSTREAM_UNAVAILABLE: define('PIXPROXY_ERR_UPSTREAM_UNAVAILABLE', 'no connection to %s could be made (%s): the request was not sent', 502),
  UPSTREAM_TIMEOUT: define('PIXPROXY_ERR_UPSTREAM_TIMEOUT', '%s did not answer in time: %s', 504, 'unknown'),
  UPSTREAM_DEADLINE: define('PIXPROXY_ERR_UPSTREAM_DEADLINE', 'no whole answer from %s within %s ms (PIXPROXY_UPSTREAM_DEADLINE_MS): the call was abandoned', 504, 'unknown'),
  UPSTREAM_OUTCOME_UNKNOWN: define('PIXPROXY_ERR_UPSTREAM_OUTCOME_UNKNOWN', 'the request may have reached %s and been acted on, but no answer came (%s): do not send it again blindly; %s', 502, 'unknown'),
  UPSTREAM_BAD_RESPONSE: define('PIXPROXY_ERR_UPSTREAM_BAD_RESPONSE', '%s sent a response the proxy cannot read: %s', 502, 'answered'),
  UPSTREAM_ANSWER_MISMATCH: define('PIXPROXY_ERR_UPSTREAM_ANSWER_MISMATCH', 'the %s answer names %s %s, not the %s asked for (%s): refused whatever its signature', 502, 'answered'),
  UPSTREAM_SIGNATURE_INVALID: define('PIXPROXY_ERR_UPSTREAM_SIGNATURE_INVALID', 'the %s response signature is not valid (%s): %s', 502, 'answered'),
  INTERNAL: define('PIXPROXY_ERR_INTERNAL', 'internal error', 500),

  // SIMULATOR (the local BACEN simulator, tools/simulator/)
  SIMULATOR_CONFIG: define('PIXPROXY_ERR_SIMULATOR_CONFIG', 'invalid simulator configuration: %s'),
  SIMULATOR_PKI: define('PIXPROXY_ERR_SIMULATOR_PKI', 'cannot prepare the simulator PKI in %s: %s'),
  SIMULATOR_STATE: define('PIXPROXY_ERR_SIMULATOR_STATE', 'cannot load the simulator state from %s: %s'),

  // LOAD testing (pix-proxy load; tools/load/)
  LOAD_PREPARE_FAILED: define('PIXPROXY_ERR_LOAD_PREPARE_FAILED', 'the load test cannot start: preparation made nothing for %s (%s)'),

  // AWS (Firehose audit sink, configuration from SSM and Secrets Manager, the local AWS endpoint; src/aws/)
  AWS_FIREHOSE_PUT: define('PIXPROXY_ERR_AWS_FIREHOSE_PUT', 'Firehose PutRecordBatch to %s failed: %s', 503),
  AWS_FIREHOSE_ROW_TOO_LARGE: define('PIXPROXY_ERR_AWS_FIREHOSE_ROW_TOO_LARGE', 'audit row %s is %s bytes as a Firehose record; the limit is %s', 500),
  AWS_FIREHOSE_SINK_CLOSED: define('PIXPROXY_ERR_AWS_FIREHOSE_SINK_CLOSED', 'the Firehose audit sink is closed', 503),
  AWS_SSM_PATH_INVALID: define('PIXPROXY_ERR_AWS_SSM_PATH_INVALID', 'invalid SSM parameter path %s: %s'),
  AWS_SSM_READ: define('PIXPROXY_ERR_AWS_SSM_READ', 'cannot read SSM parameters under %s: %s', 503),
  AWS_SSM_UNKNOWN_PARAMETER: define('PIXPROXY_ERR_AWS_SSM_UNKNOWN_PARAMETER', 'SSM parameters under %s are not pix-proxy settings: %s'),
  AWS_SECRET_NOT_FOUND: define('PIXPROXY_ERR_AWS_SECRET_NOT_FOUND', 'Secrets Manager has no secret %s', 503),
  AWS_SECRET_READ: define('PIXPROXY_ERR_AWS_SECRET_READ', 'cannot read secret %s from Secrets Manager: %s', 503),
  AWS_SECRET_UNUSABLE: define('PIXPROXY_ERR_AWS_SECRET_UNUSABLE', 'secret %s cannot be used: %s', 503),
  AWS_S3_READ: define('PIXPROXY_ERR_AWS_S3_READ', 'cannot read the %s from S3 (%s): %s', 503),
  AWS_LOCAL_ENDPOINT: define('PIXPROXY_ERR_AWS_LOCAL_ENDPOINT', 'local AWS endpoint: %s'),

  // Local audit store (Parquet through DuckDB, `pix-proxy audit query`; src/audit/parquet.ts, tools/audit/query.ts)
  AUDIT_STORE_OPEN: define('PIXPROXY_ERR_AUDIT_STORE_OPEN', 'cannot open the audit store at %s: %s', 503),
  AUDIT_PARQUET_WRITE: define('PIXPROXY_ERR_AUDIT_PARQUET_WRITE', 'cannot write audit rows as Parquet under %s: %s', 503),
  AUDIT_PARQUET_SINK_CLOSED: define('PIXPROXY_ERR_AUDIT_PARQUET_SINK_CLOSED', 'the Parquet audit sink is closed', 503),
  AUDIT_QUERY_REFUSED: define('PIXPROXY_ERR_AUDIT_QUERY_REFUSED', 'audit query refused: %s', 400),
  AUDIT_QUERY_FAILED: define('PIXPROXY_ERR_AUDIT_QUERY_FAILED', 'audit query failed: %s', 400),

  // AUDIT spool and shipping (the write-ahead spool and the pipeline to a sink; src/audit/spool.ts, pipeline.ts)
  AUDIT_SPOOL_FULL: define('PIXPROXY_ERR_AUDIT_SPOOL_FULL', 'the audit spool holds %s bytes and its bound is %s: the request was not sent, because it could not be audited', 503),
  AUDIT_SPOOL_CLOSED: define('PIXPROXY_ERR_AUDIT_SPOOL_CLOSED', 'the audit spool is closed', 503),
  AUDIT_SPOOL_IO: define('PIXPROXY_ERR_AUDIT_SPOOL_IO', 'audit spool I/O failed (%s): %s', 503),
  AUDIT_SPOOL_LOCKED: define('PIXPROXY_ERR_AUDIT_SPOOL_LOCKED', 'the audit spool %s is in use by process %s', 503),
  AUDIT_SPOOL_CORRUPT: define('PIXPROXY_ERR_AUDIT_SPOOL_CORRUPT', 'audit spool segment %s has %s unreadable bytes before its end; records there are lost and the file is kept as %s'),
  AUDIT_ROW_INVALID: define('PIXPROXY_ERR_AUDIT_ROW_INVALID', 'invalid audit row %s: %s'),
  AUDIT_UNKNOWN_TRANSACTION: define('PIXPROXY_ERR_AUDIT_UNKNOWN_TRANSACTION', 'audit transaction %s is not open (never begun, or already ended)'),
  AUDIT_ROW_TOO_LARGE: define('PIXPROXY_ERR_AUDIT_ROW_TOO_LARGE', 'audit row %s is %s bytes with its bodies compressed and sink %s takes at most %s: the row is parked in the spool'),
  AUDIT_SINK_FAILED: define('PIXPROXY_ERR_AUDIT_SINK_FAILED', 'audit sink %s accepted none of %s rows: %s', 503),
  AUDIT_WORKER_FAILED: define('PIXPROXY_ERR_AUDIT_WORKER_FAILED', 'the audit worker thread stopped (%s): requests are refused until the proxy restarts, and what was durable stays in the spool', 503),
  AUDIT_WORKER_UNRESPONSIVE: define('PIXPROXY_ERR_AUDIT_WORKER_UNRESPONSIVE', 'the audit worker thread did not answer within %s ms (stuck writing to the spool?)', 503),
  AUDIT_INCOMPLETE: define('PIXPROXY_ERR_AUDIT_INCOMPLETE', 'the process stopped before the outcome of transaction %s was known'),

  // The inbound mTLS gateway (pix-proxy gateway, src/gateway/; answered to Open Finance clients as problem+json).
  // Outcome classes read as for a core: not-sent = the backend never saw the request.
  GATEWAY_TRUSTSTORE_INVALID: define('PIXPROXY_ERR_GATEWAY_TRUSTSTORE_INVALID', 'the truststore %s cannot be used: %s'),
  GATEWAY_SOURCE_INVALID: define('PIXPROXY_ERR_GATEWAY_SOURCE_INVALID', 'the %s location cannot be used: %s'),
  GATEWAY_CRL_INVALID: define('PIXPROXY_ERR_GATEWAY_CRL_INVALID', 'the CRL %s cannot be used: %s'),
  GATEWAY_CLIENT_REFUSED: define('PIXPROXY_ERR_GATEWAY_CLIENT_REFUSED', 'the client certificate was refused: %s', 403),
  GATEWAY_ROUTE_NOT_ALLOWED: define('PIXPROXY_ERR_GATEWAY_ROUTE_NOT_ALLOWED', '%s %s is not a route this gateway forwards', 404),
  GATEWAY_METHOD_NOT_ALLOWED: define('PIXPROXY_ERR_GATEWAY_METHOD_NOT_ALLOWED', '%s is not allowed on %s', 405),
  GATEWAY_BODY_TOO_LARGE: define('PIXPROXY_ERR_GATEWAY_BODY_TOO_LARGE', 'the request body exceeds %s bytes', 413),
  GATEWAY_BAD_REQUEST: define('PIXPROXY_ERR_GATEWAY_BAD_REQUEST', 'the request cannot be forwarded: %s', 400),
  GATEWAY_BACKEND_UNREACHABLE: define('PIXPROXY_ERR_GATEWAY_BACKEND_UNREACHABLE', 'no connection to the backend could be made (%s): the request was not sent', 502),
  GATEWAY_BACKEND_TIMEOUT: define('PIXPROXY_ERR_GATEWAY_BACKEND_TIMEOUT', 'the backend did not answer in time (%s): the request may have been acted on', 504, 'unknown'),
  GATEWAY_BACKEND_FAILED: define('PIXPROXY_ERR_GATEWAY_BACKEND_FAILED', 'the backend connection failed after the request was sent (%s): the request may have been acted on', 502, 'unknown'),
  GATEWAY_SHUTTING_DOWN: define('PIXPROXY_ERR_GATEWAY_SHUTTING_DOWN', 'the gateway is shutting down: the request was not sent', 503)
})

const BY_CODE = new Map<string, ErrorSpec>(Object.values(Errors).map((e) => [e.code, e]))

/** The catalogue entry of a code, if it is one. */
export function errorSpec (code: string): ErrorSpec | undefined {
  return BY_CODE.get(code)
}
