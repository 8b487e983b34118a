/**
 * The KMS client, apart from src/aws/clients.ts so that the SDK's KMS module loads only when the signing key is in
 * KMS (plugins/crypto.ts imports this module and the signer dynamically): no cost when KMS is not used.
 */
import { KMSClient } from '@aws-sdk/client-kms'
import { config } from '../aws/clients.ts'
import type { AwsClientOptions } from '../aws/clients.ts'

/**
 * The client behind the KMS signer (kms/signer.ts), on the request path: every message BACEN receives is signed
 * through it. Two attempts by default (the SDK retries a throttle or a 5xx once, with its jittered backoff); the proxy
 * passes `maxAttempts: 1`, because its guard (kms/guard.ts) retries throttles itself, under its rate limit and the
 * sign's deadline. Short timeouts: a Sign inside the region takes milliseconds, and a caller waiting on a stalled
 * KMS is better told NOT SENT quickly than held until its own timeout. Nothing has left for BACEN while KMS is called,
 * so any failure is retry-safe. 64 sockets: at 150 signs/s a KMS slowed to 300 ms keeps about 45 calls in flight,
 * and calls beyond the sockets would wait in the agent, out of the guard's sight.
 */
export function createKmsClient (o: AwsClientOptions = {}): KMSClient {
  return new KMSClient(config({ maxSockets: 64, ...o }, { connectTimeoutMs: 1_000, requestTimeoutMs: 2_000, maxAttempts: 2 }))
}
