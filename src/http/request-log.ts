/**
 * The access log: one line per request, at info, when it completes ("request completed", with the request's method
 * and URL, the status and the response time), where Fastify writes two ("incoming request" as it arrives, then
 * "request completed"). Every other line Fastify writes (errors, a stream cut, a closing server) is unchanged.
 *
 * Why one: at info, production's level, the two lines were the two largest pino writes of a request; the arrival
 * line says nothing the completion line does not, except for a request that never completes, and the request
 * timeout (app.ts) ends those with a line of their own. Measured in bench/RESULTS.md (issue 15).
 */
import { LogController } from 'fastify'
import type { FastifyReply, FastifyRequest } from 'fastify'

export class OneLineRequestLog extends LogController {
  override incomingRequest (): void {}

  // Fastify's own lines, with the request added: without the arrival line, they are where method and URL are read.
  override requestCompleted (error: Error | null | undefined, request: FastifyRequest, reply: FastifyReply): void {
    if (error) reply.log.error({ req: request, res: reply, err: error, responseTime: reply.elapsedTime }, 'request errored')
    else reply.log.info({ req: request, res: reply, responseTime: reply.elapsedTime }, 'request completed')
  }
}
