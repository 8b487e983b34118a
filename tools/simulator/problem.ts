/**
 * RFC 7807 problems in XML, as DICT and ICOM send them (docs/bacen.md §1.5, §2.5): root
 * `<problem xmlns="urn:ietf:rfc:7807">`, `type` under the API's error base, Content-Type application/problem+xml.
 * DICT problems are signed by the caller of these builders (every DICT response is); ICOM problems are not SPI
 * messages and go unsigned.
 */
import { xmlDocument } from './xml.ts'
import type { XmlTree } from './xml.ts'

export const PROBLEM_CONTENT_TYPE = 'application/problem+xml'
const DICT_ERROR_BASE = 'https://dict.pi.rsfn.net.br/api/v2/error/'
const ICOM_ERROR_BASE = 'https://icom.pi.rsfn.net.br/api/v1/error/'

export interface Violation {
  readonly reason: string
  readonly value?: string
  readonly property?: string
}

/** A DICT business or protocol error. `type` is the last path segment of BACEN's error type URI. */
export class DictProblem extends Error {
  readonly type: string
  readonly status: number
  readonly title: string
  readonly detail: string | undefined
  readonly violations: readonly Violation[]
  readonly retryAfter: number | undefined

  constructor (type: string, status: number, title: string, detail?: string, violations: readonly Violation[] = [], retryAfter?: number) {
    super(`${type}: ${detail ?? title}`)
    this.name = 'DictProblem'
    this.type = type
    this.status = status
    this.title = title
    this.detail = detail
    this.violations = violations
    this.retryAfter = retryAfter
  }
}

/**
 * BACEN's DICT v2 error types with their status and the title wording of its published examples
 * (API-DICT 2.12.1 "Tratamento de erros"), so callers write `dictError('EntryInvalid', detail)`.
 */
const DICT_ERRORS: Readonly<Record<string, readonly [number, string]>> = {
  Forbidden: [403, 'Forbidden'],
  BadRequest: [400, 'Bad Request'],
  NotFound: [404, 'Not found'],
  ResourceConflict: [409, 'Conflict'],
  Gone: [410, 'Gone'],
  RateLimited: [429, 'Rate limited'],
  InternalServerError: [500, 'Internal Server Error'],
  ServiceUnavailable: [503, 'Service Unavailable'],
  RequestSignatureInvalid: [400, 'Request signature is invalid'],
  RequestIdAlreadyUsed: [400, 'RequestId already used'],
  InvalidReason: [400, 'Invalid reason'],
  ParticipantInvalid: [400, 'Participant is invalid'],
  EntryInvalid: [400, 'Entry is invalid'],
  EntryLimitExceeded: [400, 'Entry limit exceeded'],
  EntryAlreadyExists: [400, 'Entry already exists'],
  EntryCannotBeQueriedForBookTransfer: [400, 'Entry cannot be queried for book transfer'],
  EntryKeyOwnedByDifferentPerson: [400, 'Entry key owned by different person'],
  EntryKeyInCustodyOfDifferentParticipant: [400, 'Entry key in custody of different participant'],
  EntryLockedByClaim: [400, 'Entry locked by claim'],
  ClaimInvalid: [400, 'Claim is invalid'],
  ClaimTypeInconsistent: [400, 'Claim type inconsistent'],
  ClaimKeyNotFound: [404, 'Claim key not found'],
  ClaimAlreadyExistsForKey: [400, 'Claim already exists for key'],
  ClaimResultingEntryAlreadyExists: [400, 'Claim resulting entry already exists'],
  // BACEN's error table gives 400 for ClaimOperationInvalid (the claim operations also list 409, which is
  // ResourceConflict: "being processed by another operation").
  ClaimOperationInvalid: [400, 'Claim operation invalid'],
  ClaimResolutionPeriodNotEnded: [400, 'Claim resolution period not ended'],
  ClaimCompletionPeriodNotEnded: [400, 'Claim completion period not ended']
}

export function dictError (type: string, detail?: string, violations: readonly Violation[] = []): DictProblem {
  const [status, title] = DICT_ERRORS[type] ?? [400, type]
  return new DictProblem(type, status, title, detail, violations)
}

/** The unsigned problem document; the DICT layer signs it like any response. */
export function dictProblemXml (p: DictProblem, correlationId: string): string {
  const tree: XmlTree = [
    ['type', DICT_ERROR_BASE + p.type],
    ['title', p.title],
    ['status', p.status],
    ['detail', p.detail],
    ['correlationId', correlationId],
    ['violations', p.violations.length === 0
      ? undefined
      : p.violations.map((v) => ['violation', [['reason', v.reason], ['value', v.value], ['property', v.property]]] as const)]
  ]
  return xmlDocument('problem', tree, ' xmlns="urn:ietf:rfc:7807"')
}

export function icomProblemXml (type: string, status: number, title: string, detail?: string): string {
  return xmlDocument('problem', [
    ['type', ICOM_ERROR_BASE + type],
    ['title', title],
    ['status', status],
    ['detail', detail]
  ], ' xmlns="urn:ietf:rfc:7807"')
}
