/**
 * SDK v3 clients for the AWS services pix-proxy reads at start-up and on reload (SSM, Secrets Manager, S3), with
 * timeouts and retry counts chosen for how each is used (the SDK's defaults are no timeouts at all and three attempts).
 * The audit sink's Firehose client is in firehose-client.ts and KMS's in src/kms/client.ts (config.ts says why).
 *
 * Region, credentials and endpoint follow the SDK's own resolution when not given (on ECS: AWS_REGION and the
 * task role; locally `AWS_ENDPOINT_URL` or `AWS_ENDPOINT_URL_FIREHOSE` point every client at the local endpoint
 * without a pix-proxy setting). Passing them explicitly is for tests and tools.
 */
import { S3Client } from '@aws-sdk/client-s3'
import { SecretsManagerClient } from '@aws-sdk/client-secrets-manager'
import { SSMClient } from '@aws-sdk/client-ssm'
import { config } from './config.ts'
import type { AwsClientOptions } from './config.ts'

/**
 * For configuration at start-up, where nothing retries above: the SDK's standard retries (3 attempts with
 * backoff) absorb the throttling that many tasks starting together can meet (GetParametersByPath has a low
 * per-account rate), and short timeouts make a wrong endpoint or a missing VPC endpoint fail start-up quickly.
 */
export function createSsmClient (o: AwsClientOptions = {}): SSMClient {
  return new SSMClient(config(o, { connectTimeoutMs: 3_000, requestTimeoutMs: 5_000, maxAttempts: 3 }))
}

/** Same reasoning as `createSsmClient`: read once at start-up (and on PIN rotation), nothing retries above. */
export function createSecretsManagerClient (o: AwsClientOptions = {}): SecretsManagerClient {
  return new SecretsManagerClient(config(o, { connectTimeoutMs: 3_000, requestTimeoutMs: 5_000, maxAttempts: 3 }))
}

/**
 * For the gateway's truststore and CRL objects, read at start-up and at every reload: nothing retries above, so the
 * SDK's standard retries; 30 s for a whole GetObject because a CA's CRL can run to megabytes. `forcePathStyle`
 * (bucket in the path, not the host name) is for local S3 stand-ins, whose buckets have no DNS names; AWS itself
 * is addressed virtual-hosted style.
 */
export function createS3Client (o: AwsClientOptions & { readonly forcePathStyle?: boolean } = {}): S3Client {
  return new S3Client({ ...config(o, { connectTimeoutMs: 3_000, requestTimeoutMs: 30_000, maxAttempts: 3 }), forcePathStyle: o.forcePathStyle ?? false })
}
