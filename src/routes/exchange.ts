import type { FastifyReply, FastifyRequest } from 'fastify'
import type { Relayed } from '../forwarding/pipeline.ts'
import { Errors, PixProxyError } from '../../core/errors.ts'
import { checkPathParameter } from './params.ts'

/**
 * The upstream path for a route: the template with each `:Param` replaced by the encoded value fastify decoded,
 * plus the caller's query string. Rebuilding (instead of forwarding req.url) means an encoded '/' or '..' inside a
 * parameter stays inside that path segment. Each value is checked against its rule (src/routes/params.ts) here
 * too, not only in the route's onRequest hook: an empty value or a dot segment ('.', '..', which
 * encodeURIComponent leaves as they are) would name another resource upstream, so no path is built with one.
 */
export function upstreamPath (template: string, req: FastifyRequest): string {
  const params = req.params as Record<string, string | undefined>
  const path = template.replace(/:([A-Za-z]+)/g, (_m, name: string) => {
    const value = params[name]
    checkPathParameter(name, value)
    const encoded = encodeURIComponent(value as string)
    if (encoded === '.' || encoded === '..') throw new PixProxyError(Errors.PATH_PARAMETER_INVALID, [name, JSON.stringify(value), 'a value that is not a dot segment'])
    return encoded
  })
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

/** BACEN's answer to the caller, as the forwarding pipeline returned it (its headers carry the signature verdict). */
export function sendRelayed (reply: FastifyReply, r: Relayed): FastifyReply {
  return reply.code(r.status).headers(r.headers).send(r.body)
}
