/**
 * RFC 9457 problem documents: every error a caller (or an operations client) sees is one, typed by a stable code
 * that docs/errors.md describes.
 */
import type { FastifyError, FastifyInstance, FastifyReply, FastifyRequest } from 'fastify'
import { errorSpec, Errors, PixProxyError } from '../../core/errors.ts'
import type { Outcome } from '../../core/errors.ts'

export interface Problem {
  type: string
  title: string
  status: number
  detail: string
  code: string
  instance: string
  [extension: string]: unknown
}

function problemType (code: string): string {
  return `urn:pix-proxy:problem:${code}`
}

/**
 * Sends the problem with its outcome class (docs/outcomes.md) in the `outcome` member and the pix-proxy-outcome
 * header: the extensions' when the forwarding pipeline set one, else the code's. Only a 503 whose request was not
 * sent carries Retry-After (another task, or this one shortly, will take the request): nothing that may have reached
 * BACEN ever invites a retry. `retryAfterSeconds` (default 1) when the cause knows how long the refusal lasts (a KMS
 * circuit paused for its cool-down).
 */
export function sendProblem (reply: FastifyReply, req: FastifyRequest, status: number, code: string, detail: string, extensions: { outcome?: Outcome } = {}, retryAfterSeconds = 1): FastifyReply {
  const outcome: Outcome = extensions.outcome ?? errorSpec(code)?.outcome ?? 'unknown'
  const problem: Problem = {
    type: problemType(code),
    title: code.replace(/^PIXPROXY_ERR_/, '').toLowerCase().replace(/_/g, ' '),
    status,
    detail,
    code,
    instance: `urn:uuid:${req.id}`,
    ...extensions,
    outcome
  }
  reply.header('pix-proxy-outcome', outcome)
  if (status === 503 && outcome === 'not-sent') reply.header('retry-after', String(Math.max(1, Math.ceil(retryAfterSeconds))))
  else reply.removeHeader('retry-after')
  return reply.code(status).type('application/problem+json').send(problem)
}

/** Maps anything thrown by a route or by Fastify to a problem; 5xx internals never reach the caller. */
export function problemErrorHandler (this: FastifyInstance, err: FastifyError | PixProxyError | Error, req: FastifyRequest, reply: FastifyReply): FastifyReply {
  if (err instanceof PixProxyError) {
    this.metrics.errors.inc({ code: err.code })
    const level = err.statusCode >= 500 ? 'warn' : 'info'
    req.log[level]({ code: err.code, err: err.statusCode >= 500 ? err : undefined }, err.message)
    return sendProblem(reply, req, err.statusCode, err.code, err.message, { outcome: err.outcome, ...err.extensions }, err.retryAfterSeconds)
  }
  const fe = err as FastifyError
  const mapped = fe.code === 'FST_ERR_CTP_INVALID_MEDIA_TYPE'
    ? new PixProxyError(Errors.MEDIA_TYPE, [req.headers['content-type'] ?? '(none)', 'application/xml (or multipart/mixed on ICOM)'])
    : fe.code === 'FST_ERR_CTP_BODY_TOO_LARGE'
      ? new PixProxyError(Errors.BODY_TOO_LARGE, [this.config.maxBodyBytes])
      : fe.statusCode !== undefined && fe.statusCode >= 400 && fe.statusCode < 500
        ? new PixProxyError(Errors.BAD_REQUEST, [fe.message])
        : null
  if (mapped !== null) {
    this.metrics.errors.inc({ code: mapped.code })
    return sendProblem(reply, req, mapped.statusCode, mapped.code, mapped.message)
  }
  this.metrics.errors.inc({ code: Errors.INTERNAL.code })
  req.log.error({ err }, 'unhandled error')
  return sendProblem(reply, req, 500, Errors.INTERNAL.code, 'internal error; the request id identifies it in the logs')
}
