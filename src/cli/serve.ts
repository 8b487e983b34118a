/**
 * `pix-proxy serve`: the proxy (src/server.ts), configured from PIXPROXY_* environment variables (and the SSM
 * parameters under PIXPROXY_CONFIG_SSM_PATH), running until SIGTERM/SIGINT; SIGHUP reloads the mTLS certificate.
 */
import type { CliIo } from './io.ts'
import { usageError } from './io.ts'

export const SERVE_USAGE = `usage: [PIXPROXY_…=… …] pix-proxy serve
  run the proxy until SIGTERM or SIGINT (in-flight requests drain); kill -HUP reloads the mTLS certificate
  every setting is an environment variable (docs/configuration.md; each also an SSM parameter under
  $PIXPROXY_CONFIG_SSM_PATH); with keys in an HSM at least:
    PIXPROXY_ISPB, PIXPROXY_DICT_URL, PIXPROXY_SPI_URL, PIXPROXY_TLS_CA_FILE, PIXPROXY_BACEN_SIGNING_CERTS_FILE,
    PIXPROXY_HSM_MODULE_PATH, PIXPROXY_HSM_TOKEN_LABEL, PIXPROXY_HSM_PIN_FILE (or PIXPROXY_HSM_PIN_SECRET_ID),
    PIXPROXY_SIGNING_KEY_LABEL, PIXPROXY_SIGNING_CERT_FILE, PIXPROXY_TLS_KEY_LABEL, PIXPROXY_TLS_CERT_FILE
  with the signing key in AWS KMS and the mTLS key in Secrets Manager instead of the HSM settings:
    PIXPROXY_SIGNING_KMS_KEY_ID, PIXPROXY_TLS_KEY_SECRET_ID (kill -HUP also re-reads that secret)
  listens on PIXPROXY_LISTEN_HOST:PIXPROXY_LISTEN_PORT (default 127.0.0.1:8080; README: a serve against the demo)
  exit 78 when the configuration is invalid (every problem listed), 1 when start-up fails`

/** Runs until the process is signalled (src/server.ts exits it); never resolves. */
export async function serveCommand (argv: string[], _io: CliIo): Promise<number> {
  if (argv.length > 0) throw usageError(`serve takes no arguments (${argv.join(' ')}): its settings are PIXPROXY_* environment variables\n${SERVE_USAGE}`)
  await (await import('../server.ts')).main()
  return await new Promise<number>(() => {})
}
