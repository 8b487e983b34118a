/**
 * RFC 9457 problem documents: every error a caller (or an operations client) sees is one, typed by a stable code
 * that docs/errors.md describes.
 */
import type { FastifyReply, FastifyRequest } from 'fastify'

export interface Problem {
  type: string
  title: string
  status: number
  detail: string
  code: string
  instance: string
  [extension: string]: unknown
}

export function problemType (code: string): string {
  return `urn:pix-proxy:problem:${code}`
}

/** Sends the problem; a 503 carries Retry-After (another task, or this one shortly, will take the request). */
export function sendProblem (reply: FastifyReply, req: FastifyRequest, status: number, code: string, detail: string, extensions: object = {}): FastifyReply {
  const problem: Problem = {
    type: problemType(code),
    title: code.replace(/^PIXPROXY_ERR_/, '').toLowerCase().replace(/_/g, ' '),
    status,
    detail,
    code,
    instance: `urn:uuid:${req.id}`,
    ...extensions
  }
  if (status === 503) reply.header('retry-after', '1')
  return reply.code(status).type('application/problem+json').send(problem)
}
