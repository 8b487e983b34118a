/**
 * RFC 9457 problem documents: every error a caller (or an operations client) sees is one, typed by a stable code
 * that docs/errors.md describes.
 */
import type { FastifyReply, FastifyRequest } from 'fastify'
import { errorSpec } from '../../core/errors.ts'
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
 * BACEN ever invites a retry.
 */
export function sendProblem (reply: FastifyReply, req: FastifyRequest, status: number, code: string, detail: string, extensions: { outcome?: Outcome } = {}): FastifyReply {
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
  if (status === 503 && outcome === 'not-sent') reply.header('retry-after', '1')
  else reply.removeHeader('retry-after')
  return reply.code(status).type('application/problem+json').send(problem)
}
