/**
 * ICOM's limits for the app (icom/icom.ts): one ICOM per process, its queues on the SPI gauges.
 */
import fp from 'fastify-plugin'
import type { FastifyInstance } from 'fastify'
import { Icom } from '../icom/icom.ts'

declare module 'fastify' {
  interface FastifyInstance {
    icom: Icom
  }
}

export default fp(async function icomPlugin (app: FastifyInstance) {
  const { config, metrics } = app
  app.decorate('icom', new Icom({
    ispb: config.ispb,
    maxInFlight: config.spi.maxInFlight,
    queueMax: config.spi.queueMax,
    queueTimeoutMs: config.spi.queueTimeoutMs,
    coalesceMaxParts: config.spi.coalesceMaxParts,
    maxBodyBytes: config.maxBodyBytes,
    forwarding: app.forwarding,
    gauges: {
      posts: (inFlight, queued) => {
        metrics.spiInFlight.set(inFlight)
        metrics.spiQueued.set(queued)
      },
      readers: (inFlight, queued) => {
        metrics.spiReadersInFlight.set(inFlight)
        metrics.spiReadersQueued.set(queued)
      },
      postParts: (parts) => { metrics.spiPostParts.observe(parts) }
    }
  }))
}, { name: 'pix-icom', fastify: '5.x', dependencies: ['pix-metrics', 'pix-forwarding'] })
