/** Mutual TLS to BACEN with the client key in the HSM: the key agent and the per-origin upstream pools. */
export { TlsKeyAgent } from './agent.ts'
export type { TlsClientIdentity, TlsKeySource } from './agent.ts'
export { Upstream } from './upstream.ts'
export type { UpstreamOptions, UpstreamRequest, UpstreamStats } from './upstream.ts'
