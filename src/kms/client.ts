/**
 * The KMS client, apart from src/aws/clients.ts so that the SDK's KMS module loads only when the signing key is in
 * KMS (plugins/crypto.ts imports this module and the signer dynamically): no cost when KMS is not used.
 */
import { KMSClient } from '@aws-sdk/client-kms'
import { config } from '../aws/config.ts'
import type { AwsClientOptions } from '../aws/config.ts'

/**
 * The client behind the KMS signer (kms/signer.ts), on the request path: every message BACEN receives is signed
 * through it. Two attempts by default (the SDK retries a throttle or a 5xx once, with its jittered backoff); the proxy
 * passes `maxAttempts: 1`, because its guard (kms/guard.ts) retries throttles itself, under its rate limit and the
 * sign's deadline. Short timeouts: a Sign inside the region takes milliseconds, and a caller waiting on a stalled
 * KMS is better told NOT SENT quickly than held until its own timeout. Nothing has left for BACEN while KMS is called,
 * so any failure is retry-safe. {@link KMS_SOCKETS} sockets, of which the guard fills at most
 * {@link KMS_SIGNS_IN_FLIGHT}: a call beyond the sockets would wait in the agent, where the connect timeout already
 * runs.
 */
export function createKmsClient (o: AwsClientOptions = {}): KMSClient {
  return new KMSClient(config({ maxSockets: KMS_SOCKETS, ...o }, { connectTimeoutMs: 1_000, requestTimeoutMs: 2_000, maxAttempts: 2 }))
}

/**
 * Keep-alive sockets of the KMS client. At 150 signs/s a KMS slowed to 300 ms keeps about 45 calls in flight; 63
 * carry 150 signs/s up to 420 ms a Sign, beyond which signs wait in the guard (and are refused with
 * KMS_CONNECTIONS_BUSY, NOT SENT, once they have waited PIXPROXY_KMS_QUEUE_TIMEOUT_MS).
 */
export const KMS_SOCKETS = 64

/**
 * Sign calls the guard (kms/guard.ts) lets in flight at once: one socket fewer than the client has. A call that found
 * every socket busy would wait for one inside the Node agent, and the SDK counts that wait against its connect timeout
 * (it arms the timer when the request is created and clears it when the request gets a socket), so a KMS that is only
 * slow would fail as unreachable and open the circuit breaker (test/kms/sockets.test.ts). The spare socket is the
 * readiness probe's (kms/signer.ts `check`: one Sign at a time, outside the guard).
 */
export const KMS_SIGNS_IN_FLIGHT = KMS_SOCKETS - 1
