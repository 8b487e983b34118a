/**
 * The load tool as a library (`pix-proxy load` is a thin layer over it). See docs/load-testing.md.
 *
 *   const target = await createProxyTransport({ url: 'http://127.0.0.1:8080', ispb: '99999004' })
 *   const counterparty = await createDirectTransport({ url, ispb: '99999010', xmlSigner, bacenTrust, tls })
 *   const report = await runLoad({ target, counterparty, model: { kind: 'open', ratePerSec: 50 }, durationMs: 10_000 })
 */
export { runLoad, formatReport, LIMITS } from './run.ts'
export type { LoadOptions, LoadReport, OpReport, LatencyMs } from './run.ts'
export { createProxyTransport, createDirectTransport, NOT_APPLICABLE, UNSIGNED } from './transport.ts'
export type { LoadTransport, LoadRequest, LoadResponse, SignatureVerdict, AnswerPart, ProxyTransportOptions, DirectTransportOptions, LoadProfile } from './transport.ts'
export { runEngine, WeightedPicker, errorCodeOf, ABANDON_AFTER_ABORT_MS } from './engine.ts'
export type { LoadModel, Outcome, EngineOptions, EngineResult, OpResult, SecondStats, Tick } from './engine.ts'
export { OPERATIONS, DEFAULT_MIX, NEEDS_COUNTERPARTY, parseMix, randomCpf, claimActionRequest } from './flows.ts'
export type { Operation, PrepareReport, SpiStats } from './flows.ts'
export { realClock, VirtualClock } from './clock.ts'
export type { Clock } from './clock.ts'
export { LatencyHistogram } from './histogram.ts'
export type { LatencySummary } from './histogram.ts'
export { renderHtmlReport } from './chart.ts'
export { assertLoopbackUrl, isLoopbackAddress, loopbackOnlyLookup } from './loopback.ts'
export type { ResolveAll } from './loopback.ts'
