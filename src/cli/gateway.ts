/**
 * `pix-proxy gateway`: the inbound mutual-TLS gateway for Open Finance Brasil (src/gateway/server.ts), configured
 * from PIXGW_* environment variables, running until SIGTERM/SIGINT; SIGHUP reloads certificates, truststore and CRLs.
 */
import type { CliIo } from './io.ts'
import { usageError } from './io.ts'

export const GATEWAY_USAGE = `usage: [PIXGW_…=… …] pix-proxy gateway
  run the inbound mutual-TLS gateway for Open Finance Brasil until SIGTERM or SIGINT; kill -HUP reloads the server
  certificate, the truststore and the CRLs (docs/gateway.md); at least:
    PIXGW_SERVER_CERT_FILE, PIXGW_SERVER_KEY_LABEL (with PIXPROXY_HSM_MODULE_PATH, PIXPROXY_HSM_TOKEN_LABEL,
    PIXPROXY_HSM_PIN_FILE) or PIXGW_SERVER_KEY_FILE, PIXGW_TRUSTSTORE, PIXGW_CRLS, PIXGW_BACKEND_URL, PIXGW_ROUTES
  listens on PIXGW_LISTEN_HOST:PIXGW_LISTEN_PORT (default 127.0.0.1:8443), operations on PIXGW_OPS_LISTEN_PORT (8081)
  exit 78 when the configuration is invalid (every problem listed), 1 when start-up fails`

/** Runs until the process is signalled (src/gateway/server.ts exits it); never resolves. */
export async function gatewayCommand (argv: string[], _io: CliIo): Promise<number> {
  if (argv.length > 0) throw usageError(`gateway takes no arguments (${argv.join(' ')}): its settings are PIXGW_* environment variables\n${GATEWAY_USAGE}`)
  await (await import('../gateway/server.ts')).main()
  return await new Promise<number>(() => {})
}
