/**
 * The HSM PIN of the gateway's server key from AWS Secrets Manager (PIXPROXY_HSM_PIN_SECRET_ID), as the proxy reads
 * its own (src/plugins/crypto.ts): the libp11 engine that loads the key inside Node's TLS takes the PIN only from a
 * file (`pin-source=file:`), so the secret's value is written to a private 0600 file (src/hsm/pin-file.ts) for the
 * life of the process, and the files of killed processes are swept first.
 */
import { rm } from 'node:fs/promises'
import type { SecretsManagerClient } from '@aws-sdk/client-secrets-manager'
import type { Logger } from 'pino'
import { createSecretsManagerClient } from '../aws/clients.ts'
import { fetchPin } from '../config-sources.ts'
import { createPinFile, sweepStalePinDirs } from '../hsm/pin-file.ts'
import type { GatewayConfig } from './config.ts'

export interface ResolvedPin {
  /** The configuration with the HSM key's pinFile set (unchanged when the PIN already was a file or the key a PEM). */
  readonly config: GatewayConfig
  /** Removes the temporary PIN file, if one was written. Idempotent. */
  remove (): Promise<void>
}

/**
 * Writes the PIN secret to a temporary file when the server key is in the HSM and its PIN is a secret.
 * `secrets` is for tests; by default a client from the SDK's usual sources (the task role, AWS_ENDPOINT_URL).
 * @throws PixProxyError AWS_SECRET_NOT_FOUND, AWS_SECRET_READ, AWS_SECRET_UNUSABLE (fetchPin).
 */
export async function resolveServerKeyPin (config: GatewayConfig, log: Logger, secrets?: SecretsManagerClient): Promise<ResolvedPin> {
  const key = config.serverKey
  if (key.kind !== 'hsm' || key.pinSecretId === null) return { config, remove: async () => {} }
  const client = secrets ?? createSecretsManagerClient()
  let pin: string
  try {
    pin = await fetchPin(key.pinSecretId, client)
  } finally {
    if (secrets === undefined) client.destroy()
  }
  const swept = await sweepStalePinDirs()
  if (swept.length > 0) log.warn({ removed: swept.length }, 'removed the HSM PIN files of processes that were killed')
  const created = await createPinFile(pin)
  let removed = false
  return {
    config: Object.freeze({ ...config, serverKey: { ...key, pinFile: created.file } }),
    remove: async () => {
      if (removed) return
      removed = true
      await rm(created.dir, { recursive: true, force: true })
    }
  }
}
