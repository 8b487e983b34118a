/**
 * What the local AWS endpoint (endpoint.ts) and its service handlers (firehose.ts, secrets-manager.ts, ssm.ts)
 * share: the AWS JSON 1.1 error a handler throws and the endpoint answers as `{ __type, message }`, and the shape of
 * a handler.
 */

export class AwsError extends Error {
  readonly errorType: string
  readonly status: number
  constructor (errorType: string, message: string, status = 400) {
    super(message)
    this.errorType = errorType
    this.status = status
  }
}

export const validation = (value: string, at: string, constraint: string): AwsError =>
  new AwsError('ValidationException', `1 validation error detected: Value ${value} at '${at}' failed to satisfy constraint: ${constraint}`)

export function defaultStatus (errorType: string): number {
  if (errorType === 'ServiceUnavailableException') return 503
  if (errorType === 'InternalFailure' || errorType === 'InternalServerError' || errorType === 'InternalServiceError') return 500
  return 400
}

/** One AWS service: the calls whose X-Amz-Target starts with `targetPrefix` + `.`, signed for `signingName`. */
export interface ServiceHandler {
  readonly targetPrefix: string
  readonly signingName: string
  /** Answers one call (the response body), or throws AwsError. */
  dispatch: (target: string, input: Record<string, unknown>) => unknown
}

export const unknownOperation = (target: string): AwsError =>
  new AwsError('UnknownOperationException', `the local endpoint does not implement ${target}`)
