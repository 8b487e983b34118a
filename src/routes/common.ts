import type { FastifyRequest } from 'fastify'
import { Errors, PixProxyError } from '../errors.ts'

/**
 * The upstream path for a route: the template with each `:Param` replaced by the encoded value fastify decoded,
 * plus the caller's query string. Rebuilding (instead of forwarding req.url) means an encoded '/' or '..' inside a
 * parameter stays inside that path segment.
 */
export function upstreamPath (template: string, req: FastifyRequest): string {
  const params = req.params as Record<string, string>
  const path = template.replace(/:([A-Za-z]+)/g, (_m, name: string) => encodeURIComponent(params[name] ?? ''))
  const q = req.url.indexOf('?')
  return q < 0 ? path : path + req.url.slice(q)
}

/** The request body as XML bytes, or a clear 4xx. */
export function requireXmlBody (req: FastifyRequest): Buffer {
  const body = req.body
  if (!Buffer.isBuffer(body) || body.length === 0) {
    throw new PixProxyError(Errors.BODY_REQUIRED, [req.method, req.routeOptions.url ?? req.url])
  }
  return body
}
